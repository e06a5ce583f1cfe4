"""A digest of every file of a finished checkpoint, to tell a damaged one on restore.

Orbax detects much damage itself (a truncated array file, an unreadable manifest), but
not all: a flipped byte in an array chunk or in the data iterator's JSON can restore
without an error into different numbers. So once Orbax has committed a step (its
temporary directory renamed to `<step>/`), the size and CRC-32 of each of its files are
written to `<step>/DIGEST_FILE`; a restore compares them first. The digest lives inside
the step folder, so it is moved and deleted with the step. A step without a digest
(written before digests existed, or killed between Orbax's commit and the digest)
restores on Orbax's own checks alone.
"""

from __future__ import annotations

import json
import os
import pathlib
import zlib

DIGEST_FILE = "omni_img_digest.json"
_CHUNK = 1 << 20


def file_crc32(path: pathlib.Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def step_files(step_dir: pathlib.Path) -> list[pathlib.Path]:
    """Every file of a step folder except the digest, sorted."""
    return sorted(
        path for path in step_dir.rglob("*") if path.is_file() and path.name != DIGEST_FILE
    )


def compute_digest(step_dir: pathlib.Path) -> dict[str, list[int]]:
    """{relative path: [size in bytes, CRC-32]} of a step folder."""
    return {
        path.relative_to(step_dir).as_posix(): [path.stat().st_size, file_crc32(path)]
        for path in step_files(step_dir)
    }


def write_digest(step_dir: pathlib.Path) -> None:
    """Write the digest beside the step's files (through a temporary name: a digest is
    whole or absent)."""
    partial = step_dir / f".{DIGEST_FILE}.partial"
    partial.write_text(json.dumps(compute_digest(step_dir), sort_keys=True))
    os.replace(partial, step_dir / DIGEST_FILE)


def digest_problem(step_dir: pathlib.Path) -> str | None:
    """Why the files of `step_dir` differ from its digest (None: they match, or the step
    has no digest). Names the first file found missing, truncated, grown or changed."""
    path = step_dir / DIGEST_FILE
    if not path.exists():
        return None
    try:
        recorded = json.loads(path.read_text())
        if not isinstance(recorded, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as error:
        return f"its digest {DIGEST_FILE} is unreadable ({error})"
    for name, entry in sorted(recorded.items()):
        size, crc = entry
        file = step_dir / name
        if not file.is_file():
            return f"{name} is missing"
        actual = file.stat().st_size
        if actual != size:
            kind = "truncated" if actual < size else "longer than saved"
            return f"{name} is {kind} ({actual} of {size} bytes)"
        if file_crc32(file) != crc:
            return f"{name} changed since it was saved (CRC-32 mismatch)"
    return None
