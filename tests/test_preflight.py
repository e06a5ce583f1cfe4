"""The preflight: a command that will need a missing system tool stops before any work."""

import os
import pathlib
import subprocess
import sys
import time

import pytest

from omni_img import preflight
from omni_img.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]


def _env_without_tesseract(tmp_path: pathlib.Path) -> dict[str, str]:
    """An environment whose PATH holds only this Python (no tesseract), with a new HOME."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if k != "OMNI_IMG_TESSERACT"}
    env.update(PATH=str(bin_dir), HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO))
    return env


def _run_cli(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "omni_img.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    return result, time.perf_counter() - start


def test_require_names_every_missing_tool_and_its_install(monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("OMNI_IMG_TESSERACT", raising=False)
    absent = preflight.Tool("no-such-tool-xyz", "testing", "pkg-a pkg-b", "pkg-a")
    with pytest.raises(UserError) as error:
        preflight.require((preflight.TESSERACT, absent), "the job")
    message = str(error.value)
    assert "\n" not in message
    assert "tesseract" in message and "tesseract-ocr" in message
    assert "no-such-tool-xyz" in message and "pkg-a pkg-b" in message
    assert "nothing was started" in message


def test_path_variable_names_the_executable(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", "")
    fake = tmp_path / "tess"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("OMNI_IMG_TESSERACT", str(fake))
    assert preflight.TESSERACT.find() == str(fake)
    fake.chmod(0o644)  # named but not executable: missing, not silently used
    assert preflight.missing((preflight.TESSERACT,)) == [preflight.TESSERACT]


def test_demo_without_tesseract_stops_before_any_work(tmp_path):
    workdir = tmp_path / "demo"
    env = _env_without_tesseract(tmp_path)
    result, seconds = _run_cli(["demo", "--workdir", str(workdir)], env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "tesseract" in lines[0] and "apt-get install" in lines[0]
    assert not workdir.exists()  # no dataset built, nothing trained
    assert seconds < 60


def test_train_tokenizer_without_tesseract_stops_before_any_work(tmp_path):
    workdir = tmp_path / "tok"
    result, _ = _run_cli(
        ["train", "--config", "experiments/tokenizer_tiny.py", "--workdir", str(workdir)],
        _env_without_tesseract(tmp_path),
    )
    assert result.returncode == 2, result.stderr
    assert "tesseract" in result.stderr and "training the tokenizer" in result.stderr
    assert not workdir.exists()
