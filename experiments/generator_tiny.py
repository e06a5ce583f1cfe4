"""Generator, tiny (the CPU default): prompt (+ source tokens, history) -> 16x16 tokens.

    omni-img train --config experiments/generator_tiny.py --workdir runs/generator_tiny \
        --config.data.tokenized_dir=runs/tokens

Needs the token grids of a trained tokenizer:
    omni-img tokenize --tokenizer runs/tokenizer_tiny --out runs/tokens
"""

import ml_collections

from omni_img.config.defaults import training_defaults


def get_config(arg=None):
    config = training_defaults()
    config.stage = "generator"
    config.batch_size = 32
    config.num_steps = 6000
    config.max_minutes = 60.0
    config.log_every = 20
    config.eval_every = 1000
    config.ema_decay = 0.999
    config.optim.lr = 1e-3
    config.optim.warmup_steps = 200
    config.optim.weight_decay = 0.01
    config.checkpoint.every_steps = 500
    config.caption_dropout = 0.1
    config.text_tokenizer = "bytes"

    config.data.tokenized_dir = "runs/tokens"
    config.data.task_weights = ml_collections.ConfigDict(
        {"compose": 0.5, "write": 0.25, "edit": 0.25}
    )
    # grid_h / grid_w / image_vocab_size come from the tokenized data's metadata.
    config.model = ml_collections.ConfigDict(
        {
            "text_vocab_size": 264,
            "max_text_len": 224,  # the longest omni_shapes caption is 210 bytes
            "max_history_len": 128,  # older turns are dropped first
            "use_source": True,
            "dim": 128,
            "num_heads": 4,
            "enc_layers": 2,
            "dec_layers": 4,
            "mlp_dim": 384,
            "mlp_kind": "swiglu",
            "rope": True,
        }
    )
    config.sampling = ml_collections.ConfigDict(
        {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "cfg_scale": 1.0}
    )
    config.eval = ml_collections.ConfigDict({"num_examples": 256, "batch_size": 64})
    return config
