"""Converted datasets: images from any format, at one resolution, in ArrayRecord shards.

Layout of `<data_dir>/<name>/`:

    dataset.json                  what was converted and how (see `DatasetInfo`)
    <split>/shard-00012.array_record   the records of work unit 12, in the unit's order
    <split>/shard-00012.json      {"count", "rows", "skipped", "converted"} of that unit
    <split>.json                  written last: {"count", "shards": [...], "skipped", ...}

A shard is written under a temporary name and renamed, then its .json is written: a
shard with a .json is complete, so an interrupted conversion redoes only the units
without one. The split's .json exists only once every unit is done. Records are
msgpack (no pickle), one per image:

    image     the R x R RGB image, encoded as dataset.json's "encoding" says
    caption   the first caption ("" if the format has none)
    captions  JSON list of every caption of the image (COCO has about five)
    label     class id, or -1 when the format has no classes
    key       where the image came from (a file name, a tar member, a row)

`ConvertedSource` reads a split as a random-access source with the fields the trainers
read (`image` as uint8, `caption`, `captions`, `task`, `label` when there are classes,
`index`).
"""

from __future__ import annotations

import dataclasses
import io
import json
import pathlib
from typing import Any

import msgpack
import numpy as np
from PIL import Image

from omni_img.errors import UserError

ENCODINGS = ("jpeg", "png", "raw")
JPEG_QUALITY = 95  # visually lossless at 256 px; png keeps every bit at ~3x the size


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """The settings a conversion ran with; a resumed run must use the same ones."""

    name: str
    source: str  # e.g. "tfds:imagenet2012", "coco", "webdataset", "parquet"
    resolution: int
    encoding: str = "jpeg"
    label_names: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "label_names": list(self.label_names)}

    @classmethod
    def from_json(cls, data: dict) -> DatasetInfo:
        return cls(**{**data, "label_names": tuple(data.get("label_names", ()))})


def dataset_dir(data_dir: str | pathlib.Path, name: str) -> pathlib.Path:
    return pathlib.Path(data_dir) / name


def is_converted(data_dir: str | pathlib.Path, name: str) -> bool:
    """Whether `<data_dir>/<name>` holds a converted dataset (complete or not)."""
    return (dataset_dir(data_dir, name) / "dataset.json").is_file()


def read_info(directory: pathlib.Path) -> DatasetInfo:
    return DatasetInfo.from_json(json.loads((directory / "dataset.json").read_text()))


def start_dataset(directory: pathlib.Path, info: DatasetInfo) -> None:
    """Write dataset.json, or check that an earlier, interrupted run used the same settings."""
    path = directory / "dataset.json"
    if path.is_file():
        before = read_info(directory)
        if before != info:
            differ = [
                f"{field.name} {getattr(before, field.name)!r} -> {getattr(info, field.name)!r}"
                for field in dataclasses.fields(info)
                if getattr(before, field.name) != getattr(info, field.name)
            ]
            raise UserError(
                f"{directory} was converted with other settings ({'; '.join(differ)}): "
                "delete it or choose another --name"
            )
        return
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info.to_json(), indent=2))


def encode_image(pixels: np.ndarray, encoding: str) -> bytes:
    if encoding == "raw":
        return pixels.tobytes()
    buffer = io.BytesIO()
    options = {"quality": JPEG_QUALITY} if encoding == "jpeg" else {"compress_level": 1}
    Image.fromarray(pixels).save(buffer, format=encoding.upper(), **options)
    return buffer.getvalue()


def decode_image(payload: bytes, encoding: str, resolution: int) -> np.ndarray:
    if encoding == "raw":
        return np.frombuffer(payload, np.uint8).reshape(resolution, resolution, 3)
    with Image.open(io.BytesIO(payload)) as image:
        return np.asarray(image.convert("RGB"))


def encode_record(pixels: np.ndarray, captions: list[str], label: int, key: str, encoding: str):
    # msgpack itself, not flax's wrapper: flax imports JAX, seconds in every process
    return msgpack.packb(
        {
            "image": encode_image(pixels, encoding),
            "caption": captions[0] if captions else "",
            "captions": json.dumps(captions),
            "label": int(label),
            "key": key,
        }
    )


def shard_paths(directory: pathlib.Path, split: str, unit: int) -> tuple[pathlib.Path, ...]:
    """(records, their .json, the temporary name records are written under)."""
    folder = directory / split
    stem = f"shard-{unit:05d}"
    return (
        folder / f"{stem}.array_record",
        folder / f"{stem}.json",
        folder / f".{stem}.array_record.partial",
    )


def write_split_index(directory: pathlib.Path, split: str, units: int) -> dict:
    """Sum the units' reports into <split>.json once every unit is done; returns it."""
    shards, count, rows = [], 0, 0
    skipped: dict[str, int] = {}
    converted: dict[str, int] = {}
    for unit in range(units):
        records_path, report_path, _ = shard_paths(directory, split, unit)
        report = json.loads(report_path.read_text())
        shards.append({"file": f"{split}/{records_path.name}", "count": report["count"]})
        count += report["count"]
        rows += report["rows"]
        for total, part in ((skipped, report["skipped"]), (converted, report["converted"])):
            for reason, n in part.items():
                total[reason] = total.get(reason, 0) + n
    index = {"split": split, "count": count, "rows": rows, "shards": shards,
             "skipped": skipped, "converted": converted}  # fmt: skip
    (directory / f"{split}.json").write_text(json.dumps(index, indent=2))
    return index


class ConvertedSource:
    """Random-access source over a converted split: len(src), src[i] -> dict of values."""

    def __init__(self, directory: str | pathlib.Path, split: str):
        from array_record.python import array_record_data_source

        directory = pathlib.Path(directory)
        self.info = read_info(directory)
        index_path = directory / f"{split}.json"
        if not index_path.is_file():
            raise UserError(
                f"split {split!r} of {directory} is not converted (or its conversion was "
                "interrupted): run the `omni-img data` command that made it again"
            )
        self.index = json.loads(index_path.read_text())
        paths = [str(directory / shard["file"]) for shard in self.index["shards"] if shard["count"]]
        self._source = array_record_data_source.ArrayRecordDataSource(paths) if paths else []
        if len(self._source) != self.index["count"]:
            raise UserError(
                f"{directory} split {split!r} holds {len(self._source)} records but its "
                f"index says {self.index['count']}: convert it again"
            )

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        stored = msgpack.unpackb(self._source[index])
        record = {
            "image": decode_image(stored["image"], self.info.encoding, self.info.resolution),
            "caption": stored["caption"],
            "captions": stored["captions"],
            "task": "caption" if stored["caption"] else "class",
            "key": stored["key"],
            "index": int(index),
        }
        if self.info.label_names:  # only datasets with classes carry a label
            record["label"] = int(stored["label"])
        return record
