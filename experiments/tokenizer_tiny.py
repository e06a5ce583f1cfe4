"""Tokenizer, tiny (the CPU default): 64 px omni_shapes images -> 16x16 tokens.

    omni-img train --config experiments/tokenizer_tiny.py --workdir runs/tokenizer_tiny

A 4 px token (16x16 grid at 64 px) keeps object shapes and letters: at 8 px per token
(8x8 grid) small objects lost their shape and words became illegible. FSQ with levels
(8, 5, 5, 5) gives 1,000 codes with no codebook to collapse. A high, constant learning
rate (the loss is still falling fast when the budget ends), width 48 above the token
grid and a nonlinearity between the decoder's upsampling layers: see docs/models.md for
what each choice moved. `get_config("vq")` selects the l2-normalised VQ quantizer.
"""

from omni_img.config.defaults import tokenizer_defaults


def get_config(arg=None):
    config = tokenizer_defaults()
    config.batch_size = 32
    config.num_steps = 2000
    config.max_minutes = 9.0  # a safety cap on a loaded machine
    config.log_every = 20
    config.eval_every = 0
    config.ema_decay = 0.99
    config.optim.lr = 1.2e-2
    config.optim.warmup_steps = 100
    config.optim.min_lr_ratio = 1.0  # no decay: every step still learns
    config.checkpoint.every_steps = 500

    config.model.update(
        {
            "image_size": 64,
            "patch_size": 4,
            "widths": (48, 64),
            "num_res_blocks": 2,
            "high_res_blocks": 0,
            "upsample_activation": True,
            "quantizer": "vq" if arg == "vq" else "fsq",
            "fsq_levels": (8, 5, 5, 5),
            "codebook_size": 1024,
            "code_dim": 8,
            "commitment": 0.25,
            "entropy_weight": 0.1,
            "entropy_temperature": 0.01,
        }
    )
    # adversarial > 0 adds a PatchGAN discriminator (hinge loss) with that weight.
    config.loss.update({"l1": 1.0, "l2": 1.0, "adversarial": 0.0})
    # The judge and PSNR on num_examples; codebook usage on usage_examples (0: all).
    config.eval.update({"num_examples": 1000, "usage_examples": 0, "batch_size": 64})
    return config
