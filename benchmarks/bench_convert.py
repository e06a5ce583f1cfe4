"""Conversion speed of `omni-img data coco|webdataset|parquet|tfds`, and the feed rate
of the converted data to a 256 px tokenizer step.

    python benchmarks/bench_convert.py [--images 256] [--resolution 256] [--side 500]

Makes synthetic inputs of `--images` noisy-gradient JPEGs of about `--side` x 0.75
`--side` px (ImageNet's photos are mostly 300-500 px a side; web shards often 512) in
each format: a COCO folder, img2dataset tar shards, a Parquet file, and a mock TFDS
imagenet2012 (tfds.testing.mock_data: its images are random 5-50 px arrays, so that
row measures the TFDS read path and resizing from tiny sources, not JPEG decoding).
Converts each with 1 and with 2 processes (images/s over the whole command, process
start-up included; best of --repeats runs, the machine being shared) and then reads
the converted train split through the tokenizer's own input pipeline (grain,
shuffled, batches of 32, decoding the stored JPEGs), in images/s; and the bytes a
record takes (noisy synthetic images compress worse than photos). Prints a table and
writes benchmarks/results/convert.json (convert_quick.json with --quick). The machine
may be shared: the figures are one run's, not a limit.
"""

from __future__ import annotations

import argparse
import io
import json
import pathlib
import sys
import tarfile
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def photo(seed: int, side: int) -> bytes:
    """A JPEG with smooth structure and noise, so it compresses like a photo."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = int(side * 0.75), side
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * (c + 1) + y * seed) % 256 for c in range(3)], -1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_inputs(root: pathlib.Path, count: int, side: int) -> dict[str, list[str]]:
    """The `omni-img data` arguments of each format's input, written under root."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    photos = [photo(i, side) for i in range(count)]
    captions = [f"a synthetic photo number {i}" for i in range(count)]
    images = root / "coco" / "images"
    images.mkdir(parents=True)
    listed, notes = [], []
    for i, data in enumerate(photos):
        (images / f"{i:012d}.jpg").write_bytes(data)
        listed.append({"id": i, "file_name": f"{i:012d}.jpg"})
        notes.append({"id": i, "image_id": i, "caption": captions[i]})
    annotations = root / "coco" / "captions.json"
    annotations.write_text(json.dumps({"images": listed, "annotations": notes}))
    shards = root / "web"
    shards.mkdir()
    for shard in range(4):  # four shards, so two processes have work to share
        with tarfile.open(shards / f"{shard:05d}.tar", "w") as tar:
            for i in range(shard, count, 4):
                for name, payload in ((f"{i:09d}.jpg", photos[i]),
                                      (f"{i:09d}.txt", captions[i].encode())):  # fmt: skip
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    table = pa.table({"image": [{"bytes": p, "path": ""} for p in photos], "text": captions})
    pq.write_table(table, root / "train.parquet", row_group_size=max(1, count // 4))
    return {
        "coco": ["--images", str(images), "--annotations", str(annotations),
                 "--shard_size", str(max(1, count // 4))],
        "webdataset": ["--shards", str(shards / "*.tar")],
        "parquet": ["--files", str(root / "train.parquet")],
        "tfds": ["--dataset", "imagenet2012", "--shard_size", str(max(1, count // 4))],
    }  # fmt: skip


def convert_rate(fmt: str, args: list[str], name: str, processes: int, data_dir, resolution,
                 count: int) -> tuple[float, int]:  # fmt: skip
    """(input rows per second, records kept) of one conversion command."""
    from omni_img.cli import main as cli
    from omni_img.data import source

    command = ["data", fmt, *args, "--name", name, "--resolution", str(resolution),
               "--processes", str(processes), "--data_dir", str(data_dir)]  # fmt: skip
    start = time.perf_counter()
    if fmt == "tfds":
        import tensorflow_datasets as tfds

        with tfds.testing.mock_data(num_examples=count):
            code = cli(command)
    else:
        code = cli(command)
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{fmt} conversion failed ({code})")
    return count / seconds, len(source(name, "train", str(data_dir)))


def feed_rate(name: str, data_dir, batches: int = 8, batch: int = 32) -> float:
    """Images/s of the tokenizer's input pipeline over a converted train split."""
    from omni_img.data import source
    from omni_img.stages.tokenizer import image_example
    from omni_img.training.data import make_train_iterator

    iterator = make_train_iterator(source(name, "train", str(data_dir)), global_batch_size=batch,
                                   seed=0, transform=image_example, process_index=0,
                                   process_count=1)  # fmt: skip
    next(iterator)  # opens the files
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--side", type=int, default=500)
    parser.add_argument("--formats", default="coco,webdataset,parquet,tfds")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs")
    parser.add_argument(
        "--quick", action="store_true", help="192 images, a results file of its own"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.images = 192
    sys.path.insert(0, str(ROOT))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        inputs = make_inputs(root, args.images, args.side)
        for fmt in args.formats.split(","):
            row = {"format": fmt}
            # The mock lives in this process only: spawned processes would not see it.
            for processes in (1,) if fmt == "tfds" else (1, 2):
                rates = []
                for repeat in range(args.repeats):  # a fresh name: nothing is reused
                    name = f"{fmt}_{processes}p" + (f"_{repeat}" if repeat else "")
                    rate, kept = convert_rate(fmt, inputs[fmt], name, processes, root / "out",
                                              args.resolution, args.images)  # fmt: skip
                    rates.append(rate)
                row[f"convert_{processes}p_images_per_s"] = round(max(rates), 1)
                row["kept"] = kept
            row["feed_images_per_s"] = round(feed_rate(f"{fmt}_1p", root / "out"), 1)
            shards = (root / "out" / f"{fmt}_1p" / "train").glob("*.array_record")
            row["bytes_per_record"] = round(sum(p.stat().st_size for p in shards) / kept)
            rows.append(row)
    print(f"{args.images} images of ~{args.side} px -> {args.resolution} px JPEG records, "
          f"best of {args.repeats}")  # fmt: skip
    print("| format | convert, 1 process | 2 processes | feed to tokenizer | bytes/record |")
    print("|---|---|---|---|---|")
    for row in rows:
        two = row.get("convert_2p_images_per_s", "n/a")
        print(f"| {row['format']} | {row['convert_1p_images_per_s']} | {two} | "
              f"{row['feed_images_per_s']} | {row['bytes_per_record']} |")  # fmt: skip
    out = ROOT / "benchmarks" / "results" / ("convert_quick.json" if args.quick else "convert.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
