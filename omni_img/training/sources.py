"""Open a split of the configured dataset as a random-access source (TFDS ArrayRecord)."""

from __future__ import annotations

import importlib
import os

import ml_collections

from omni_img.errors import UserError

# Datasets that ship with omni_img: importing the module registers the TFDS builder.
BUILT_IN_BUILDERS = {"omni_shapes": "omni_img.data.omni_shapes"}


def data_dir_of(data: ml_collections.ConfigDict) -> str:
    """config.data.data_dir, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    chosen = data.data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return os.path.expanduser(chosen)


def open_split(data: ml_collections.ConfigDict, split: str):
    """`tfds.data_source` over `data.name[/data.builder_config]`, split `split`."""
    import tensorflow_datasets as tfds

    if data.name in BUILT_IN_BUILDERS:
        importlib.import_module(BUILT_IN_BUILDERS[data.name])
    name = f"{data.name}/{data.builder_config}" if data.builder_config else data.name
    data_dir = data_dir_of(data)
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as error:  # TFDS raises several types for "not prepared"
        raise UserError(
            f"dataset {name!r} split {split!r} is not available under {data_dir} "
            f"({type(error).__name__}); build it with `omni-img data build`"
        ) from error
