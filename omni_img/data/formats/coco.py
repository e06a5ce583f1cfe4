"""COCO captions: `captions_<split>.json` and its image folder, one record per image.

Every caption of an image is kept (the generator draws one per step); images with no
caption or no file are counted and skipped. A unit is a block of images in the order
of the annotation file's "images" list.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator

from omni_img.data.conversion import Example, Skip
from omni_img.errors import UserError

SHARD_SIZE = 2000


@dataclasses.dataclass(frozen=True)
class Unit:
    images_dir: str
    images: tuple[tuple[str, tuple[str, ...]], ...]  # (file_name, its captions)


def images_with_captions(annotations_file: str) -> list[tuple[str, tuple[str, ...]]]:
    """(file_name, captions) of every image listed, in the file's order."""
    if not os.path.isfile(annotations_file):
        raise UserError(f"COCO annotations file not found: {annotations_file}")
    try:
        with open(annotations_file, encoding="utf-8") as f:
            data = json.load(f)
        images, annotations = data["images"], data["annotations"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise UserError(f"{annotations_file} is not COCO captions JSON: {error}") from None
    captions: dict[int, list[str]] = {}
    for annotation in annotations:
        if isinstance(annotation, dict) and isinstance(annotation.get("caption"), str):
            captions.setdefault(annotation.get("image_id"), []).append(annotation["caption"])
    return [
        (str(image.get("file_name", "")), tuple(captions.get(image.get("id"), ())))
        for image in images
        if isinstance(image, dict)
    ]


def plan(images_dir: str, annotations_file: str, shard_size: int = SHARD_SIZE) -> list[Unit]:
    if not os.path.isdir(images_dir):
        raise UserError(f"image folder not found: {images_dir}")
    listed = images_with_captions(annotations_file)
    return [
        Unit(images_dir, tuple(listed[start : start + shard_size]))
        for start in range(0, len(listed), shard_size)
    ]


def read(unit: Unit) -> Iterator[Example | Skip]:
    for file_name, captions in unit.images:
        if not any(c.strip() for c in captions):
            yield Skip("no_caption")
            continue
        path = os.path.join(unit.images_dir, file_name)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            yield Skip("missing_file")
            continue
        yield Example(data, list(captions), file_name)
