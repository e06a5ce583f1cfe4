"""The inference pipeline from a bundle: prompt -> PNG latency, time to the first band
streamed vs not, and time per image in sequential vs rolling mode (same K steps per band).

    python benchmarks/bench_pipeline.py [--quick] [--bundle BUNDLE] [--repeats 3]

Without --bundle it exports a RANDOM-INITIALISED bundle of the main job's sizes (the
experiments/*_tiny.py configs: 64×64 px, 16×16 tokens, 1000 FSQ codes; generator width
128, 2 + 4 layers, 2×2 token blocks; rolling decoder width 128, 2 layers, N = 4 bands,
K = 8 steps, window 2, with its conv base) to a temporary directory: speed does not
depend on the weights. Batch 1, default sampling (temperature 1, no CFG). Every figure is
taken after one warm-up (compile) call, round-robin over the cases; the JSON has the best
and the median of --repeats runs (on a shared machine the best is the least load-bound).
Prints a table last; writes benchmarks/results/pipeline.json (or --json).
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
    """Export a random-init bundle of the main job's sizes to `out`; returns its manifest."""
    import flax.linen as nn
    import jax
    import numpy as np

    from omni_img.config import load_config
    from omni_img.export import bundle as bl
    from omni_img.sampling.ar import DEFAULT_SAMPLING
    from omni_img.sampling.session import edit_conditioning
    from omni_img.stages import generator as generator_stage
    from omni_img.stages import rolling as rolling_stage
    from omni_img.stages import tokenizer as tokenizer_stage
    from omni_img.stages.run import TrainedRun
    from omni_img.text.tokenizer import ByteTokenizer

    experiment = lambda name: load_config(str(ROOT / "experiments" / name))  # noqa: E731
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    tokenizer_config = experiment("tokenizer_tiny.py")
    tokenizer = tokenizer_stage.build_model(tokenizer_config)
    size = tokenizer.spec.image_size
    tokenizer_params = tokenizer.init(keys[0], np.zeros((1, size, size, 3), np.float32))
    grid = tokenizer.spec.grid_size
    metadata = {"grid": [grid, grid], "num_codes": tokenizer.spec.num_codes}
    generator, _ = generator_stage.model_and_transform(experiment("generator_tiny.py"), metadata)
    text = ByteTokenizer()
    batch = edit_conditioning(text, "x", generator.cfg, np.zeros((1, grid, grid), np.int32))
    batch["target_tokens"] = np.zeros((1, grid, grid), np.int32)
    rolling_config = experiment("rolling_tiny.py")
    rolling_cfg = rolling_stage.decoder_config(
        rolling_config, metadata, generator.cfg.dim, base_tokenizer=tokenizer.spec
    )
    run = TrainedRun(
        tokenizer=tokenizer,
        tokenizer_params=nn.unbox(tokenizer_params["params"]),
        generator=generator,
        generator_params=nn.unbox(generator.init(keys[1], batch)["params"]),
        text_tokenizer=text,
        rolling_cfg=rolling_cfg,
        rolling_params=nn.unbox(
            rolling_stage.init_decoder(
                rolling_cfg, keys[2], base_params=nn.unbox(tokenizer_params["params"])
            )
        ),
        configs={s: {"note": "random init (benchmark)"} for s in bl.STAGES},
    )
    files, platforms = bl.bundle_files(run, "float32", DEFAULT_SAMPLING)
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
    ap.add_argument("--quick", action="store_true", help="2 repeats")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    if args.quick:
        args.repeats = 2
    sys.path.insert(0, str(ROOT))
    import jax
    import numpy as np

    from benchmarks.common import emit
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
        "cases": rows,
    }
    assert np.isfinite([r["best_ms"] for r in rows]).all()
    summary = [
        {"row": f"pipeline: {r['case']}", "metric": "ms", "value": r["best_ms"],
         "note": f"best of {args.repeats}; median {r['median_ms']}"}
        for r in rows
    ]  # fmt: skip
    summary.append({"row": "pipeline: load bundle", "metric": "s", "value": load_seconds,
                    "note": f"{payload['bundle_bytes'] / 1e6:.1f} MB"})  # fmt: skip
    emit("pipeline", [payload], summary, args.json)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
