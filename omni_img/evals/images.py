"""Image helpers shared by evaluators and trainers: PSNR, grids (value ranges:
``omni_img.models.tokenizer.to_uint8``)."""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image


def psnr(reference_uint8: np.ndarray, test_uint8: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of uint8 images (N, H, W, C); identical images give inf."""
    diff = reference_uint8.astype(np.float64) - test_uint8.astype(np.float64)
    mse = np.mean(diff * diff, axis=tuple(range(1, diff.ndim)))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(255.0**2 / mse)


def save_grid(images_uint8: np.ndarray, path: str | pathlib.Path, columns: int = 8) -> None:
    """Tile (N, H, W, 3) uint8 images into one PNG, row-major, with 2 px white gutters."""
    images = np.asarray(images_uint8)
    count, height, width, _ = images.shape
    rows = -(-count // columns)
    gutter = 2
    canvas = np.full(
        (rows * (height + gutter) + gutter, columns * (width + gutter) + gutter, 3),
        255,
        np.uint8,
    )
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        top, left = gutter + row * (height + gutter), gutter + column * (width + gutter)
        canvas[top : top + height, left : left + width] = image
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)
