"""AR sampling speed: tokens/s with and without the KV cache, CFG on.

    python benchmarks/bench_sampling.py [--repeats 5] [--out benchmarks/results/sampling.json]

The model is the tiny generator (``tiny_config``: dim 128, 2 encoder + 4 decoder layers,
1000-entry codebook) with RANDOM weights: speed does not depend on training. Grids 8×8
(64 tokens) and 16×16 (256 tokens), batch 1 and 8, classifier-free guidance on (so the
decoder runs 2B rows), top-k 100 sampling. Each figure is the median wall time of
``--repeats`` calls after one warm-up (compile) call. "Per-token cost" is the wall time
of one sequential decode step (time / tokens per sequence). Targets (issue 4): cached
per-token cost from 64 -> 256 tokens within 1.2x; cached >= 10x faster than recomputing
the prefix at 256 tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time

import jax
import numpy as np

from omni_img.models import generator as g
from omni_img.sampling import ar


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    dev = jax.devices()[0]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "device_kind": dev.device_kind,
        "platform": dev.platform,
        "jax": jax.__version__,
        "git_commit": commit,
    }


def conditioning(cfg: g.GeneratorConfig, batch: int) -> dict:
    rng = np.random.default_rng(0)
    text_mask = np.arange(cfg.max_text_len)[None] < 40
    return {
        "text_ids": rng.integers(8, 264, (batch, cfg.max_text_len)).astype(np.int32),
        "text_mask": np.repeat(text_mask, batch, 0),
    }


def time_calls(fn, repeats: int) -> list[float]:
    jax.block_until_ready(fn())  # compile + warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--uncached-repeats", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/sampling.json")
    args = ap.parse_args()

    scfg = ar.SamplingConfig(temperature=1.0, top_k=100, cfg_scale=3.0)
    rows = []
    for side in (8, 16):
        cfg = g.tiny_config(grid_h=side, grid_w=side, max_history_len=0, use_source=False)
        model = g.make_generator(cfg)
        init_batch = dict(conditioning(cfg, 1), target_tokens=np.zeros((1, side, side), np.int32))
        params = jax.jit(model.init)(jax.random.key(0), init_batch)["params"]
        for batch in (1, 8):
            cond = conditioning(cfg, batch)
            for cached in (True, False):
                repeats = args.repeats if cached else args.uncached_repeats
                times = time_calls(
                    lambda cond=cond, cached=cached, params=params, model=model: ar.sample(
                        model, params, cond, jax.random.key(1), scfg, cached=cached
                    ),
                    repeats,
                )
                t = statistics.median(times)
                n = cfg.num_tokens
                rows.append(
                    {
                        "tokens": n,
                        "batch": batch,
                        "kv_cache": cached,
                        "cfg": True,
                        "seconds": t,
                        "min_seconds": min(times),
                        "all_seconds": times,
                        "tokens_per_s": batch * n / t,
                        "ms_per_step": 1e3 * t / n,
                    }
                )
                print(f"  tokens={n} batch={batch} cached={cached}: {t:.3f} s", flush=True)

    def row(n, b, c):
        return next(r for r in rows if (r["tokens"], r["batch"], r["kv_cache"]) == (n, b, c))

    # Medians, and minima too: on a shared machine other jobs only ever add time.
    checks = {}
    for b in (1, 8):
        for stat in ("seconds", "min_seconds"):
            tag = "" if stat == "seconds" else "_min"
            checks[f"cached_step_cost_256_over_64_batch{b}{tag}"] = (
                row(256, b, True)[stat] / 256 / (row(64, b, True)[stat] / 64)
            )
            checks[f"cached_speedup_at_256_batch{b}{tag}"] = (
                row(256, b, False)[stat] / row(256, b, True)[stat]
            )
    result = {
        "benchmark": "ar_sampling",
        "machine": machine(),
        "model": "tiny_config (random init), dim 128, 4 decoder layers, 1000 codes, CFG scale 3",
        "sampling": vars(scfg),
        "repeats": {"cached": args.repeats, "uncached": args.uncached_repeats},
        "rows": rows,
        "checks": checks,
        "targets": {"cached_step_cost_256_over_64": "<= 1.2", "cached_speedup_at_256": ">= 10"},
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)

    print(f"\nAR sampling, {result['machine']['cpu']}, jax {jax.__version__} -> {args.out}")
    print(
        f"{'tokens':>6} {'batch':>5} {'kv cache':>8} {'seconds':>9} {'tokens/s':>10} {'ms/step':>8}"
    )
    for r in rows:
        print(
            f"{r['tokens']:>6} {r['batch']:>5} {str(r['kv_cache']):>8} {r['seconds']:>9.3f} "
            f"{r['tokens_per_s']:>10.1f} {r['ms_per_step']:>8.2f}"
        )
    for k, v in checks.items():
        print(f"{k}: {v:.2f}")


if __name__ == "__main__":
    main()
