"""Ways to damage a checkpoint file, and the files of each kind in a step folder."""

from __future__ import annotations

import pathlib
import shutil


def truncate(path: pathlib.Path) -> None:
    """Keep the first half (what a full disk or a dying host leaves)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def zero_fill(path: pathlib.Path) -> None:
    """Same length, every byte zero (a block the filesystem lost)."""
    path.write_bytes(bytes(path.stat().st_size))


def flip_bytes(path: pathlib.Path) -> None:
    """Invert a few bytes in the middle (bit rot): same length, no error on read."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for index in range(middle, min(middle + 4, len(data))):
        data[index] ^= 0xFF
    path.write_bytes(bytes(data))


def delete(path: pathlib.Path) -> None:
    path.unlink()


DAMAGES = {"truncate": truncate, "zero_fill": zero_fill, "flip_bytes": flip_bytes, "delete": delete}


def array_data_file(step_dir: pathlib.Path) -> pathlib.Path:
    """The largest array data file of the state (TensorStore's OCDBT data)."""
    files = [p for p in (step_dir / "state").rglob("d/*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


FILE_KINDS = {
    "array_data": array_data_file,
    "array_manifest": lambda step: step / "state" / "manifest.ocdbt",
    "tree_metadata": lambda step: step / "state" / "_METADATA",
    "step_metadata": lambda step: step / "_CHECKPOINT_METADATA",
    "data_iterator": lambda step: step / "data" / "process_0-of-1.json",
    "schedule": lambda step: step / "schedule" / "metadata",
}


def damaged_copy(workdir: pathlib.Path, into: pathlib.Path, step: int, kind: str, damage: str):
    """A copy of `workdir` whose step `step` has one file of `kind` damaged; returns the
    damaged file."""
    shutil.copytree(workdir, into)
    target = FILE_KINDS[kind](into / "checkpoints" / str(step))
    DAMAGES[damage](target)
    return target
