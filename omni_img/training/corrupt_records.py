"""Corrupt records in a training stream: counted and skipped with a warning.

A flipped byte in an ArrayRecord shard fails its chunk's checksum or its decoding (the
record's proto, PNG or msgpack), a file ingested as an image may not decode: reading
or transforming such a record raises. One bad record should cost that record, not the
run, so `SkippingMap` reads record i of the (shuffled, repeated) stream and, when it
fails, takes record i+1 instead, then i+2, ...: deterministic, so a resumed run reads
the same batches, and the batch keeps its size. Each record says how many it replaced
(`SKIPPED_KEY`, batched with the rest, so the count also reaches the main process from
grain's worker processes); `SkipCounter` takes that column out of each batch and keeps
the total, which the run logs as `corrupt_records_skipped`. A stream where
`MAX_CONSECUTIVE` records in a row fail is not corrupt here and there but unreadable:
that is a one-line UserError.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping

import grain
import numpy as np

from omni_img.errors import UserError

SKIPPED_KEY = "_corrupt_records_skipped"
MAX_CONSECUTIVE = 64


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split())[:200]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class SkippingMap(grain.MapDataset):
    """`parent.map(transform)`, where a record that fails to read or transform is
    replaced by the next one that does (see the module docstring)."""

    def __init__(self, parent: grain.MapDataset, transform: Callable[[Mapping], dict]):
        super().__init__(parent)
        self._transform = transform

    def __len__(self) -> int:
        return len(self._parent)

    def __str__(self) -> str:
        return "SkippingMap"

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        first_error = None
        for offset in range(MAX_CONSECUTIVE):
            position = (index + offset) % len(self._parent)
            try:
                example = dict(self._transform(self._parent[position]))
            except Exception as error:  # a corrupt record: any failure to read or decode it
                first_error = first_error or error
                print(
                    f"warning: skipping corrupt record at position {position} of the "
                    f"training stream ({_reason(error)})",
                    file=sys.stderr,
                    flush=True,
                )
                continue
            example[SKIPPED_KEY] = np.int32(offset)
            return example
        raise UserError(
            f"{MAX_CONSECUTIVE} records in a row of the training stream from position "
            f"{index} fail to read ({_reason(first_error)}): the dataset is unreadable, "
            f"not merely damaged; rebuild it"
        )


class SkipCounter:
    """Takes the skipped-record column out of batches and keeps the running total."""

    def __init__(self):
        self.total = 0

    def strip(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = dict(batch)
        skipped = batch.pop(SKIPPED_KEY, None)
        if skipped is not None:
            self.total += int(np.sum(skipped))
        return batch
