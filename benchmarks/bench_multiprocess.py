"""The tiny generator's train step in 2 processes x 4 CPU devices, against 1 process x 8.

    python benchmarks/bench_multiprocess.py [--quick] [--json OUT]

The two processes are joined through launch/local_multiprocess.sh (a local coordinator,
gloo collectives): the way a multi-host run works, on one machine. Same global batch
(32), same mesh shape (data=8); the difference is what crossing a process boundary costs
(gradients all-reduced over gloo instead of in one process). Step time: median of timed
steps after two warm-up steps, on process 0, whose clock all steps share (they are
collective).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import emit, run_child  # noqa: E402


def child(steps: int) -> None:
    from omni_img.sharding import distributed

    distributed.initialize(distributed.detect())
    import jax

    from benchmarks.bench_train import measure

    result = measure("generator", jax.device_count(), "data", steps)
    result["processes"] = jax.process_count()
    if jax.process_index() == 0:
        print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default="")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = 3 if args.quick else 10
    if args.child:
        child(steps)
        return
    launcher = ROOT / "launch" / "local_multiprocess.sh"
    command = [str(launcher), "2", "4", "--", sys.executable, __file__, "--child"]
    command += ["--quick"] * args.quick
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNI_IMG_")}
    t0 = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"2-process run failed:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    line = next(x for x in done.stdout.splitlines() if "RESULT " in x)
    two = json.loads(line.split("RESULT ", 1)[1])
    two["wall_s"] = time.perf_counter() - t0
    one_argv = [str(ROOT / "benchmarks" / "bench_train.py"), "--child", "generator", "8", "data"]
    one = run_child(one_argv + ["--quick"] * args.quick, 8)
    one["processes"] = 1
    rows = []
    for r in (one, two):
        name = f"generator step, {r['processes']} process(es) x {8 // r['processes']} devices"
        collectives = ", ".join(f"{op} x{c['count']}" for op, c in sorted(r["collectives"].items()))
        rows.append({"row": name, "metric": "step ms", "value": 1e3 * r["step_s"],
                     "note": collectives})  # fmt: skip
    ratio = two["step_s"] / one["step_s"]
    rows.append({"row": "2 processes vs 1", "metric": "step time ratio", "value": ratio,
                 "note": "same global batch and mesh"})  # fmt: skip
    emit("multiprocess", [one, two], rows, args.json)


if __name__ == "__main__":
    main()
