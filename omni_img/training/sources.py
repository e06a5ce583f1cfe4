"""Open a split of the configured dataset as a random-access source (TFDS ArrayRecord)."""

from __future__ import annotations

import ml_collections

from omni_img.data import reading


def dataset_name(data: ml_collections.ConfigDict) -> str:
    """`data.name[/data.builder_config]`: what `omni_img.data.reading.source` takes."""
    return f"{data.name}/{data.builder_config}" if data.builder_config else data.name


def open_split(data: ml_collections.ConfigDict, split: str):
    """The random-access source of `split` (UserError naming the fix if not built)."""
    return reading.source(dataset_name(data), split, data.data_dir or None)
