"""Metrics: JSON lines and TensorBoard events, written by process 0 only."""

from __future__ import annotations

import json
import math
import pathlib
import time
from collections.abc import Mapping

import jax
import numpy as np


class MetricsWriter:
    """Appends `{"step": n, "time": t, name: value...}` lines to metrics.jsonl and
    the same scalars to TensorBoard event files under `WORKDIR/tensorboard`."""

    def __init__(self, workdir: str | pathlib.Path, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._jsonl = None
        self._tensorboard = None
        if not self.enabled:
            return
        workdir = pathlib.Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(workdir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        from tensorboardX import SummaryWriter

        self._tensorboard = SummaryWriter(str(workdir / "tensorboard"))

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        clean = {name: _to_float(value) for name, value in scalars.items()}
        record = {"step": int(step), "time": round(time.time(), 3), **clean}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        for name, value in clean.items():
            if value is not None and math.isfinite(value):
                self._tensorboard.add_scalar(name, value, int(step))

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._tensorboard.close()
            self._jsonl = self._tensorboard = None


def _to_float(value) -> float | None:
    array = np.asarray(value)
    if array.size != 1:
        return None
    return float(array.reshape(()))
