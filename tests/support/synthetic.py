"""A small deterministic in-memory image source for framework tests."""

from __future__ import annotations

import time

import numpy as np


def synthetic_record(index: int, size: int = 16) -> dict:
    """A background colour and one coloured rectangle, both a function of `index`."""
    rng = np.random.default_rng(index)
    image = np.empty((size, size, 3), np.uint8)
    image[:] = rng.integers(0, 256, 3, dtype=np.uint8)
    top, left = rng.integers(0, size // 2, 2)
    height, width = rng.integers(size // 4, size // 2, 2)
    image[top : top + height, left : left + width] = rng.integers(0, 256, 3, dtype=np.uint8)
    return {"image": image, "task": "compose", "index": index}


class SyntheticSource:
    """Random-access source (`len`, `[i]`), optionally slow to read (seconds per record)."""

    def __init__(self, length: int = 256, size: int = 16, delay: float = 0.0):
        self.length, self.size, self.delay = length, size, delay

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if self.delay:
            time.sleep(self.delay)
        return synthetic_record(int(index), self.size)
