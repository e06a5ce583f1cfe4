"""Helpers shared by the benchmark scripts: the machine, the matmul peak, timing, results."""

from __future__ import annotations

import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def machine() -> dict:
    """CPU model, cores, device kind and count, jax/flax versions, git commit."""
    import flax
    import jax

    cpu = platform.processor()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=pathlib.Path(__file__).resolve().parent,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    devices = jax.devices()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "git_commit": commit,
    }


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of `fn()` (which must block until its work is done)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak_flops(size: int = 2048, dtype: str = "float32", repeats: int = 5) -> float:
    """Measured FLOP/s of one size x size matmul on the default device: the MFU denominator."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((size, size), dtype)
    matmul = jax.jit(lambda x: x @ x)
    seconds = median_seconds(lambda: matmul(a).block_until_ready(), repeats)
    return 2.0 * size**3 / seconds


def write_results(name: str, payload: dict) -> pathlib.Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in rows:
        print("  ".join(_fmt(row.get(c)).ljust(w) for c, w in zip(columns, widths)))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def run_child(argv: list[str], devices: int) -> dict:
    """Run `python ARGV` on `devices` fake CPU devices; its last stdout line is JSON."""
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
    }
    done = subprocess.run(
        [sys.executable, *argv], env=env, capture_output=True, text=True, cwd=ROOT
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def emit(name: str, results: list[dict], rows: list[dict], json_path: str = "") -> pathlib.Path:
    """Write {machine, results, rows} as JSON and print the rows as a table (last).

    `rows` are the summary lines {row, metric, value, note} that benchmarks/run.py
    collects from every script; `results` the full measurements behind them.
    """
    payload = {"benchmark": name, "machine": machine(), "results": results, "rows": rows}
    path = pathlib.Path(json_path) if json_path else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    print_table(rows, ["row", "metric", "value", "note"])
    print(f"wrote {path}")
    return path
