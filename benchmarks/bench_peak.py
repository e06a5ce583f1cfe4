"""The MFU denominator: measured matmul FLOP/s of the default device, fp32 and bf16.

    python benchmarks/bench_peak.py [--quick] [--json OUT]

One jitted 2048^3 matmul (4096^3 without --quick), median of 5 timed calls after a
warm-up, on the whole host as one device. Every MFU in the suite divides by a peak
measured again inside its own process, since these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import emit, matmul_peak_flops  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    size = 2048 if args.quick else 4096
    results = [
        {"dtype": dtype, "size": size, "flops_per_s": matmul_peak_flops(size, dtype)}
        for dtype in ("float32", "bfloat16")
    ]
    rows = [
        {"row": f"peak matmul {r['dtype']}", "metric": "GFLOP/s", "value": r["flops_per_s"] / 1e9,
         "note": f"{size}^3, median of 5"}
        for r in results
    ]  # fmt: skip
    emit("peak", results, rows, args.json)


if __name__ == "__main__":
    main()
