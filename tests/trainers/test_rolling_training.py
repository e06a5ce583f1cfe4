"""The rolling-decoder trainer, end to end on tiny stand-ins of the earlier stages."""

import pathlib

import jax
import numpy as np
import pytest

from omni_img.config import load_config
from omni_img.stages import rolling as rolling_stage
from omni_img.stages import tokenizer as tokenizer_stage
from omni_img.trainers import generator, rolling, tokenizer
from tests.support.tiny_configs import tiny_generator_config

ROOT = pathlib.Path(__file__).resolve().parents[2]


class FakeImages:
    """A dataset split of 16x16 images matching the tokenized fixture's records."""

    def __init__(self, count=96):
        self.count = count

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        rng = np.random.default_rng(index)
        return {"image": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)}


def fake_decoder_rfid(calls):
    """A stand-in for rolling.decoder_rfid that records what the trainer passed it: the
    Inception network costs a minute on CPU, and test_rolling_rfid.py checks the real one."""

    def decoder_rfid(truth, decoded):
        calls.append((truth, decoded))
        return {"images": len(truth), **{name: 0.0 for name in decoded}}

    return decoder_rfid


# The real rFID inside the trainer is the slow case; the default one checks its wiring.
@pytest.mark.parametrize("real_rfid", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_rolling_trains_and_reports_psnr(tmp_path, monkeypatch, real_rfid):
    from tests.support.synthetic import SyntheticSource
    from tests.support.tiny_configs import tiny_tokenizer_config
    from tests.support.tokenized import write_tokenized

    # A tokenizer whose grid (4x4 at 16 px, 1000 FSQ codes) matches the tokenized fixture.
    tokenizer.train(tiny_tokenizer_config(1), str(tmp_path / "tok"),
                    train_source=SyntheticSource(), eval_source=SyntheticSource(16))
    tokens = write_tokenized(
        tmp_path / "tokens", grid=(4, 4), num_codes=1000, tokenizer_workdir=tmp_path / "tok"
    )
    generator_config = tiny_generator_config(tokens, 1)
    generator_config.eval_every = 1  # an evaluation hook inside the training mesh, too
    generator.train(generator_config, str(tmp_path / "gen"))
    # The generator decoded samples of validation prompts with that tokenizer, at the
    # step-1 evaluation and at the final one (same step: one file, named by the step).
    grids = sorted(p.name for p in (tmp_path / "gen").glob("samples_*.png"))
    assert grids == ["samples_000001.png"]
    monkeypatch.setattr(rolling, "open_split", lambda data, split: FakeImages())
    rfid_calls = []
    if not real_rfid:
        monkeypatch.setattr(rolling, "decoder_rfid", fake_decoder_rfid(rfid_calls))

    config = load_config(str(ROOT / "experiments/rolling_tiny.py"), [
        f"--config.data.tokenized_dir={tokens}",
        f"--config.generator_workdir={tmp_path / 'gen'}",
        f"--config.tokenizer_workdir={tmp_path / 'tok'}",
        "--config.num_steps=2", "--config.batch_size=8", "--config.log_every=1",
        "--config.model.image_height=16", "--config.model.image_width=16",
        "--config.model.dim=32", "--config.model.num_heads=2", "--config.model.num_layers=1",
        "--config.model.steps_per_band=2", "--config.eval.num_examples=4",
        "--config.eval.batch_size=4", "--config.eval.rfid_images=8",
    ])
    report = rolling.train(config, str(tmp_path / "rolling"))
    for name in ("psnr_conv", "psnr_sequential", "psnr_rolling"):
        assert np.isfinite(report[name]) and report[name] > 0
    assert report["rfid"]["images"] == 8, report["rfid"]  # skipped: the weights are missing
    assert np.isfinite(report["rfid"]["conv"]) and np.isfinite(report["rfid"]["rolling"])
    if not real_rfid:  # the ground truth and both decoders' images, 8 each, as uint8
        [(truth, decoded)] = rfid_calls
        assert sorted(decoded) == ["conv", "rolling"]
        for images in (truth, *decoded.values()):
            assert images.shape == (8, 16, 16, 3) and images.dtype == np.uint8
        assert not np.array_equal(decoded["rolling"], truth)  # decoded, not the truth copied
    assert pathlib.Path(report["grid"]).is_file()
    _, cfg, params = rolling_stage.load_workdir(str(tmp_path / "rolling"))
    assert cfg.token_rows == 4 and cfg.codebook_size == 1000
    # The conv base is the tokenizer's decoder, and training left it untouched.
    _, _, tokenizer_params = tokenizer_stage.load_workdir(str(tmp_path / "tok"))
    base = params["params"]["base"]["decoder"]
    for got, want in zip(jax.tree.leaves(base), jax.tree.leaves(tokenizer_params["decoder"])):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)
