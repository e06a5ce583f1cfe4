"""The tokenizer config the framework tests train: 16 px images, tiny widths."""

from omni_img.config import load_config

EXPERIMENT = "experiments/tokenizer_tiny.py"


def tiny_tokenizer_config(num_steps: int = 4, **overrides):
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    config = load_config(str(root / EXPERIMENT))
    config.model.image_size = 16
    config.model.widths = (8, 16)
    config.batch_size = 16
    config.num_steps = num_steps
    config.log_every = 1
    config.max_minutes = 0.0
    config.optim.warmup_steps = 2
    config.checkpoint.every_steps = 2
    config.checkpoint.keep = 10
    config.eval.num_examples = 16
    config.eval.batch_size = 16
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config
