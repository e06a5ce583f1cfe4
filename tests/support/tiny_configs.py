"""The tiny configs the trainer tests train: the tokenizer (16 px images, tiny widths)
and the generator (on a tokenized split such as tests/support/tokenized.py writes)."""

import dataclasses
import pathlib

from omni_img.config import load_config
from omni_img.models import generator as g

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


def small_generator(**overrides) -> g.GeneratorConfig:
    """CPU default: ~1.6M params, 8×8 tokens (the FACTS.md calibration size class)."""
    return dataclasses.replace(g.GeneratorConfig(), **overrides)


def t2i_256_generator(**overrides) -> g.GeneratorConfig:
    """~300M-param decoder over 16×16 tokens (LlamaGen-B/L class), text-to-image.

    Decoder: 16 layers, width 1024, 16 heads, SwiGLU 2816 (self + cross-attention):
    ~302M params with its 16384-entry embedding and head; encoder: 6 layers, ~78M.
    bf16 compute, remat on. Never run on CPU; checked with ``jax.eval_shape`` in tests.
    """
    base = g.GeneratorConfig(
        image_vocab_size=16384,
        grid_h=16,
        grid_w=16,
        max_text_len=128,
        max_history_len=0,
        use_source=False,
        dim=1024,
        num_heads=16,
        enc_layers=6,
        dec_layers=16,
        mlp_dim=2816,
        dtype="bfloat16",
        remat=True,
    )
    return dataclasses.replace(base, **overrides)
