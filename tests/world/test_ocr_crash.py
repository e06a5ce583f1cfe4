"""A Tesseract that dies on one image costs that image's read, not the evaluation."""

import stat

import numpy as np
import pytest

from omni_img.world import ocr

# Dies of SIGFPE on the batch listing and on image 00001; reads "word" elsewhere.
FAKE_TESSERACT = """#!/bin/sh
case "$1" in
  *images.txt|*00001.png) kill -FPE $$ ;;
  *) echo word ;;
esac
"""


@pytest.fixture
def crashing_tesseract(tmp_path, monkeypatch):
    binary = tmp_path / "tesseract"
    binary.write_text(FAKE_TESSERACT)
    binary.chmod(binary.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(ocr, "tesseract_binary", lambda: str(binary))


def test_a_crash_on_one_image_reads_that_image_as_nothing(crashing_tesseract, caplog):
    crops = [np.full((12, 40), 255, np.uint8) for _ in range(3)]
    assert ocr.read_lines(crops) == ["word", "", "word"]
    assert "killed by signal 8" in caplog.text  # said, not silently absorbed


def test_a_setup_error_still_raises(tmp_path, monkeypatch):
    binary = tmp_path / "tesseract"
    binary.write_text("#!/bin/sh\necho 'Failed loading language eng' >&2\nexit 1\n")
    binary.chmod(binary.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(ocr, "tesseract_binary", lambda: str(binary))
    with pytest.raises(RuntimeError, match="Failed loading language"):
        ocr.read_lines([np.full((12, 40), 255, np.uint8)])
