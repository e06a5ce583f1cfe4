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


QUIET_SHARE = 0.05  # other processes' share of the CPUs above which a timing is not quiet


def cpu_seconds_of_machine() -> tuple[float, float] | None:
    """(busy, total) CPU-seconds of every CPU since boot, from /proc/stat (Linux); None
    where it cannot be read."""
    try:
        fields = pathlib.Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal (guest time is inside user)
    ticks = [int(x) for x in fields[1:9]]
    hertz = os.sysconf("SC_CLK_TCK")
    total = sum(ticks)
    return (total - ticks[3] - ticks[4]) / hertz, total / hertz


def cpu_seconds_of_this_process() -> float:
    """CPU-seconds of this process and of the children it has waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class OtherLoad:
    """What other processes took of the CPUs while a block ran: `share` is their CPU time
    over all CPUs' time (0 on a quiet machine; None where /proc/stat is missing).

        with OtherLoad() as load:
            ...timings...
        load.share, load.quiet
    """

    share: float | None = None

    def __enter__(self) -> OtherLoad:
        self._machine, self._own = cpu_seconds_of_machine(), cpu_seconds_of_this_process()
        return self

    def __exit__(self, *exc) -> None:
        machine_now = cpu_seconds_of_machine()
        if self._machine is None or machine_now is None:
            return
        busy, total = (now - then for now, then in zip(machine_now, self._machine))
        own = cpu_seconds_of_this_process() - self._own
        self.share = other_share(busy, total, own)

    @property
    def quiet(self) -> bool | None:
        return None if self.share is None else self.share <= QUIET_SHARE


def other_share(busy: float, total: float, own: float) -> float:
    """Others' share of the CPUs: the machine's busy CPU-seconds less this process's own,
    over every CPU's seconds in the window (clock ticks make small negatives: clipped)."""
    return 0.0 if total <= 0 else min(1.0, max(0.0, (busy - own) / total))


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
    widths = [max([len(c), *(len(_fmt(r.get(c))) for r in rows)]) for c in columns]
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
