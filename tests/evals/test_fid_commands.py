"""`omni-img eval` subcommands on small folders (random Inception weights, no download)."""

import argparse
import json

import numpy as np
import pytest
from PIL import Image

from omni_img.errors import UserError
from omni_img.evals import commands
from omni_img.evals.metrics import fid, inception, weights


@pytest.fixture(autouse=True)
def random_inception(monkeypatch):
    params = inception.random_params(0)
    monkeypatch.setattr(weights, "load_fid_params", lambda path=None, verify=True: params)


def _folder(path, seed, count=6, size=40):
    path.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(count):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(image).save(path / f"{i:02d}.png")
        (path / f"{i:02d}.txt").write_text(f"caption {i}")
    return path


def _run(*argv):
    parser = argparse.ArgumentParser()
    commands.add_arguments(parser)
    return commands.main(parser.parse_args(list(argv)))


def test_fid_stats_then_fid(tmp_path, capsys):
    a, b = _folder(tmp_path / "a", 0), _folder(tmp_path / "b", 1)
    stats = tmp_path / "a_stats.npz"
    assert _run("fid-stats", "--images", str(a), "--out", str(stats), "--batch-size", "8") == 0
    mu, sigma = fid.load_stats(stats)
    assert mu.shape == (2048,) and sigma.shape == (2048, 2048)
    assert _run("fid", "--images", str(a), "--ref", str(stats), "--batch-size", "8") == 0
    same = float(capsys.readouterr().out.split("FID")[-1].split()[0])
    assert abs(same) < 1e-3
    assert _run("fid", "--images", str(b), "--ref", str(a), "--batch-size", "8") == 0
    other = float(capsys.readouterr().out.split("FID")[-1].split()[0])
    assert other > 1e-3


def test_images_report(tmp_path):
    a = _folder(tmp_path / "a", 0)
    out = tmp_path / "report"
    argv = ["images", "--images", str(a), "--ref", str(a), "--out", str(out), "--batch-size", "8"]
    assert _run(*argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["num_images"] == 6 and abs(report["fid"]["value"]) < 1e-3
    assert report["fid"]["preprocessing"] == "stylegan3"
    assert (out / "samples.png").is_file() and "| FID" in (out / "report.md").read_text()


def test_evaluate_images_accepts_arrays_and_judge(tmp_path):
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    calls = []

    def judge(images, specs, tasks):
        calls.append((len(images), specs, tasks))
        return {"accuracy": 0.5, "tasks": {"compose": {"n": 4, "accuracy": 0.5}}}

    report = commands.evaluate_images(
        images, specs=["s"] * 4, tasks=["compose"] * 4, judge=judge, batch_size=8
    )
    assert calls == [(4, ["s"] * 4, ["compose"] * 4)]
    assert report["judge"]["accuracy"] == 0.5 and "fid" not in report
    assert "judge accuracy: compose" in commands.markdown_report(report)


def test_user_errors(tmp_path):
    with pytest.raises(UserError, match="image folder not found"):
        _run("fid-stats", "--images", str(tmp_path / "none"), "--out", str(tmp_path / "x.npz"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        _run("fid-stats", "--images", str(tmp_path / "empty"), "--out", str(tmp_path / "x.npz"))
    a = _folder(tmp_path / "a", 0)
    with pytest.raises(UserError, match="not found"):
        _run("fid", "--images", str(a), "--ref", str(tmp_path / "missing.npz"))
    (a / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot read image"):
        _run("fid-stats", "--images", str(a), "--out", str(tmp_path / "x.npz"))
