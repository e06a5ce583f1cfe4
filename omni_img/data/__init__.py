"""omni_img.data: the built-in omni shapes dataset, ingestion, and reading datasets.

Other code reads data only through `source(name, split, data_dir)` (a random-access
source for grain) and builds it with `prepare(name, data_dir)`; see docs/data.md.
"""

from __future__ import annotations

from typing import Any


def source(name_or_config: Any = "omni_shapes", split: str = "train", data_dir: str | None = None):
    """A random-access source over a prepared split: len(src), src[i] -> {feature: numpy}."""
    from omni_img.data import reading

    return reading.source(name_or_config, split, data_dir)


def prepare(name_or_config: Any = "omni_shapes", data_dir: str | None = None):
    """Build a dataset (omni_shapes name or config) into data_dir if absent; returns the builder."""
    from omni_img.data import reading

    return reading.prepare(name_or_config, data_dir)
