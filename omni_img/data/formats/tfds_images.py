"""Any TFDS image dataset by name (imagenet2012, ...), read through `tfds.data_source`.

The dataset must be prepared in ArrayRecord format in its data dir (random access, no
TensorFlow needed to read it). A unit is a range of indices of the split. The label
feature, if any, is kept as the class; a caption template such as "a photo of a
{label}" turns it into a caption as well.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator

from omni_img.data.conversion import Example, Skip
from omni_img.errors import UserError

SHARD_SIZE = 5000  # images per unit (and output shard)


@dataclasses.dataclass(frozen=True)
class Unit:
    dataset: str
    split: str
    data_dir: str | None
    start: int
    stop: int
    image_key: str
    label_key: str
    label_names: tuple[str, ...]
    caption_template: str


@functools.lru_cache(maxsize=4)
def _open(dataset: str, split: str, data_dir: str | None):
    """The TFDS source of a split, opened once per process."""
    import tensorflow_datasets as tfds

    try:
        return tfds.data_source(dataset, split=split, data_dir=data_dir)
    except Exception as error:  # TFDS raises several types for "not prepared"
        raise UserError(
            f"TFDS dataset {dataset} split {split} cannot be opened as ArrayRecord: {error}; "
            f"prepare it with: tfds build {dataset} --file_format=array_record"
            + (f" --data_dir={data_dir}" if data_dir else "")
        ) from None


def label_names(dataset: str, data_dir: str | None, label_key: str) -> tuple[str, ...]:
    """The class names of the dataset's label feature ((), if it has none)."""
    import tensorflow_datasets as tfds

    features = tfds.builder(dataset, data_dir=data_dir).info.features
    feature = features[label_key] if label_key in features else None
    return tuple(getattr(feature, "names", None) or ())


def plan(
    dataset: str,
    split: str,
    data_dir: str | None,
    *,
    image_key: str = "image",
    label_key: str = "label",
    caption_template: str = "",
    shard_size: int = SHARD_SIZE,
) -> tuple[list[Unit], tuple[str, ...]]:
    """(the units covering the split, the class names)."""
    names = label_names(dataset, data_dir, label_key)
    if caption_template and "{label}" not in caption_template:
        raise UserError(f"--caption_template must hold {{label}}, got {caption_template!r}")
    if caption_template and not names:
        raise UserError(f"{dataset} has no class names under {label_key!r} for the template")
    size = len(_open(dataset, split, data_dir))
    units = [
        Unit(
            dataset,
            split,
            data_dir,
            start,
            min(start + shard_size, size),
            image_key,
            label_key if names else "",
            names,
            caption_template,
        )  # fmt: skip
        for start in range(0, size, shard_size)
    ]
    return units, names


def read(unit: Unit) -> Iterator[Example | Skip]:
    source = _open(unit.dataset, unit.split, unit.data_dir)
    for index in range(unit.start, unit.stop):
        try:
            record = source[index]
        except Exception:  # a record TFDS cannot decode: counted, never fatal
            yield Skip("undecodable")
            continue
        if unit.image_key not in record:
            yield Skip("no_image_field")
            continue
        label = int(record[unit.label_key]) if unit.label_key else -1
        captions = []
        if unit.caption_template:
            captions = [unit.caption_template.format(label=unit.label_names[label])]
        yield Example(record[unit.image_key], captions, f"{unit.split}[{index}]", label)
