"""Pre-tokenized splits: the VQ token grids of a dataset, written once for the generator.

Layout of a tokenized directory:

    DIR/<split>.array_record   one msgpack record per example (see `TokenizedRecord`)
    DIR/<split>.json           {"count", "grid": [h, w], "num_codes", "tasks": {...}}

A record holds the target grid, the edit source's grid (zeros when there is none),
the caption and the episode history, the task and the spec: everything the generator
stage reads, so images are never re-encoded during its training. msgpack (no pickle)
keeps the files safe to read.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from array_record.python import array_record_data_source, array_record_module
from flax import serialization

from omni_img.errors import UserError

TEXT_FIELDS = ("caption", "history", "task", "spec", "edit_op")


def encode_record(record: Mapping[str, Any]) -> bytes:
    return serialization.msgpack_serialize(dict(record))


def decode_record(payload: bytes) -> dict[str, Any]:
    return dict(serialization.msgpack_restore(payload))


def write_split(
    directory: str | pathlib.Path,
    split: str,
    records: Iterable[Mapping[str, Any]],
    *,
    grid: tuple[int, int],
    num_codes: int,
    extra_metadata: Mapping[str, Any] | None = None,
) -> dict:
    """Write `records` to DIR/<split>.array_record (+ its .json); returns the metadata.

    The file is written under a temporary name and renamed at the end, so an
    interrupted run never leaves a half-written split that looks complete.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{split}.array_record"
    partial = directory / f".{split}.array_record.partial"
    writer = array_record_module.ArrayRecordWriter(str(partial), "group_size:1")
    tasks: dict[str, int] = {}
    count = 0
    try:
        for record in records:
            writer.write(encode_record(record))
            tasks[record["task"]] = tasks.get(record["task"], 0) + 1
            count += 1
    finally:
        writer.close()
    partial.replace(final)
    metadata = {
        "split": split,
        "count": count,
        "grid": list(grid),
        "num_codes": int(num_codes),
        "tasks": tasks,
        **(extra_metadata or {}),
    }
    (directory / f"{split}.json").write_text(json.dumps(metadata, indent=2))
    return metadata


class TokenizedSource:
    """Random-access source over DIR/<split>.array_record (len, [i] -> dict)."""

    def __init__(self, directory: str | pathlib.Path, split: str):
        directory = pathlib.Path(directory)
        path = directory / f"{split}.array_record"
        meta_path = directory / f"{split}.json"
        if not path.is_file() or not meta_path.is_file():
            raise UserError(
                f"no tokenized split {split!r} in {directory}; run `omni-img tokenize` first"
            )
        self.metadata = json.loads(meta_path.read_text())
        self._source = array_record_data_source.ArrayRecordDataSource([str(path)])
        if len(self._source) != self.metadata["count"]:
            raise UserError(
                f"{path} holds {len(self._source)} records but its metadata says "
                f"{self.metadata['count']}: the split is incomplete, tokenize it again"
            )

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return decode_record(self._source[index])

    def task_indices(self) -> dict[str, np.ndarray]:
        """Indices of the records of each task (reads every record once)."""
        by_task: dict[str, list[int]] = {}
        for index in range(len(self)):
            by_task.setdefault(self[index]["task"], []).append(index)
        return {task: np.asarray(indices) for task, indices in by_task.items()}
