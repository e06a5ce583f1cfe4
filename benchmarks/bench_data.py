"""Data speed: build time of the default omni_shapes dataset and grain read throughput.

    python benchmarks/bench_data.py [--quick] [--config 64px] [--read 20000] [--batch 64]

Builds the config into a fresh temporary data dir (the time includes rendering, TFDS
encoding and ArrayRecord writing; OMNI_IMG_BUILD_WORKERS sets the render processes),
then reads the train split with grain: sequentially and in a shuffled order, batched,
no worker processes; and runs the generator's own input pipeline (tokenized records,
task mixture, prompt bytes) on a synthetic tokenized split. Both are set against what
the tokenizer's and the generator's train steps consume (8 CPU devices, batch 32,
measured in the same run): the pipeline must never be the bottleneck. `--quick` builds
the `tiny` config. The machine is shared, so the figures are one run's, not a limit.
Prints a table last and writes benchmarks/results/data.json (machine, versions, commit).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


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


def generator_feed_rate(count: int, workdir: str) -> float:
    """Examples/s of the generator's own input pipeline: a tokenized split (synthetic
    grids, real-length captions and histories), the task mixture, the conditioning
    transform (byte tokenization, padding), batches of 32; in-process, no workers."""
    import json as json_lib

    import numpy as np

    from omni_img.config import load_config
    from omni_img.data.tokenized import TokenizedSource, write_split
    from omni_img.stages import generator
    from omni_img.training.data import make_train_iterator

    captions = {
        "compose": "a large yellow fuzzy triangle in the bottom right and a little yellow "
        "hollow circle in the lower left corner with a gray backdrop",
        "write": 'a drawing of a yellow sign with the word "tall" against a blue background',
        "edit": "make the purple diamond soft-edged",
    }
    rng = np.random.default_rng(0)

    def records():
        for index in range(2000):
            task = ("compose", "write", "edit")[index % 3]
            yield {"target_tokens": rng.integers(0, 1000, (16, 16)).astype(np.int16),
                   "source_tokens": rng.integers(0, 1000, (16, 16)).astype(np.int16),
                   "has_source": task == "edit", "index": index, "caption": captions[task],
                   "history": json_lib.dumps(["make it blue"] * (index % 3)), "task": task,
                   "spec": "{}", "edit_op": ""}  # fmt: skip

    write_split(workdir, "train", records(), grid=(16, 16), num_codes=1000)
    config = load_config(str(ROOT / "experiments/generator_tiny.py"))
    source = TokenizedSource(workdir, "train")
    _, transform = generator.model_and_transform(config, source.metadata)
    mixture = generator.mixed_source(source, config.data.task_weights, 0)
    iterator = make_train_iterator(
        mixture, global_batch_size=config.batch_size, seed=0, transform=transform,
        shuffle=False, process_index=0, process_count=1,
    )  # fmt: skip
    next(iterator)
    batches = max(1, count // config.batch_size)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * config.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="64px")
    parser.add_argument("--read", type=int, default=20_000, help="examples to read per mode")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="the tiny config, fewer reads")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    if args.quick:
        args.config, args.read = "tiny", 4_000
    sys.path.insert(0, str(ROOT))
    from benchmarks.common import emit, run_child
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
        feed = generator_feed_rate(args.read // 4, str(pathlib.Path(data_dir) / "tokens"))

    from omni_img.world.omni_shapes import build_workers

    # What the train steps consume (the main job's: 8 CPU devices), measured here too.
    step_argv = [str(ROOT / "benchmarks" / "bench_train.py"), "--quick", "--child"]
    consume = {case: run_child(step_argv + [case, "8", "data"], 8)["examples_per_s"]
               for case in ("tokenizer", "generator")}  # fmt: skip
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
        "generator_feed_examples_per_second": round(feed, 1),
        "step_examples_per_second": consume,
    }
    tokenizer_ratio = shuffled / consume["tokenizer"]
    generator_ratio = feed / consume["generator"]
    rows = [
        {"row": f"build omni_shapes/{config.name}", "metric": "s", "value": build_s,
         "note": f"{total} examples, {total / build_s:.0f} ex/s"},
        {"row": "grain read (images), shuffled", "metric": "examples/s", "value": shuffled,
         "note": f"batch {args.batch}; sequential {sequential:,.0f}"},
        {"row": "tokenizer: read rate / step rate", "metric": "x", "value": tokenizer_ratio,
         "note": f"the step takes {consume['tokenizer']:.0f} ex/s; target >= 5"},
        {"row": "generator feed (tokenized, mixed, bytes)", "metric": "examples/s",
         "value": feed, "note": "batch 32, in-process"},
        {"row": "generator: feed rate / step rate", "metric": "x", "value": generator_ratio,
         "note": f"the step takes {consume['generator']:.0f} ex/s; target >= 5"},
    ]  # fmt: skip
    emit("data", [result], rows, args.json)


if __name__ == "__main__":
    main()
