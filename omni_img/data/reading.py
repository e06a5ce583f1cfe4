"""Build and read datasets: the only door other code needs into TFDS.

`source(name, split, data_dir)` returns a random-access data source (a TFDS ArrayRecord
data source: `len(src)`, `src[i]` -> dict of numpy values) that `grain.MapDataset.source`
and `grain.DataLoader` take as is. Names: "omni_shapes" (the default config),
"omni_shapes/<config>", a bare config name ("64px", "tiny", or a custom
"r96-3000-300-300-s0"), an `OmniShapesConfig`, the name of an ingested dataset, or of
one converted by `omni-img data tfds|coco|webdataset|parquet` (omni_img/data/converted.py).
"""

from __future__ import annotations

import os
import re
from typing import Any

from omni_img.errors import UserError

CUSTOM_NAME = re.compile(r"^r(\d+)-(\d+)-(\d+)-(\d+)-s(\d+)$")


def default_data_dir() -> str:
    """$TFDS_DATA_DIR if set, else ~/tensorflow_datasets (TFDS's own default)."""
    return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def make_config(
    resolution: int = 64,
    train_examples: int | None = None,
    validation_examples: int | None = None,
    test_examples: int | None = None,
    seed: int = 0,
):
    """An OmniShapesConfig: a preset when the values match one, else a custom named config.

    Sizes left as None take the preset of that resolution, or the 64 px default sizes.
    """
    from omni_img.world.omni_shapes import CONFIGS, OmniShapesConfig

    if not 32 <= resolution <= 256 or resolution % 4:
        raise UserError(f"resolution must be a multiple of 4 in 32..256, got {resolution}")
    base = next((c for c in CONFIGS if c.name == f"{resolution}px"), CONFIGS[0])
    sizes = (
        base.train_examples if train_examples is None else train_examples,
        base.validation_examples if validation_examples is None else validation_examples,
        base.test_examples if test_examples is None else test_examples,
    )
    if min(sizes) < 1:
        raise UserError(f"every split needs at least one example, got {sizes}")
    for preset in CONFIGS:
        if (preset.resolution, *preset.split_sizes().values(), preset.seed) == (
            resolution,
            *sizes,
            seed,
        ):
            return preset
    name = f"r{resolution}-{sizes[0]}-{sizes[1]}-{sizes[2]}-s{seed}"
    return OmniShapesConfig(
        name=name,
        description=f"{resolution}x{resolution} px, custom sizes and seed",
        resolution=resolution,
        train_examples=sizes[0],
        validation_examples=sizes[1],
        test_examples=sizes[2],
        seed=seed,
    )


def config_named(name: str):
    """The OmniShapesConfig of a preset name or a custom name; UserError if neither."""
    from omni_img.world.omni_shapes import CONFIGS

    for preset in CONFIGS:
        if preset.name == name:
            return preset
    match = CUSTOM_NAME.match(name)
    if match is None:
        presets = ", ".join(c.name for c in CONFIGS)
        raise UserError(f"unknown omni_shapes config {name!r}; presets: {presets}")
    r, train, validation, test, seed = map(int, match.groups())
    return make_config(r, train, validation, test, seed)


def builder(name_or_config: Any = "omni_shapes", data_dir: str | None = None):
    """The TFDS builder of a dataset name or an OmniShapesConfig (nothing is built)."""
    import tensorflow_datasets as tfds

    from omni_img.world.omni_shapes import OmniShapes, OmniShapesConfig

    data_dir = data_dir or default_data_dir()
    config = None
    if isinstance(name_or_config, OmniShapesConfig):
        config = name_or_config
    elif isinstance(name_or_config, str):
        head, _, tail = name_or_config.partition("/")
        if head == "omni_shapes":
            config = config_named(tail or OmniShapes.DEFAULT_CONFIG_NAME)
        elif tail == "" and (CUSTOM_NAME.match(head) or head.endswith("px") or head == "tiny"):
            config = config_named(head)
        else:  # an ingested dataset (or any TFDS dataset already prepared in data_dir)
            try:
                return tfds.builder(name_or_config, data_dir=data_dir)
            except Exception as error:  # TFDS raises several types for "not found"
                raise UserError(f"no dataset {name_or_config!r} in {data_dir}: {error}") from None
    else:
        raise UserError(f"expected a dataset name or OmniShapesConfig, got {name_or_config!r}")
    return OmniShapes(config=config, data_dir=data_dir, file_format="array_record")


def prepare(name_or_config: Any = "omni_shapes", data_dir: str | None = None):
    """Build omni_shapes (a name or config) into data_dir if absent; returns the builder."""
    dataset = builder(name_or_config, data_dir)
    dataset.download_and_prepare()
    return dataset


def source(name_or_config: Any = "omni_shapes", split: str = "train", data_dir: str | None = None):
    """A random-access source over a prepared split: len(src), src[i] -> {feature: numpy}."""
    from omni_img.data import converted

    root = data_dir or default_data_dir()
    if isinstance(name_or_config, str) and converted.is_converted(root, name_or_config):
        return converted.ConvertedSource(converted.dataset_dir(root, name_or_config), split)
    dataset = builder(name_or_config, data_dir)
    if not dataset.is_prepared():
        raise UserError(
            f"dataset {dataset.info.full_name} is not built in {dataset.data_dir_root}; "
            f"run: omni-img data build --config {dataset.builder_config.name} "
            f"--data_dir {dataset.data_dir_root}"
            if dataset.builder_config is not None
            else f"dataset {dataset.name} is not prepared in {dataset.data_dir_root}"
        )
    if split not in dataset.info.splits:
        raise UserError(f"dataset {dataset.name} has no split {split!r}")
    return dataset.as_data_source(split=split)


def text(value) -> str:
    """A record's text field as str: TFDS returns `Text` features as bytes; None is ""."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
