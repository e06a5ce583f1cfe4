"""Train-step speed of every stage: examples/s, tokens/s, FLOPs, MFU, memory, collectives;
scaling over 1/2/4/8 devices; checkpoint costs.

    python benchmarks/bench_train.py [--quick] [--cases tokenizer,generator,...] [--json OUT]

Cases, each run in its own process (the device count is fixed when JAX starts):
- `tokenizer`, `generator`, `rolling`: the tiny CPU configs of the stages, batch 32, on
  8 fake CPU devices (how the main job runs them), and on 1 (full run);
- the generator on 1, 2, 4 and 8 devices with mesh data=N, and with fsdp=N: scaling;
- `generator_50m`: the generator at ~50M parameters (width 512, 2 + 12 layers, batch 8);
- `generator_g1`, `generator_bf16`, `generator_remat` (full run): the tiny generator with
  one change each (one token a position; bf16 compute; rematerialised blocks);
- `llamagen_a`, `llamagen_b` (run by bench_llamagen.py): the class-conditional decoder at
  the two sizes of the comparison with LlamaGen's eager PyTorch GPT: (a) width 256, 4
  layers, 4 heads, vocab 1024, 64 tokens, batch 32; (b) 512, 8, 8, 4096, 256, batch 8.

FLOPs per step are XLA's cost analysis of the compiled step (the per-device program
times the device count); the MFU denominator is a 2048^2 fp32 matmul measured in the same
process. Step time is the median of timed steps after two warm-up steps; compile time is
reported apart. Memory is XLA's per-device estimate (arguments + outputs not aliased to
donated inputs + temporaries). The checkpoint rows time, on the case's own state, with
the device snapshot (`checkpoint.device_snapshot`, the default) and without, back to
back: the part of an async save that blocks the loop, the step run while the save is
written, the whole save, a restore, and the bytes.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import emit, run_child  # noqa: E402

# The generator's token space when no tokenized data is given: tokenizer_tiny's grid.
TINY_TOKENS = ["--config.data.tokenized_dir=", "--config.model.grid_h=16",
               "--config.model.grid_w=16", "--config.model.image_vocab_size=1000"]
# case -> (experiment, overrides)
CASES = {
    "tokenizer": ("tokenizer_tiny.py", []),
    "generator": ("generator_tiny.py", TINY_TOKENS),
    "rolling": ("rolling_tiny.py", []),
    # One change each against `generator`, for docs/performance.md: one token an encoder
    # and a decoder position (224 prompt bytes and 128 history bytes, one a position; word
    # alignment is a no-op at one byte a position); bf16 compute; rematerialised blocks.
    "generator_g1": ("generator_tiny.py", [*TINY_TOKENS, "--config.model.group=1",
                                           "--config.model.text_group=1",
                                           "--config.model.max_text_len=224",
                                           "--config.model.max_history_len=128"]),
    "generator_bf16": ("generator_tiny.py", [*TINY_TOKENS, "--config.compute_dtype=bfloat16"]),
    "generator_remat": ("generator_tiny.py", [*TINY_TOKENS, "--config.remat=true"]),
    "generator_50m": ("generator_tiny.py", [*TINY_TOKENS,
        "--config.batch_size=8", "--config.model.dim=512", "--config.model.num_heads=8",
        "--config.model.mlp_dim=1536", "--config.model.dec_layers=12",
    ]),
    "llamagen_a": ("c2i_imagenet256.py:B,gpu8,pure_dp", [
        "--config.batch_size=32", "--config.compute_dtype=float32", "--config.remat=false",
        "--config.model.dim=256", "--config.model.num_heads=4", "--config.model.dec_layers=4",
        "--config.model.mlp_dim=768", "--config.model.image_vocab_size=1024",
        "--config.model.grid_h=8", "--config.model.grid_w=8", "--config.mesh.data=-1",
    ]),
    "llamagen_b": ("c2i_imagenet256.py:B,gpu8,pure_dp", [
        "--config.batch_size=8", "--config.compute_dtype=float32", "--config.remat=false",
        "--config.model.dim=512", "--config.model.num_heads=8", "--config.model.dec_layers=8",
        "--config.model.mlp_dim=1536", "--config.model.image_vocab_size=4096",
        "--config.model.grid_h=16", "--config.model.grid_w=16", "--config.mesh.data=-1",
    ]),
}  # fmt: skip
# (case, devices, mesh): what --quick measures, and what the full run adds to it.
QUICK_RUNS = [
    ("tokenizer", 8, "data"), ("generator", 8, "data"), ("rolling", 8, "data"),
    ("generator_50m", 8, "data"),
    ("generator", 1, "data"), ("generator", 2, "data"), ("generator", 4, "data"),
    ("generator", 8, "fsdp"),
    # Each stage on one device and on one a core: XLA:CPU runs most of a device's ops on
    # one thread, so how a small CPU host is split can move a step more than any flag.
    ("tokenizer", 1, "data"), ("tokenizer", 2, "data"),
    ("rolling", 1, "data"), ("rolling", 2, "data"),
    ("llamagen_a", 1, "data"), ("llamagen_a", 2, "data"),
]  # fmt: skip
FULL_RUNS = QUICK_RUNS + [
    ("generator", 2, "fsdp"), ("generator", 4, "fsdp"),
    ("generator_g1", 8, "data"), ("generator_bf16", 8, "data"), ("generator_remat", 8, "data"),
]  # fmt: skip
QUICK_STEPS, FULL_STEPS = 3, 10


def build(experiment: str, overrides: list[str], mesh_kind: str):
    """(config, StageStep, tokens per example) for a case, on all this process's devices."""
    from omni_img.config import load_config
    from omni_img.trainers.compile import stage_step

    config = load_config(str(ROOT / "experiments" / experiment), overrides)
    axes = (-1, 1, 1) if mesh_kind == "data" else (1, -1, 1)
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = axes
    stage = stage_step(config) if config.stage != "rolling" else rolling_stage(config)
    if config.stage == "tokenizer":
        side = config.model.image_size // config.model.patch_size
        tokens = side * side
    else:
        tokens = int(stage.example_batch["target_tokens"][0].size)
    return config, stage, tokens


def rolling_stage(config):
    """The rolling decoder's step with the tiny generator's E and tokenizer's conv base,
    without trained workdirs (speed does not depend on the weights)."""
    from omni_img.config import load_config
    from omni_img.models.tokenizer import tokenizer_config_from_mapping
    from omni_img.stages import generator, rolling

    tokenizer_config = load_config(str(ROOT / "experiments/tokenizer_tiny.py"))
    generator_config = load_config(str(ROOT / "experiments/generator_tiny.py"))
    base = tokenizer_config_from_mapping(tokenizer_config.model)
    metadata = {"grid": [base.grid_size, base.grid_size], "num_codes": base.num_codes}
    model, _ = generator.model_and_transform(generator_config, metadata)
    return rolling.train_step_parts(config, metadata, model.cfg, base_tokenizer=base)


class CompiledCase:
    """A case's train step compiled on this process's devices, with a state and a
    random batch laid out for it; `step()` runs one step and waits for it."""

    def __init__(self, case: str, mesh_kind: str):
        import jax
        import numpy as np

        from omni_img.config.defaults import rules_from_config
        from omni_img.sharding import make_mesh
        from omni_img.training.data import batch_shardings, to_global_batch
        from omni_img.training.fit import abstract_train_state
        from omni_img.training.state import create_sharded_state
        from omni_img.training.step import jit_train_step

        experiment, overrides = CASES[case]
        config, stage, self.tokens = build(experiment, overrides, mesh_kind)
        mesh, rules = make_mesh(config.mesh), rules_from_config(config)
        _, shardings, tx, schedule = abstract_train_state(config, stage.init_params, mesh, rules)
        step = jit_train_step(stage.loss_fn, tx, schedule, config, mesh, shardings,
                              batch_shardings(stage.example_batch, mesh))  # fmt: skip
        self.config = config
        rng = np.random.default_rng(0)
        host = {k: _random_like(v, rng) for k, v in stage.example_batch.items()}
        if jax.process_count() > 1:  # each process feeds its own rows of the global batch
            share = self.config.batch_size // jax.process_count()
            rows = slice(jax.process_index() * share, (jax.process_index() + 1) * share)
            host = {k: v[rows] for k, v in host.items()}
        self.state = create_sharded_state(stage.init_params, tx, mesh, rules, 0)
        self.mesh, self.rules = mesh, rules
        with self.mesh_context():
            self.batch = to_global_batch(host, mesh)
            t0 = time.perf_counter()
            self.compiled = step.lower(self.state, self.batch).compile()
            self.compile_s = time.perf_counter() - t0

    def mesh_context(self):
        from omni_img.sharding import mesh_context

        return mesh_context(self.mesh, self.rules)

    def step(self) -> None:
        import jax

        self.state, metrics = self.compiled(self.state, self.batch)
        jax.block_until_ready(metrics["loss"])


def measure(case: str, devices: int, mesh_kind: str, steps: int) -> dict:
    import jax

    from benchmarks.common import machine, matmul_peak_flops, median_seconds
    from omni_img.trainers.compile import collective_summary

    run = CompiledCase(case, mesh_kind)
    config, compiled, tokens, compile_s = run.config, run.compiled, run.tokens, run.compile_s
    with run.mesh_context():
        step_s = median_seconds(run.step, steps, warmup=2)
    flops = float(compiled.cost_analysis().get("flops", 0.0)) * devices
    memory = compiled.memory_analysis()
    peak_memory = (memory.argument_size_in_bytes + memory.output_size_in_bytes
                   - memory.alias_size_in_bytes + memory.temp_size_in_bytes)  # fmt: skip
    peak = matmul_peak_flops()
    b = config.batch_size
    result = {
        "case": case, "devices": devices, "mesh": mesh_kind, "batch": b,
        "params": int(sum(x.size for x in jax.tree.leaves(run.state.params))),
        "compile_s": compile_s, "step_s": step_s, "examples_per_s": b / step_s,
        "tokens_per_s": b * tokens / step_s, "flops_per_step_xla": flops,
        "peak_flops_measured": peak, "mfu": flops / step_s / peak,
        "memory_bytes_per_device": int(peak_memory),
        "collectives": collective_summary(compiled.as_text()), "machine": machine(),
    }  # fmt: skip
    # Checkpoint costs in one process only: a multi-process save needs one shared
    # directory, and the temporary one here is per process.
    single = jax.process_count() == 1
    if single and (devices, mesh_kind) == (8, "data") and case in ("tokenizer", "generator"):
        result.update(checkpoint_costs(run, step_s))
    return result


def _random_like(example, rng):
    """A batch array of the example's shape and dtype: random pixels, ids below 250 (in
    range of every vocabulary here: bytes, codebooks, classes), masks all true."""
    import numpy as np

    example = np.asarray(example)
    if example.dtype == np.uint8:
        return rng.integers(0, 256, example.shape, dtype=np.uint8)
    if example.dtype == bool:
        return np.ones(example.shape, bool)
    if np.issubdtype(example.dtype, np.integer):
        return rng.integers(0, 250, example.shape).astype(example.dtype)
    return rng.standard_normal(example.shape).astype(example.dtype)


def checkpoint_costs(run: CompiledCase, step_s: float) -> dict:
    """An async save of the case's state with the device snapshot (the default) and
    without, back to back: the part of `save()` the loop waits for, the next step's
    time while the save runs, the whole save, a restore, the bytes."""
    import jax

    from omni_img.training.checkpoint import Checkpointer

    result = {"checkpoint_snapshot_bytes": int(sum(x.nbytes for x in jax.tree.leaves(run.state)))}
    for snapshot in (False, True):
        suffix = "" if snapshot else "_no_snapshot"
        options = run.config.checkpoint.copy_and_resolve_references()
        options.device_snapshot = snapshot
        with tempfile.TemporaryDirectory() as workdir, run.mesh_context():
            checkpointer = Checkpointer(workdir, options)
            checkpointer.save(1, run.state)  # the first save also sets Orbax up: not timed
            checkpointer.wait()
            t0 = time.perf_counter()
            checkpointer.save(2, run.state)
            blocked = time.perf_counter() - t0
            run.step()  # the loop goes on while the save is written
            during = time.perf_counter() - t0 - blocked
            checkpointer.wait()
            total = time.perf_counter() - t0
            size = sum(p.stat().st_size for p in (pathlib.Path(workdir) / "checkpoints" / "2")
                       .rglob("*") if p.is_file())  # fmt: skip
            abstract = jax.tree.map(
                lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), run.state
            )
            t0 = time.perf_counter()
            jax.block_until_ready(checkpointer.restore(abstract, step=2))
            restore = time.perf_counter() - t0
            checkpointer.close()
        result |= {
            f"checkpoint_blocked_s{suffix}": blocked,
            f"checkpoint_blocked_fraction_of_step{suffix}": blocked / step_s,
            f"checkpoint_step_during_save_s{suffix}": during,
            f"checkpoint_save_total_s{suffix}": total,
            f"checkpoint_restore_s{suffix}": restore,
            f"checkpoint_bytes{suffix}": size,
        }
    return result


def rows_of(result: dict) -> list[dict]:
    """The summary rows run.py prints for one measurement."""
    name = f"train {result['case']} ({result['devices']} dev, {result['mesh']})"
    rows = [
        (name, "examples/s", result["examples_per_s"], ""),
        (name, "tokens/s", result["tokens_per_s"], ""),
        (name, "step ms", 1e3 * result["step_s"], f"compile {result['compile_s']:.1f} s"),
        (name, "GFLOP/step (XLA)", result["flops_per_step_xla"] / 1e9, ""),
        (name, "MFU", result["mfu"], f"of {result['peak_flops_measured'] / 1e9:.0f} GFLOP/s"),
        (name, "memory MB/device", result["memory_bytes_per_device"] / 1e6, ""),
    ]
    if result["collectives"]:
        text = ", ".join(f"{op} x{c['count']}" for op, c in sorted(result["collectives"].items()))
        count = sum(c["count"] for c in result["collectives"].values())
        rows.append((name, "collectives", count, text))
    if "checkpoint_blocked_s_no_snapshot" in result:
        share = 100 * result["checkpoint_blocked_fraction_of_step_no_snapshot"]
        blocked_ms = 1e3 * result["checkpoint_blocked_s_no_snapshot"]
        during = {"snapshot": result["checkpoint_step_during_save_s"],
                  "no_snapshot": result["checkpoint_step_during_save_s_no_snapshot"]}  # fmt: skip
        rows += [
            (name, "checkpoint, no snapshot: loop blocked ms", blocked_ms,
             f"{share:.1f} % of a step"),
            (name, "checkpoint: next step ms, saving", 1e3 * during["snapshot"],
             f"no snapshot {1e3 * during['no_snapshot']:.0f} ms"),
            (name, "checkpoint: snapshot MB", result["checkpoint_snapshot_bytes"] / 1e6,
             "device memory held while a save runs"),
        ]  # fmt: skip
    if "checkpoint_blocked_s" in result:
        rows += [
            (name, "checkpoint: loop blocked ms", 1e3 * result["checkpoint_blocked_s"],
             f"{100 * result['checkpoint_blocked_fraction_of_step']:.1f} % of a step"),
            (name, "checkpoint: save s", result["checkpoint_save_total_s"],
             f"{result['checkpoint_bytes'] / 1e6:.1f} MB"),
            (name, "checkpoint: restore s", result["checkpoint_restore_s"], ""),
        ]  # fmt: skip
    return [{"row": r, "metric": m, "value": v, "note": n} for r, m, v, n in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed steps")
    parser.add_argument("--cases", default=",".join(c for c in CASES if "llamagen" not in c),
                        help="comma-separated cases")  # fmt: skip
    parser.add_argument("--json", default="", help="results file (default results/train.json)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # CASE DEVICES MESH
    args = parser.parse_args()
    steps = QUICK_STEPS if args.quick else FULL_STEPS
    if args.child:
        case, devices, mesh_kind = args.child
        print(json.dumps(measure(case, int(devices), mesh_kind, steps)))
        return
    wanted = set(args.cases.split(","))
    results = []
    for case, devices, mesh_kind in QUICK_RUNS if args.quick else FULL_RUNS:
        if case in wanted:
            child = [__file__, "--child", case, str(devices), mesh_kind]
            results.append(run_child(child + ["--quick"] * args.quick, devices))
    emit("train", results, [row for result in results for row in rows_of(result)], args.json)


if __name__ == "__main__":
    main()
