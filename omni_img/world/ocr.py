"""A small wrapper around the Tesseract OCR command (Debian package `tesseract-ocr`).

Many images are read by one `tesseract` process (a list file in, pages separated by form
feeds out), because starting the process costs more than reading a word. Small images
are upscaled first: Tesseract reads text best at 30+ px per letter.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile

import numpy as np
from PIL import Image

from omni_img import preflight

LOWERCASE = "abcdefghijklmnopqrstuvwxyz"
TARGET_HEIGHT = 96  # px: the height a text crop is scaled to before OCR
BATCH = 256  # images per tesseract process


def tesseract_binary() -> str:
    """The path of the `tesseract` executable; UserError naming the package if absent."""
    path = preflight.TESSERACT.find()
    if path is None:
        preflight.require((preflight.TESSERACT,), "OCR")
    return path


def prepare_for_ocr(gray: np.ndarray) -> Image.Image:
    """uint8 (h, w) dark-text-on-light crop -> a Pillow image scaled to TARGET_HEIGHT, padded."""
    h, w = gray.shape
    scale = TARGET_HEIGHT / max(1, h)
    image = Image.fromarray(gray).resize(
        (max(1, round(w * scale)), TARGET_HEIGHT), Image.Resampling.LANCZOS
    )
    pad = TARGET_HEIGHT // 4
    canvas = Image.new("L", (image.width + 2 * pad, image.height + 2 * pad), 255)
    canvas.paste(image, (pad, pad))
    return canvas


def read_lines(crops: list[np.ndarray], whitelist: str = LOWERCASE) -> list[str]:
    """OCR each uint8 (h, w) dark-on-light crop as one line of text; returns stripped strings."""
    if not crops:
        return []
    binary = tesseract_binary()
    out: list[str] = []
    for start in range(0, len(crops), BATCH):
        out.extend(_read_batch(binary, crops[start : start + BATCH], whitelist))
    return out


def _read_batch(binary: str, crops: list[np.ndarray], whitelist: str) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="omni_img_ocr_") as tmp:
        paths = []
        for i, crop in enumerate(crops):
            path = os.path.join(tmp, f"{i:05d}.png")
            prepare_for_ocr(crop).save(path)
            paths.append(path)
        listing = os.path.join(tmp, "images.txt")
        with open(listing, "w") as f:
            f.write("\n".join(paths) + "\n")
        try:
            pages = _run(binary, listing, whitelist).split("\f")
        except TesseractCrashed:
            pages = []  # one image brought the process down: read them one by one
        if len(pages) >= len(crops) and all(p.strip() == "" for p in pages[len(crops) :]):
            return [" ".join(p.split()) for p in pages[: len(crops)]]
        # A crash, or a page count off (should not happen): one image per process.
        return [_read_one(binary, path, whitelist) for path in paths]


def _read_one(binary: str, path: str, whitelist: str) -> str:
    """One image in its own process. An image Tesseract crashes on (a generated crop of
    noise has made it die of SIGFPE) reads as nothing: an unreadable word, not a lost
    evaluation."""
    try:
        return " ".join(_run(binary, path, whitelist).replace("\f", "").split())
    except TesseractCrashed as crash:
        logging.warning("OCR: %s on one image; it counts as read wrong", crash)
        return ""


class TesseractCrashed(RuntimeError):
    """Tesseract was killed by a signal while reading (not a setup error: those exit > 0)."""


def _run(binary: str, image_or_list: str, whitelist: str) -> str:
    # No dictionaries: the judge must read "walnit" as written, not correct it to "walnut".
    command = [binary, image_or_list, "stdout", "--psm", "7", "-l", "eng"]
    command += ["-c", "load_system_dawg=0", "-c", "load_freq_dawg=0"]
    if whitelist:
        command += ["-c", f"tessedit_char_whitelist={whitelist}"]
    # One thread per process: the machines that run this have few cores.
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode < 0:
        raise TesseractCrashed(f"tesseract killed by signal {-result.returncode}")
    if result.returncode != 0:
        raise RuntimeError(f"tesseract failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def character_error_rate(read: str, expected: str) -> float:
    """Levenshtein distance between read and expected, divided by len(expected)."""
    previous = list(range(len(expected) + 1))
    for i, a in enumerate(read, 1):
        current = [i]
        for j, b in enumerate(expected, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))
        previous = current
    return previous[-1] / max(1, len(expected))
