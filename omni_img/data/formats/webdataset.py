"""WebDataset / img2dataset tar shards: `KEY.jpg` + `KEY.txt` (+ `KEY.json`) per sample.

A unit is one tar file (local paths or glob patterns, in sorted order). The members
of a sample are grouped by key (the member name up to its first dot, as WebDataset
does); the caption is the `.txt`, else the `.json`'s "caption". A corrupt member is
skipped as its reason; a tar that breaks off keeps the samples read before the break
and counts one `broken_tar`.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import tarfile
from collections.abc import Iterator

from omni_img.data.conversion import Example, Skip
from omni_img.errors import UserError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


@dataclasses.dataclass(frozen=True)
class Unit:
    path: str


def expand(patterns: list[str]) -> list[str]:
    """The tar files of paths and glob patterns, sorted and without repeats."""
    paths = set()
    for pattern in patterns:
        found = glob.glob(pattern) if glob.has_magic(pattern) else [pattern]
        if not found or not all(os.path.isfile(p) for p in found):
            raise UserError(f"no tar shard at {pattern}")
        paths.update(found)
    return sorted(paths)


def plan(patterns: list[str]) -> list[Unit]:
    return [Unit(path) for path in expand(patterns)]


def samples(path: str) -> Iterator[tuple[str, dict[str, bytes]] | Skip]:
    """(key, {extension: bytes}) of each sample, in the tar's order."""
    key, members = None, {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                directory, name = os.path.split(member.name)
                stem, dot, extension = name.partition(".")
                if not dot or name.startswith("."):
                    continue
                member_key = os.path.join(directory, stem)
                if member_key != key and key is not None:
                    yield key, members
                    members = {}
                key = member_key
                members[extension.lower()] = tar.extractfile(member).read()
            ended = _ends_with_end_marker(tar)
    except (tarfile.TarError, EOFError, OSError):
        ended = False
    if not ended:
        yield Skip("broken_tar")
    if key is not None:
        yield key, members


def _ends_with_end_marker(tar: tarfile.TarFile) -> bool:
    """Whether the archive ends with its two zero blocks. tarfile stops quietly at a
    header cut short, so a shard truncated by a failed copy would pass unnoticed."""
    tar.fileobj.seek(tar.offset)
    return tar.fileobj.read(2 * tarfile.BLOCKSIZE) == bytes(2 * tarfile.BLOCKSIZE)


def caption_of(members: dict[str, bytes]) -> str:
    if "txt" in members:
        return members["txt"].decode("utf-8", errors="replace")
    if "json" in members:
        try:
            caption = json.loads(members["json"]).get("caption")
        except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
            return ""
        return caption if isinstance(caption, str) else ""
    return ""


def read(unit: Unit) -> Iterator[Example | Skip]:
    for sample in samples(unit.path):
        if isinstance(sample, Skip):
            yield sample
            continue
        key, members = sample
        image = next((members[e] for e in IMAGE_EXTENSIONS if e in members), None)
        caption = caption_of(members)
        if image is None:
            yield Skip("no_image")
        elif not caption.strip():
            yield Skip("no_caption")
        else:
            yield Example(image, [caption], f"{os.path.basename(unit.path)}:{key}")
