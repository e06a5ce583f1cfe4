"""`omni-img generate` as a user runs it: one new process per image, cold and warm.

    python benchmarks/bench_generate.py [--bundle BUNDLE] [--warm 5]

Cold: the first process on an empty compilation cache (a fresh temporary
`OMNI_IMG_COMPILATION_CACHE`), which traces, lowers, compiles and stores every sampling
function. Warm: the next `--warm` processes on the same cache, which load the stored
executables. Each figure is the wall time of the whole process as the parent measures
it (interpreter start, imports, bundle load, sampling, PNG write, exit), with the split
that `--verbose` prints. Without --bundle a random-initialised bundle of the main job's
sizes is exported first (speed does not depend on the weights; see bench_pipeline.py).
One image, 64x64, rolling decoder, default sampling. Python's bytecode cache is on, as in
a user's shell. Writes benchmarks/results/generate.json.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, write_results  # noqa: E402

PROMPT = "a red circle on the left"
SPLIT = re.compile(r"load (\d+) ms, tokens (\d+) ms, decode (\d+) ms")
STORED = re.compile(r"stored executables: (\d+) hits, (\d+) misses")


def run_once(bundle: str, out: pathlib.Path, cache: pathlib.Path) -> dict:
    """Wall seconds of one `omni-img generate --verbose` process and its printed split."""
    env = {**os.environ, "OMNI_IMG_COMPILATION_CACHE": str(cache)}
    env.pop("XLA_FLAGS", None)  # as a user runs it: one CPU device
    # and with Python's bytecode cache (some sandboxes turn it off; the cold run writes it)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    command = [sys.executable, "-m", "omni_img.cli", "generate", "--bundle", bundle]
    command += ["--prompt", PROMPT, "--out", str(out), "--verbose"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds (user + system, all threads): less sensitive than wall time to other
    # jobs on a shared machine.
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"generate failed: {done.stderr.strip()}")
    split, stored = SPLIT.search(done.stdout), STORED.search(done.stdout)
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "load_ms": int(split[1]),
        "tokens_ms": int(split[2]),
        "decode_ms": int(split[3]),
        "stored_hits": int(stored[1]),
        "stored_misses": int(stored[2]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="bundle directory (default: a random one, main job sizes)")
    parser.add_argument("--warm", type=int, default=5, help="warm processes after the cold one")
    parser.add_argument("--json", default="generate", help="results name under benchmarks/results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="omni_img_bench_generate_") as tmp:
        tmp_path = pathlib.Path(tmp)
        bundle = args.bundle
        if bundle is None:
            from benchmarks.bench_pipeline import random_bundle

            bundle = str(tmp_path / "bundle")
            random_bundle(pathlib.Path(bundle))
        cache = tmp_path / "cache"
        load_before = os.getloadavg()[0]
        cold = run_once(bundle, tmp_path / "cold.png", cache)
        warm = [run_once(bundle, tmp_path / f"warm{i}.png", cache) for i in range(args.warm)]
        load_after = os.getloadavg()[0]
    payload = {
        "machine": machine(),
        "bundle": "given" if args.bundle else "random-initialised, main job sizes",
        "load_average_1min": [round(load_before, 2), round(load_after, 2)],
        "cold": cold,
        "warm": warm,
        "warm_median_wall_s": round(statistics.median(r["wall_s"] for r in warm), 3),
        "warm_min_wall_s": round(min(r["wall_s"] for r in warm), 3),
        "warm_median_cpu_s": round(statistics.median(r["cpu_s"] for r in warm), 3),
        "cold_over_warm": round(cold["wall_s"] / statistics.median(r["wall_s"] for r in warm), 2),
    }
    path = write_results(args.json, payload)
    print(
        f"cold {cold['wall_s']:.2f} s (load {cold['load_ms']} ms, tokens {cold['tokens_ms']} ms, "
        f"decode {cold['decode_ms']} ms); warm median {payload['warm_median_wall_s']:.2f} s, min "
        f"{payload['warm_min_wall_s']:.2f} s over "
        f"{len(warm)} processes; load average {payload['load_average_1min']}; {path}"
    )

if __name__ == "__main__":
    main()
