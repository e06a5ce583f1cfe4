"""The tiny configs the trainer tests train: the tokenizer (16 px images, tiny widths)
and the generator (on a tokenized split such as tests/support/tokenized.py writes)."""

import pathlib

from omni_img.config import load_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
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


def tiny_generator_config(tokens, num_steps, **mesh):
    overrides = [
        f"--config.data.tokenized_dir={tokens}",
        f"--config.num_steps={num_steps}",
        "--config.batch_size=16",
        "--config.log_every=1",
        "--config.eval_every=0",
        "--config.checkpoint.every_steps=2",
        "--config.eval.num_examples=16",
        # The final test-split judge, the chained episodes and the learning curve sample
        # omni_shapes records at the dataset's size; the 16 px stand-in tokenizers cannot
        # encode those (test_eval_bundle.py judges a 16 px split; the curve and episodes
        # have tests of their own).
        "--config.eval.judge_per_task=0",
        "--config.eval.episodes=0",
        "--config.eval.curve_every_minutes=0",
        "--config.model.dim=32",
        "--config.model.mlp_dim=64",
        "--config.model.num_heads=2",
        "--config.model.enc_layers=1",
        "--config.model.dec_layers=1",
        "--config.model.max_text_len=64",  # word-aligned ids: the captions take 33-57
        "--config.model.max_history_len=32",  # "add a square" + SEP: 25 ids aligned
        "--config.optim.warmup_steps=1",
        *[f"--config.mesh.{axis}={size}" for axis, size in mesh.items()],
    ]
    return load_config(str(ROOT / "experiments/generator_tiny.py"), overrides)
