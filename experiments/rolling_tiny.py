"""Rolling band-wise diffusion decoder, tiny (the CPU default): 64 px, 4 bands of 16 rows.

    omni-img train --config experiments/rolling_tiny.py --workdir runs/rolling_tiny \
        --config.data.tokenized_dir=runs/tokens --config.generator_workdir=runs/generator_tiny \
        --config.tokenizer_workdir=runs/tokenizer_tiny

Rectified flow; K = 8 Euler steps per band in both sampling modes; rolling mode keeps a
window of 2 bands in flight. The token grid size, codebook size and text width come from
the tokenized data and the generator. `conv_base`: the model refines a frozen copy of
the tokenizer's conv decoder (band-masked, see omni_img/models/rolling_decoder.py).
"""

from omni_img.config.defaults import rolling_defaults


def get_config(arg=None):
    config = rolling_defaults()
    config.batch_size = 32
    config.num_steps = 3000
    config.max_minutes = 10.0
    config.log_every = 20
    config.ema_decay = 0.995
    config.optim.lr = 1e-3
    config.optim.warmup_steps = 100
    config.checkpoint.every_steps = 500
    config.optim.frozen = ("params/base",)  # the conv base stays the tokenizer's decoder
    config.data.tokenized_dir = "runs/tokens"
    config.data.prepare = (
        "the tokens of experiments/generator_tiny.py's data (see its config.data.prepare)"
    )
    config.generator_workdir = "runs/generator_tiny"
    config.tokenizer_workdir = "runs/tokenizer_tiny"
    config.model.update(
        {
            "image_height": 64,
            "image_width": 64,
            "num_bands": 4,
            "steps_per_band": 8,
            "window": 2,
            "patch_size": 4,
            "dim": 128,
            "num_layers": 2,
            "num_heads": 4,
            "mlp_ratio": 4,
            "lookahead_rows": 1,
            "rolling_train_prob": 0.5,
            "conv_base": True,
        }
    )
    # PSNR of every decoder on num_examples validation images; the rFID of the conv and
    # rolling decoders on rfid_images (FID weights from `omni-img eval fetch-weights`).
    config.eval.update({"num_examples": 64, "batch_size": 32, "rfid_images": 1000})
    return config
