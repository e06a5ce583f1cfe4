"""Ingest a user's images and captions into the same TFDS/ArrayRecord format as omni_shapes.

Input: a folder of images and a JSONL file of `{"image": "rel/path.jpg", "caption": "..."}`
rows. Each image is converted to 8-bit RGB (CMYK, palette, alpha over white, 16-bit,
greyscale), resized so its shorter side is R and centre-cropped to R x R. A row that
cannot be used is counted under a reason and skipped; one bad row never stops the run.
Records carry task "caption" and empty spec fields; everything else matches omni_shapes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections import Counter
from collections.abc import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from omni_img.errors import UserError

MIN_SIDE = 16  # px: smaller images hold too little to resize into a training image
NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclasses.dataclass
class Row:
    """One usable JSONL row: where the image is and what it says."""

    line: int
    path: str
    caption: str


@dataclasses.dataclass
class IngestReport:
    """Counts of a run: rows read, rows kept, skip reasons and conversions."""

    rows: int = 0
    kept: int = 0
    skipped: Counter = dataclasses.field(default_factory=Counter)
    converted: Counter = dataclasses.field(default_factory=Counter)

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [f"kept {self.kept} of {self.rows} rows"]
        if self.skipped:
            lines.append(
                "skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items()))
            )
        if self.converted:
            lines.append(
                "converted: " + ", ".join(f"{k} {v}" for k, v in sorted(self.converted.items()))
            )
        return "\n".join(lines)


def read_rows(captions_file: str, images_dir: str, report: IngestReport) -> list[Row]:
    """Parse the JSONL; count and skip lines that are not a usable {"image", "caption"} row."""
    rows = []
    with open(captions_file, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            report.rows += 1
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                report.skipped["bad_json"] += 1
                continue
            if not isinstance(data, dict) or not isinstance(data.get("image"), str):
                report.skipped["no_image_field"] += 1
                continue
            caption = data.get("caption")
            if not isinstance(caption, str) or not caption.strip():
                report.skipped["no_caption"] += 1
                continue
            path = os.path.normpath(os.path.join(images_dir, data["image"]))
            if not os.path.isfile(path):
                report.skipped["missing_file"] += 1
                continue
            rows.append(Row(number, path, caption.strip()))
    return rows


def to_rgb(image: Image.Image) -> tuple[Image.Image, str | None]:
    """8-bit RGB version of any Pillow image, and the name of the conversion made (or None)."""
    mode = image.mode
    if mode == "RGB":
        return image, None
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit / 32-bit greyscale: stretch the actual range into 0..255.
        values = np.asarray(image, np.float64)
        lo, hi = float(values.min()), float(values.max())
        scaled = np.zeros_like(values) if hi <= lo else (values - lo) / (hi - lo) * 255
        grey = Image.fromarray(np.rint(scaled).astype(np.uint8), "L")
        return grey.convert("RGB"), "16bit"
    if mode == "P":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB"), "alpha"
    return image.convert("RGB"), mode.lower().replace(";", "")


def load_image(path: str, resolution: int) -> tuple[np.ndarray, str | None]:
    """uint8 (R, R, 3) from an image file, and its conversion; ValueError(reason) if unusable."""
    try:
        with Image.open(path) as image:
            image.load()
            if min(image.size) < MIN_SIDE:
                raise ValueError("too_small")
            rgb, conversion = to_rgb(image)
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise ValueError("not_an_image") from None
    except OSError as error:  # Pillow's "image file is truncated" and friends
        raise ValueError("truncated" if "truncated" in str(error) else "corrupt") from None
    return resize_and_crop(rgb, resolution), conversion


def resize_and_crop(image: Image.Image, resolution: int) -> np.ndarray:
    """uint8 (R, R, 3): shorter side scaled to R (Lanczos), then the centre R x R."""
    w, h = image.size
    scale = resolution / min(w, h)
    new = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
    resized = image.resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0)
    left, top = (new[0] - resolution) // 2, (new[1] - resolution) // 2
    return np.asarray(resized.crop((left, top, left + resolution, top + resolution)))


def usable_rows(
    rows: list[Row], resolution: int, report: IngestReport
) -> list[tuple[Row, str | None]]:
    """The rows whose image loads, with their conversion; the rest counted in report."""
    out = []
    for row in rows:
        try:
            _, conversion = load_image(row.path, resolution)
        except ValueError as reason:
            report.skipped[str(reason)] += 1
            continue
        if conversion:
            report.converted[conversion] += 1
        out.append((row, conversion))
    report.kept = len(out)
    return out


def records(rows: list[Row], resolution: int) -> Iterator[tuple[int, dict]]:
    """(index, record) in the omni_shapes record format, task "caption"."""
    blank = np.zeros((resolution, resolution, 3), np.uint8)
    for index, row in enumerate(rows):
        pixels, _ = load_image(row.path, resolution)
        yield (
            index,
            {
                "image": pixels,
                "source_image": blank,
                "caption": row.caption,
                "history": "[]",
                "task": "caption",
                "category": "",
                "spec": "",
                "source_spec": "",
                "edit_op": "",
                "turn": 0,
                "episode": -1,
                "index": index,
            },
        )


def ingest(
    images_dir: str,
    captions_file: str,
    name: str,
    resolution: int = 64,
    data_dir: str | None = None,
    split: str = "train",
) -> tuple[IngestReport, str | None]:
    """Write the usable rows as TFDS dataset `name` (one split) under data_dir.

    Returns the report and the dataset's directory (None if no row was usable).
    """
    from omni_img.data.reading import default_data_dir

    if not NAME.match(name):
        raise UserError(f"dataset name must be snake_case ([a-z][a-z0-9_]*), got {name!r}")
    if name == "omni_shapes":
        raise UserError("the name omni_shapes is taken by the built-in dataset")
    if not os.path.isdir(images_dir):
        raise UserError(f"image folder not found: {images_dir}")
    if not os.path.isfile(captions_file):
        raise UserError(f"captions file not found: {captions_file}")
    if not 32 <= resolution <= 256 or resolution % 4:
        raise UserError(f"resolution must be a multiple of 4 in 32..256, got {resolution}")
    report = IngestReport()
    rows = [
        row
        for row, _ in usable_rows(read_rows(captions_file, images_dir, report), resolution, report)
    ]
    if not rows:
        return report, None
    builder = _builder(name, resolution, split, rows, data_dir or default_data_dir())
    builder.download_and_prepare()
    return report, os.fspath(builder.data_dir)


def _builder(name: str, resolution: int, split: str, rows: list[Row], data_dir: str):
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import registered

    from omni_img.world.omni_shapes import deterministic_serialization, features

    class IngestedImages(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return self.dataset_info_from_configs(
                features=features(resolution),
                description=f"Images and captions ingested by omni-img at {resolution} px.",
                disable_shuffling=True,  # record i is the i-th usable row
            )

        def _download_and_prepare(self, *args, **kwargs):
            with deterministic_serialization():
                return super()._download_and_prepare(*args, **kwargs)

        def _split_generators(self, dl_manager):
            return {split: records(rows, resolution)}

        def _generate_examples(self):  # pragma: no cover - splits come from above
            raise NotImplementedError

    with registered.skip_registration():
        cls = type(name, (IngestedImages,), {"name": name, "__module__": __name__})
    return cls(data_dir=data_dir, file_format="array_record")
