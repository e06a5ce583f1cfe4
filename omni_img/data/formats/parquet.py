"""Parquet (Hugging Face datasets and others): an image-bytes column and a caption column.

The image column holds encoded image bytes, or a struct with a "bytes" field (the
Hugging Face `Image` feature). A unit is one row group of one file, so large files
convert in parallel too; files (paths or globs) are taken in sorted order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from omni_img.data.conversion import Example, Skip
from omni_img.data.formats.webdataset import expand
from omni_img.errors import UserError


@dataclasses.dataclass(frozen=True)
class Unit:
    path: str
    row_group: int
    image_column: str
    caption_column: str


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError('reading Parquet needs pyarrow: pip install "omni-img[parquet]"') from None
    return pq


def plan(patterns: list[str], image_column: str, caption_column: str) -> list[Unit]:
    pq = _pyarrow_parquet()
    units = []
    for path in expand(patterns):
        try:
            file = pq.ParquetFile(path)
        except Exception as error:  # pyarrow raises ArrowInvalid and OSError subtypes
            raise UserError(f"{path} is not a Parquet file: {error}") from None
        names = file.schema_arrow.names
        for column in (image_column, caption_column):
            if column not in names:
                raise UserError(f"{path} has no column {column!r}; columns: {', '.join(names)}")
        units.extend(
            Unit(path, group, image_column, caption_column) for group in range(file.num_row_groups)
        )
    return units


def image_bytes(value) -> bytes | None:
    if isinstance(value, dict):  # the Hugging Face Image feature: {"bytes", "path"}
        value = value.get("bytes")
    return value if isinstance(value, bytes) and value else None


def read(unit: Unit) -> Iterator[Example | Skip]:
    pq = _pyarrow_parquet()
    columns = [unit.image_column, unit.caption_column]
    table = pq.ParquetFile(unit.path).read_row_group(unit.row_group, columns=columns)
    rows = table.to_pylist()
    for position, row in enumerate(rows):
        image, caption = image_bytes(row[unit.image_column]), row[unit.caption_column]
        if image is None:
            yield Skip("no_image")
        elif not isinstance(caption, str) or not caption.strip():
            yield Skip("no_caption")
        else:
            yield Example(image, [caption], f"{unit.row_group}:{position}")
