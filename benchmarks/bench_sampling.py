"""AR sampling speed: tokens/s with and without the KV cache, classifier-free guidance on.

    python benchmarks/bench_sampling.py [--quick] [--json OUT]

The model is experiments/generator_tiny.py's generator (width 128, 2 encoder + 4 decoder
layers, 2x2 token blocks a position, 1,000 codes) with RANDOM weights: speed does not
depend on training. Grids of 64 (8x8) and 256 (16x16) tokens, batch 1 and 8, CFG scale 3
(the decoder runs 2B rows), top-k 100. Figures are medians of timed calls after one
warm-up (compile) call. "Per-token cost" is the time of a whole sample over its tokens;
a step writes one position (4 tokens). Targets: the cached per-token cost at 256 tokens
within 1.2x of that at 64; cached >= 10x faster than recomputing the prefix at 256
tokens (batch 1). A one-token-a-position decoder (group 1) is measured too, at batch 1,
and the sequential block head (a block's 4 tokens drawn one after another: 4 head calls
a step instead of 1) at 256 tokens, batch 1, cached.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import emit  # noqa: E402


def model_for(side: int, group: int, head: str = "independent"):
    import jax
    import numpy as np

    from omni_img.config import load_config
    from omni_img.stages import generator

    config = load_config(str(ROOT / "experiments/generator_tiny.py"))
    config.model.group = group
    config.model.block_head = head
    model, transform = generator.model_and_transform(
        config, {"grid": [side, side], "num_codes": 1000}
    )
    record = generator.placeholder_record(model.cfg.grid)
    example = {k: np.asarray(v)[None] for k, v in transform(record).items()}
    params = jax.jit(model.init)(jax.random.key(0), example)["params"]
    return model, params, transform


def conditioning(transform, model, batch: int) -> dict:
    import numpy as np

    from omni_img.stages.generator import placeholder_record

    record = dict(placeholder_record(model.cfg.grid), caption="a large red striped star at the top")
    one = transform(record)
    one.pop("target_tokens")
    return {k: np.stack([v] * batch) for k, v in one.items()}


def timed(fn, repeats: int) -> list[float]:
    import jax

    jax.block_until_ready(fn())  # compile + warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    import jax

    from omni_img.sampling import ar

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    repeats, uncached_repeats = (3, 1) if args.quick else (7, 3)
    scfg = ar.SamplingConfig(temperature=1.0, top_k=100, cfg_scale=3.0)
    independent = "independent"
    cases = [(side, 2, batch, independent) for side in (8, 16) for batch in (1, 8)]
    cases += [(side, 1, 1, independent) for side in (8, 16)]
    cases += [(16, 2, 1, "sequential")]
    results = []
    for side, group, batch, head in cases:
        model, params, transform = model_for(side, group, head)
        cond = conditioning(transform, model, batch)
        for cached in (True, False) if head == independent else (True,):

            def sample(model=model, params=params, cond=cond, cached=cached):
                return ar.sample(model, params, cond, jax.random.key(1), scfg, cached=cached)

            times = timed(sample, repeats if cached else uncached_repeats)
            t = statistics.median(times)
            tokens = side * side
            results.append({
                "tokens": tokens, "group": group, "positions": model.cfg.num_positions,
                "batch": batch, "kv_cache": cached, "cfg_scale": scfg.cfg_scale, "block_head": head,
                "seconds": t, "all_seconds": times, "tokens_per_s": batch * tokens / t,
                "ms_per_token": 1e3 * t / tokens,
            })  # fmt: skip
            print(f"  {tokens} tokens, group {group} ({head}), batch {batch}, cached={cached}: "
                  f"{t:.3f} s", flush=True)  # fmt: skip

    def get(*key, head=independent):  # (tokens, group, batch, kv_cache)
        return next(
            r
            for r in results
            if (r["tokens"], r["group"], r["batch"], r["kv_cache"]) == key
            and r["block_head"] == head
        )

    rows = []
    for r in results:
        name = f"sampling {r['tokens']} tok, g{r['group']}, b{r['batch']}, " + (
            "cached" if r["kv_cache"] else "recompute"
        )
        if r["block_head"] != independent:
            name += f", {r['block_head']} head"
        rows.append({"row": name, "metric": "tokens/s", "value": r["tokens_per_s"],
                     "note": f"{r['seconds'] * 1e3:.0f} ms a sample, CFG 3"})  # fmt: skip
    for group, batches in ((2, (1, 8)), (1, (1,))):
        for batch in batches:
            flat = (
                get(256, group, batch, True)["ms_per_token"]
                / get(64, group, batch, True)["ms_per_token"]
            )
            speedup = (
                get(256, group, batch, False)["seconds"] / get(256, group, batch, True)["seconds"]
            )
            name = f"sampling g{group} b{batch}"
            rows.append({"row": name, "metric": "cached cost/token 256 vs 64", "value": flat,
                         "note": "target <= 1.2"})  # fmt: skip
            rows.append({"row": name, "metric": "cached speedup at 256", "value": speedup,
                         "note": "target >= 10"})  # fmt: skip
    sequential = get(256, 2, 1, True, head="sequential")["seconds"]
    rows.append({"row": "sampling g2 b1", "metric": "sequential / independent head at 256",
                 "value": sequential / get(256, 2, 1, True)["seconds"],
                 "note": "4 head calls a step instead of 1"})  # fmt: skip
    emit("sampling", results, rows, args.json)


if __name__ == "__main__":
    main()
