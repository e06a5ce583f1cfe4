"""Run the benchmark suite (all of it or a chosen few), print one table, write one JSON.

    python benchmarks/run.py [--quick] [--only train,sampling] [--llamagen DIR]

Each benchmark is its own script (run them alone for their full options) and runs in its
own processes here, so device counts and compile caches never leak between rows. The
table at the end has one line per figure; benchmarks/results/run.json (or
run_quick.json with --quick) holds the same rows plus every script's full results and
the machine (CPU model, cores, device kind and count, jax/flax versions, git commit).
`--quick` shrinks repeats and sizes so the whole suite takes under 10 minutes on a
2-core CPU; the figures are then noisier, not different in kind. `--llamagen DIR` adds
the eager-PyTorch rows of LlamaGen's GPT from a checkout of its repository (not part of
this project) to the comparison (our side runs `bench_train`'s llamagen cases).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, machine, print_table  # noqa: E402

# name -> (script, extra arguments with --quick, extra arguments without)
SUITE = {
    "peak": ("bench_peak.py", [], []),
    "train": ("bench_train.py", [], []),
    "sampling": ("bench_sampling.py", [], []),
    "rolling": ("bench_rolling.py", [], []),
    "pipeline": ("bench_pipeline.py", [], []),
    "data": ("bench_data.py", [], []),
    "multiprocess": ("bench_multiprocess.py", [], []),
    "fid": ("bench_fid.py", [], []),
    "llamagen": ("bench_llamagen.py", [], []),
    "profile": ("bench_profile.py", [], []),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the < 10 minute version")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {list(SUITE)}")
    parser.add_argument("--llamagen", default="", help="a LlamaGen checkout, for its rows")
    args = parser.parse_args()
    # The LlamaGen comparison is not a row of the suite: it runs when asked for by name
    # or given a checkout.
    default = [n for n in SUITE if n != "llamagen" or args.llamagen]
    names = [n for n in (args.only.split(",") if args.only else default) if n]
    unknown = sorted(set(names) - set(SUITE))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(SUITE)}")
    suffix = "_quick" if args.quick else ""
    rows, scripts, failed = [], {}, []
    started = time.perf_counter()
    for name in names:
        script, quick_args, full_args = SUITE[name]
        out = RESULTS / f"{name}{suffix}.json"
        command = [sys.executable, str(ROOT / "benchmarks" / script), "--json", str(out)]
        command += ["--quick", *quick_args] if args.quick else full_args
        if name == "llamagen" and args.llamagen:
            command += ["--llamagen", args.llamagen]
        t0 = time.perf_counter()
        print(f"== {name}: {' '.join(command[1:])}", flush=True)
        done = subprocess.run(command, cwd=ROOT)
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            failed.append(name)
            scripts[name] = {"returncode": done.returncode, "seconds": seconds}
            continue
        payload = json.loads(out.read_text())
        scripts[name] = {"seconds": seconds, "json": str(out.relative_to(ROOT))}
        rows += [{"benchmark": name, **row} for row in payload["rows"]]
    total = time.perf_counter() - started
    summary = {"machine": machine(), "quick": args.quick, "seconds": total,
               "scripts": scripts, "rows": rows}  # fmt: skip
    path = RESULTS / f"run{suffix}.json"
    path.write_text(json.dumps(summary, indent=2, default=str))
    print()
    print_table(rows, ["benchmark", "row", "metric", "value", "note"])
    print(f"\n{len(rows)} figures from {len(names) - len(failed)} benchmarks in {total:.0f} s; "
          f"wrote {path.relative_to(ROOT)}")  # fmt: skip
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
