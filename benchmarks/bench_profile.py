"""Where a train step's time goes, op class by op class (XLA's CPU ops).

    python benchmarks/bench_profile.py [--quick] [--cases llamagen_a,llamagen_b] \
        [--devices 1] [--steps 5] [--json OUT]

Each case of bench_train.py runs in its own process on `--devices` fake CPU devices
(mesh data=N): compiled, two warm-up steps, then `--steps` steps (`--quick`: 3) under
`jax.profiler.trace`. The trace is read back (`jax.profiler.ProfileData`) and every
event named after an instruction of the compiled program is summed into the class the
compiled HLO gives that instruction: matmul (a dot, or a fusion holding one),
convolution, reduction (a reduce, or an input fusion feeding one), elementwise (loop
fusions and lone elementwise ops), copy/transpose, slicing (gather, scatter, dynamic
slices, pads, concatenates), collective, other. Figures are per step: the ms of each
class summed over threads, its share of all op time, and the step's wall time beside it
(XLA runs independent ops on several threads at once, so op time can exceed wall time;
wall time past op time is dispatch and waiting). The ten costliest instructions are
listed with their class and shape.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import re
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import emit, run_child  # noqa: E402

OP_CLASSES = ("matmul", "convolution", "reduction", "elementwise", "copy/transpose",
              "slicing", "collective", "other")  # fmt: skip
SLICING = {"gather", "scatter", "dynamic-slice", "dynamic-update-slice", "slice", "pad",
           "concatenate", "select-and-scatter", "iota", "broadcast", "reshape"}  # fmt: skip
COLLECTIVES = {"all-reduce", "all-gather", "reduce-scatter", "all-to-all",
               "collective-permute"}  # fmt: skip
STRUCTURAL = {"custom-call", "while", "conditional", "call", "tuple", "get-tuple-element",
              "parameter", "constant", "bitcast", "after-all"}  # fmt: skip
# `%name = shape opcode(operands), attributes` (the `%` is optional in newer printers)
INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s([a-z][\w\-]*)\(")
COMPUTATION = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
CALLS = re.compile(r"calls=%?([\w.\-]+)")
FUSION_KIND = re.compile(r"kind=(k\w+)")


def parse_hlo(text: str) -> tuple[dict, dict]:
    """(computation -> its opcodes, instruction -> (opcode, shape, attributes line))."""
    computations: dict[str, list[str]] = {}
    instructions: dict[str, tuple[str, str, str]] = {}
    current = None
    for line in text.splitlines():
        if line.rstrip().endswith("{") and "=" not in line.split("(")[0]:
            match = COMPUTATION.match(line)
            current = match.group(1) if match else None
            computations.setdefault(current, [])
            continue
        match = INSTRUCTION.match(line)
        if match and current is not None:
            name, shape, opcode = match.groups()
            computations[current].append(opcode)
            instructions[name] = (opcode, shape, line)
    return computations, instructions


def op_class(opcode: str, line: str, computations: dict) -> str:
    """The class of one instruction of the compiled program (see the module docstring)."""
    if opcode == "fusion":
        called = CALLS.search(line)
        inner = set(computations.get(called.group(1), ())) if called else set()
        kind = FUSION_KIND.search(line)
        if "dot" in inner:
            return "matmul"
        if "convolution" in inner:
            return "convolution"
        if "reduce" in inner or (kind and kind.group(1) == "kInput"):
            return "reduction"
        if inner and inner <= SLICING | {"parameter", "constant", "bitcast", "tuple"}:
            return "slicing"
        return "elementwise"
    if opcode == "dot":
        return "matmul"
    if opcode == "convolution":
        return "convolution"
    if opcode in ("reduce", "reduce-window"):
        return "reduction"
    if opcode in ("copy", "transpose"):
        return "copy/transpose"
    if opcode in SLICING:
        return "slicing"
    if opcode in COLLECTIVES or opcode.endswith(("-start", "-done")):
        return "collective"
    if opcode in STRUCTURAL:
        return "other"
    return "elementwise"


def op_times(trace_dir: str, instructions: dict) -> tuple[dict, int]:
    """(instruction -> summed ns, events matched) over every plane of the trace."""
    from jax.profiler import ProfileData

    paths = sorted(pathlib.Path(trace_dir).rglob("*.xplane.pb"))
    if not paths:
        raise RuntimeError(f"no trace written under {trace_dir}")
    totals: dict[str, int] = collections.Counter()
    matched = 0
    for path in paths:
        for plane in ProfileData.from_file(str(path)).planes:
            for line in plane.lines:
                for event in line.events:
                    name = event.name.split(":")[0].strip().lstrip("%")
                    if name in instructions:
                        totals[name] += event.duration_ns
                        matched += 1
    return totals, matched


def profile(case: str, steps: int) -> dict:
    import jax

    from benchmarks.bench_train import CompiledCase

    run = CompiledCase(case, "data")
    computations, instructions = parse_hlo(run.compiled.as_text())
    with run.mesh_context():
        for _ in range(2):
            run.step()
        with tempfile.TemporaryDirectory() as trace_dir:
            with jax.profiler.trace(trace_dir):
                t0 = time.perf_counter()
                for _ in range(steps):
                    run.step()
                wall = (time.perf_counter() - t0) / steps
            totals, matched = op_times(trace_dir, instructions)
    by_class = dict.fromkeys(OP_CLASSES, 0.0)
    top = []
    for name, ns in totals.items():
        opcode, shape, line = instructions[name]
        klass = op_class(opcode, line, computations)
        by_class[klass] += ns / 1e6 / steps
        top.append((ns / 1e6 / steps, name, klass, shape[:80]))
    op_ms = sum(by_class.values())
    top.sort(reverse=True)
    return {
        "case": case, "devices": jax.device_count(), "steps": steps,
        "step_wall_ms": 1e3 * wall, "op_ms": op_ms, "events_matched": matched,
        "by_class_ms": by_class,
        "top": [{"ms": ms, "name": n, "class": k, "shape": sh} for ms, n, k, sh in top[:10]],
    }  # fmt: skip


def rows_of(result: dict) -> list[dict]:
    name = f"profile {result['case']} ({result['devices']} dev)"
    rows = [{"row": name, "metric": "step wall ms", "value": result["step_wall_ms"],
             "note": f"op time {result['op_ms']:.1f} ms summed over threads"}]  # fmt: skip
    for klass, ms in result["by_class_ms"].items():
        if ms > 0:
            share = ms / result["op_ms"] if result["op_ms"] else 0.0
            rows.append({"row": name, "metric": f"{klass} ms", "value": ms,
                         "note": f"{100 * share:.0f} % of op time"})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="llamagen_a,llamagen_b")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 traced steps")
    parser.add_argument("--json", default="", help="results file (default results/profile.json)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # CASE STEPS
    args = parser.parse_args()
    if args.child:
        import json

        print(json.dumps(profile(args.child[0], int(args.child[1]))))
        return
    steps = 3 if args.quick else args.steps
    results = [
        run_child([__file__, "--child", case, str(steps)], args.devices)
        for case in args.cases.split(",")
    ]
    for result in results:
        print(f"{result['case']}: top instructions per step")
        for top in result["top"]:
            print(f"  {top['ms']:8.2f} ms  {top['class']:<14} {top['name']}  {top['shape']}")
    emit("profile", results, [row for result in results for row in rows_of(result)], args.json)


if __name__ == "__main__":
    main()
