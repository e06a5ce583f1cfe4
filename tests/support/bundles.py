"""One tiny trained run (tokenizer, generator, rolling decoder; 1 step each) for
tests/export and tests/serve, in the layout the main job writes: RUN/tokenizer,
RUN/generator, RUN/rolling.

Built once per test session by the fixtures in tests/conftest.py (trained_run,
bundle_dir, bundle), which both directories share: training three stages costs most of
these tests' time.
"""

import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROMPT = "a red circle on the left"


class FakeImages:
    """A dataset split of 16x16 images matching the tokenized fixture's records."""

    def __len__(self):
        return 48

    def __getitem__(self, index):
        rng = np.random.default_rng(index)
        return {"image": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)}


def train_tiny_run(run: pathlib.Path) -> pathlib.Path:
    """Train the three stages for one step each into RUN/{tokenizer,generator,rolling}."""
    from omni_img.config import load_config
    from omni_img.trainers import generator, rolling, tokenizer
    from tests.support.synthetic import SyntheticSource
    from tests.support.tiny_configs import tiny_generator_config, tiny_tokenizer_config
    from tests.support.tokenized import write_tokenized

    run.mkdir(parents=True, exist_ok=True)
    tokens = write_tokenized(run / "tokens", count=48, grid=(4, 4), num_codes=1000)
    gen_config = tiny_generator_config(tokens, 1)
    # Room for the omni_shapes test captions the bundle evaluation reads (word-aligned ids).
    gen_config.model.max_text_len = 128
    config = load_config(str(ROOT / "experiments/rolling_tiny.py"), [
        f"--config.data.tokenized_dir={tokens}",
        f"--config.generator_workdir={run / 'generator'}",
        f"--config.tokenizer_workdir={run / 'tokenizer'}",
        "--config.num_steps=1", "--config.batch_size=8", "--config.log_every=1",
        "--config.model.image_height=16", "--config.model.image_width=16",
        "--config.model.dim=32", "--config.model.num_heads=2", "--config.model.num_layers=1",
        "--config.model.steps_per_band=2",
    ])  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        # The stages' evaluations are tested in tests/trainers; here they would only cost
        # compile time.
        patch.setattr(tokenizer, "evaluate", lambda *args, **kwargs: {})
        patch.setattr(generator, "validation_metrics", lambda *args, **kwargs: {})
        patch.setattr(rolling, "evaluate", lambda *args, **kwargs: {})
        patch.setattr(rolling, "open_split", lambda data, split: FakeImages())
        tokenizer.train(tiny_tokenizer_config(1), str(run / "tokenizer"),
                        train_source=SyntheticSource(), eval_source=SyntheticSource(4))  # fmt: skip
        generator.train(gen_config, str(run / "generator"))
        rolling.train(config, str(run / "rolling"))
    return run
