"""Data speed: build time of the default omni_shapes dataset and grain read throughput.

    python benchmarks/bench_data.py [--config 64px] [--read 20000] [--batch 64]

Builds the config into a fresh temporary data dir (the time includes rendering, TFDS
encoding and ArrayRecord writing; OMNI_IMG_BUILD_WORKERS sets the render processes),
then reads the train split with grain: sequentially and in a shuffled order, batched,
no worker processes. The machine is shared, so the figures are one run's, not a limit.
Prints a table last and writes benchmarks/results/data.json (machine, versions, commit).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def machine() -> dict:
    """CPU model, cores, Python/jax/grain/tfds versions and the git commit."""
    import grain
    import jax
    import tensorflow_datasets as tfds

    cpu = "unknown"
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "grain": getattr(grain, "__version__", "unknown"),
        "tensorflow_datasets": tfds.__version__,
        "commit": commit,
    }


def read_rate(src, count: int, batch: int, shuffle: bool) -> float:
    """Examples per second read through a grain DataLoader (batched, in-process)."""
    import grain

    sampler = grain.samplers.IndexSampler(len(src), num_epochs=None, shuffle=shuffle, seed=0)
    loader = grain.DataLoader(
        data_source=src,
        sampler=sampler,
        operations=[grain.transforms.Batch(batch_size=batch, drop_remainder=True)],
        worker_count=0,
    )
    iterator = iter(loader)
    next(iterator)  # warm-up: opens the files
    start = time.perf_counter()
    for _ in range(count // batch):
        next(iterator)
    return (count // batch) * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="64px")
    parser.add_argument("--read", type=int, default=20_000, help="examples to read per mode")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    from omni_img.data import reading

    config = reading.config_named(args.config)
    with tempfile.TemporaryDirectory(prefix="omni_img_bench_") as data_dir:
        start = time.perf_counter()
        builder = reading.prepare(config, data_dir)
        build_s = time.perf_counter() - start
        total = sum(builder.info.splits[s].num_examples for s in ("train", "validation", "test"))
        size_mb = sum(f.stat().st_size for f in pathlib.Path(builder.data_dir).iterdir()) / 2**20
        src = reading.source(config, "train", data_dir)
        sequential = read_rate(src, args.read, args.batch, shuffle=False)
        shuffled = read_rate(src, args.read, args.batch, shuffle=True)

    from omni_img.data.omni_shapes import build_workers

    result = {
        "config": config.name,
        "resolution": config.resolution,
        "examples": total,
        "build_seconds": round(build_s, 2),
        "build_examples_per_second": round(total / build_s, 1),
        "build_workers": build_workers(),
        "size_mib": round(size_mb, 1),
        "read_batch": args.batch,
        "read_examples_per_second_sequential": round(sequential, 1),
        "read_examples_per_second_shuffled": round(shuffled, 1),
        "machine": machine(),
    }
    out = ROOT / "benchmarks" / "results" / "data.json"
    out.write_text(json.dumps(result, indent=1) + "\n")

    rows = [
        ("build omni_shapes/" + config.name, f"{build_s:.1f} s", f"{total} examples, "
         f"{total / build_s:.0f} ex/s, {size_mb:.0f} MiB, {result['build_workers']} workers"),
        ("grain read, sequential", f"{sequential:,.0f} ex/s", f"batch {args.batch}"),
        ("grain read, shuffled", f"{shuffled:,.0f} ex/s", f"batch {args.batch}"),
    ]  # fmt: skip
    print(f"\nmachine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
          f"jax {result['machine']['jax']}, commit {result['machine']['commit']}")  # fmt: skip
    print(f"{'measure':32s} {'value':>14s}  note")
    for name, value, note in rows:
        print(f"{name:32s} {value:>14s}  {note}")


if __name__ == "__main__":
    main()
