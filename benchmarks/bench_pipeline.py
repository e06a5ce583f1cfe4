"""The inference pipeline from a bundle: prompt -> PNG latency, time to the first band
streamed vs not, and time per image in sequential vs rolling mode (same K steps per band).

    python benchmarks/bench_pipeline.py [--bundle BUNDLE] [--repeats 3]

Without --bundle it exports a RANDOM-INITIALISED bundle of the CPU-default sizes (64×64
px, 16×16 tokens, 1000 FSQ codes; generator dim 128, 2+4 layers; rolling decoder width
128, 2 layers, N = 4 bands, K = 8 steps, window 2) to a temporary directory: speed does not
depend on the weights. Batch 1, default sampling (temperature 1, no CFG). Every figure is
taken after one warm-up (compile) call, round-robin over the cases; the JSON has the best
and the median of --repeats runs (on a shared machine the best is the least load-bound).
Prints a table last; writes benchmarks/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROMPT = 'a blue sign that says "river" above a red circle'


def random_bundle(out: pathlib.Path) -> dict:
    """Export a random-init bundle of the CPU-default sizes to `out`; returns its manifest."""
    import flax.linen as nn
    import jax
    import numpy as np

    from omni_img.export import bundle as bl
    from omni_img.models.generator import make_generator
    from omni_img.models.rolling_decoder import init_rolling_decoder, rolling_decoder_config
    from omni_img.models.tokenizer import Tokenizer, TokenizerSpec
    from omni_img.sampling.ar import DEFAULT_SAMPLING
    from omni_img.sampling.session import edit_conditioning
    from omni_img.tokenizers.text import ByteTokenizer

    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    spec = TokenizerSpec(
        image_size=64, patch_size=4, widths=(16, 64), num_res_blocks=2, high_res_blocks=0
    )
    tokenizer = Tokenizer(spec)
    generator = make_generator({"grid_h": 16, "grid_w": 16, "image_vocab_size": spec.num_codes})
    text = ByteTokenizer()
    batch = edit_conditioning(text, "x", generator.cfg, np.zeros((1, 16, 16), np.int32))
    batch["target_tokens"] = np.zeros((1, 16, 16), np.int32)
    rolling_cfg = rolling_decoder_config(
        token_rows=16, token_cols=16, codebook_size=spec.num_codes, text_dim=128
    )
    stages = {
        "tokenizer": tokenizer,
        "tokenizer_params": tokenizer.init(keys[0], np.zeros((1, 64, 64, 3), np.float32))["params"],
        "generator": generator,
        "generator_params": generator.init(keys[1], batch)["params"],
        "text_tokenizer": text,
        "rolling_cfg": rolling_cfg,
        "rolling_params": init_rolling_decoder(rolling_cfg, keys[2]),
        "configs": {s: {"note": "random init (benchmark)"} for s in bl.STAGES},
    }
    stages = {k: nn.unbox(v) if k.endswith("_params") else v for k, v in stages.items()}
    files, platforms = bl.bundle_files(stages, "float32", DEFAULT_SAMPLING)
    manifest = bl.make_manifest(files, "float32", DEFAULT_SAMPLING, platforms)
    bl.write_bundle(files, manifest, out)
    return manifest


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def first_band_seconds(pipeline, decoder: str) -> tuple[float, float]:
    """(seconds to the first band, seconds to the last) of one streamed image."""
    first = last = 0.0
    for band, _, seconds in pipeline.timed_stream(PROMPT, seed=0, decoder=decoder):
        first = seconds if band == 0 else first
        last = seconds
    return first, last


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", help="an exported bundle (default: a random-init one)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import jax
    import numpy as np

    from benchmarks.common import machine, print_table, write_results
    from omni_img.export.bundle import load_bundle
    from omni_img.export.generate import provenance, write_png
    from omni_img.sampling import rolling as rolling_sampling
    from omni_img.sampling.ar import DEFAULT_SAMPLING

    tmp = tempfile.TemporaryDirectory()
    bundle_path = pathlib.Path(args.bundle or pathlib.Path(tmp.name) / "bundle")
    export_seconds = None
    if not args.bundle:
        export_seconds = timed(lambda: random_bundle(bundle_path))
    holder = {}
    load_seconds = timed(lambda: holder.setdefault("b", load_bundle(bundle_path)))
    bundle = holder["b"]
    pipe = bundle.pipeline
    png = pathlib.Path(tmp.name) / "out.png"
    cond = pipe.conditioning(PROMPT)
    tokens = pipe.sample_tokens(cond, 0)

    def to_png(decoder):
        image = pipe.generate(PROMPT, seed=0, decoder=decoder)
        text = provenance(
            prompt=PROMPT,
            seed=0,
            decoder=decoder,
            sampling=DEFAULT_SAMPLING,
            manifest=bundle.manifest,
        )
        write_png(png, image, text)

    cases = {
        "ar tokens only": lambda: pipe.sample_tokens(cond, 0),
        **{
            f"decode only: {d}": (lambda d=d: pipe.decode(tokens, cond, 0, d))
            for d in ("sequential", "rolling", "conv")
        },
        **{
            f"prompt -> PNG: {d}": (lambda d=d: to_png(d))
            for d in ("sequential", "rolling", "conv")
        },
        **{
            f"stream: {d}": (lambda d=d: first_band_seconds(pipe, d))
            for d in ("sequential", "rolling")
        },
    }
    for fn in cases.values():  # warm-up: compile everything once
        fn()
    samples: dict[str, list] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            if name.startswith("stream"):
                samples[name].append(fn())
            else:
                samples[name].append(timed(fn))

    def row(case: str, seconds: list[float]) -> dict:
        best, median = min(seconds), statistics.median(seconds)
        return {
            "case": case,
            "best_ms": round(1000 * best, 1),
            "median_ms": round(1000 * median, 1),
        }

    rows = []
    for name, values in samples.items():
        if name.startswith("stream"):
            decoder = name.split(": ")[1]
            rows.append(row(f"first band, streamed: {decoder}", [v[0] for v in values]))
            # Not streamed, the first band arrives with the whole PNG.
            whole = samples[f"prompt -> PNG: {decoder}"]
            rows.append(row(f"first band, not streamed: {decoder}", whole))
            rows.append(row(f"last band, streamed: {decoder}", [v[1] for v in values]))
        else:
            rows.append(row(name, values))
    cfg = pipe.rolling_cfg
    for row in rows:
        for mode in ("sequential", "rolling"):
            if row["case"] == f"decode only: {mode}":
                row["model_calls"] = rolling_sampling.num_model_calls(cfg, mode)
    payload = {
        "machine": machine(),
        "bundle": "given: " + bundle_path.name if args.bundle else "random-initialised weights",
        "sizes": {
            "image": list(pipe.image_size),
            "tokens": list(pipe.grid),
            "bands": cfg.num_bands,
            "steps_per_band": cfg.steps_per_band,
            "window": cfg.window,
            "batch": 1,
        },
        "device": str(jax.devices()[0]),
        "repeats": args.repeats,
        "export_seconds": None if export_seconds is None else round(export_seconds, 2),
        "load_bundle_seconds": round(load_seconds, 3),
        "bundle_bytes": int(sum(e["bytes"] for e in bundle.manifest["files"].values())),
        "rows": rows,
    }
    path = write_results("pipeline", payload)
    print(
        f"bundle: {payload['bundle']}; {cfg.image_height}x{cfg.image_width} px, tokens "
        f"{pipe.grid}, N={cfg.num_bands} K={cfg.steps_per_band} W={cfg.window}; load "
        f"{payload['load_bundle_seconds']} s; results -> {path.relative_to(ROOT)}"
    )
    assert np.isfinite([r["best_ms"] for r in rows]).all()
    print_table(rows, ["case", "best_ms", "median_ms", "model_calls"])
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
