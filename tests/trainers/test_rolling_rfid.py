"""The decoders' rFID: FID with the real Inception weights against the ground truth."""

import numpy as np
import pytest

from omni_img.errors import UserError
from omni_img.evals.metrics import weights
from omni_img.trainers import rolling


def _images(seed: int, count: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


def test_rfid_is_zero_for_a_perfect_decoder_and_grows_with_its_errors():
    try:
        weights.fid_weights_path()
    except UserError:
        pytest.fail("FID weights are not fetched (omni-img eval fetch-weights; .ci/run does it)")
    truth = _images(0)
    noisy = np.clip(truth.astype(int) + _images(1).astype(int) // 4 - 32, 0, 255).astype(np.uint8)
    report = rolling.decoder_rfid(truth, {"conv": truth, "rolling": noisy})
    assert report["images"] == 8 and report["preprocessing"] == "stylegan3"
    assert abs(report["conv"]) < 1e-2
    assert report["rolling"] > 1.0


def test_rfid_without_weights_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv("OMNI_IMG_FID_WEIGHTS", str(tmp_path / "missing.pt"))
    report = rolling.decoder_rfid(_images(0), {"conv": _images(0)})
    assert "not found" in report["skipped"]
