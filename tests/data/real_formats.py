"""Small inputs in the formats users keep their data in, made by the tests themselves:
a COCO captions folder, img2dataset tar shards, a Parquet file (each with bad rows)."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
from PIL import Image

WORDS = ("red", "green", "blue", "round", "square", "small", "large", "striped")


def jpeg_bytes(seed: int, size=(40, 48)) -> bytes:
    """A small noisy JPEG, different for every seed."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (*size, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def caption(seed: int) -> str:
    return f"a {WORDS[seed % 8]} {WORDS[(seed // 8) % 8]} thing number {seed}"


def coco_folder(root, count: int = 24):
    """images/ + captions.json in COCO's layout; image 3 has no caption, image 5 no file,
    image 7 is not an image. Every other image has two captions."""
    images = root / "images"
    images.mkdir(parents=True)
    listed, annotations = [], []
    for i in range(count):
        name = f"{i:012d}.jpg"
        listed.append({"id": 100 + i, "file_name": name, "width": 48, "height": 40})
        if i != 5:
            (images / name).write_bytes(b"not a jpeg" if i == 7 else jpeg_bytes(i))
        if i != 3:
            annotations.append({"id": 2 * i, "image_id": 100 + i, "caption": caption(i)})
            annotations.append({"id": 2 * i + 1, "image_id": 100 + i, "caption": f"photo {i}"})
    annotations_file = root / "captions_train2017.json"
    annotations_file.write_text(json.dumps({"images": listed, "annotations": annotations}))
    return images, annotations_file


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def img2dataset_shards(root, per_shard: int = 12, shards: int = 2):
    """00000.tar, 00001.tar as img2dataset writes them (KEY.jpg, KEY.txt, KEY.json);
    in the first shard sample 4's jpg is corrupt bytes and sample 6 has no caption."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard in range(shards):
        path = root / f"{shard:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(per_shard):
                seed = shard * per_shard + i
                key = f"{shard:05d}{i:04d}"
                image = jpeg_bytes(seed)
                if shard == 0 and i == 4:
                    image = image[:40] + b"\x00" * 200  # a corrupt member
                _add(tar, f"{key}.jpg", image)
                if not (shard == 0 and i == 6):
                    _add(tar, f"{key}.txt", caption(seed).encode())
                _add(tar, f"{key}.json", json.dumps({"key": key, "status": "success"}).encode())
        paths.append(path)
    return paths


def parquet_file(path, rows: int = 24, row_group_size: int = 8):
    """A Hugging Face-style Parquet file: image {bytes, path} and text; row 2 has no image
    bytes, row 9 undecodable bytes, row 11 an empty caption."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images, texts = [], []
    for i in range(rows):
        data = None if i == 2 else (b"\x89PNG garbage" if i == 9 else jpeg_bytes(i))
        images.append({"bytes": data, "path": f"{i}.jpg"})
        texts.append("" if i == 11 else caption(i))
    table = pa.table({"image": images, "text": texts})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path
