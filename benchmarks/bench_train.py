"""Tokenizer train step: examples/s and MFU on 1 and 8 (fake CPU) devices; checkpoint costs.

    python benchmarks/bench_train.py [--steps 10] [--batch 32]

Each device count runs in its own process (the device count is fixed at jax import).
FLOPs per step come from XLA's cost analysis of the compiled step; the peak is a
measured 2048^2 fp32 matmul in the same process. The checkpoint rows time, on 1
device: the part of an async save that blocks the loop, the whole save, restore, bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def measure(devices: int, steps: int, batch: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import jax
    import numpy as np

    from benchmarks.common import machine, matmul_peak_flops, median_seconds
    from omni_img.config import load_config
    from omni_img.config.defaults import rules_from_config
    from omni_img.sharding import make_mesh, mesh_context
    from omni_img.trainers import tokenizer
    from omni_img.training.data import batch_shardings, to_global_batch
    from omni_img.training.fit import abstract_train_state
    from omni_img.training.state import create_sharded_state
    from omni_img.training.step import jit_train_step

    config = load_config(str(ROOT / "experiments/tokenizer_tiny.py"))
    config.batch_size = batch
    mesh, rules = make_mesh(config.mesh), rules_from_config(config)
    model = tokenizer.build_model(config)
    init = tokenizer._init_fn(model, config)
    _, shardings, tx, schedule = abstract_train_state(config, init, mesh, rules)
    size = config.model.image_size
    rng = np.random.default_rng(0)
    host = {"image": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)}
    loss_fn = lambda p, b, r: tokenizer.tokenizer_loss(p, b, r, model=model,  # noqa: E731
                                                       loss_weights=config.loss)
    step = jit_train_step(loss_fn, tx, schedule, config, mesh, shardings,
                          batch_shardings(host, mesh))
    state = create_sharded_state(init, tx, mesh, rules, 0)
    data = to_global_batch(host, mesh)
    with mesh_context(mesh, rules):
        t0 = time.perf_counter()
        compiled = step.lower(state, data).compile()
        compile_s = time.perf_counter() - t0
        # XLA reports the FLOPs of one device's program; the step's total is devices x that.
        flops = float(compiled.cost_analysis().get("flops", 0.0)) * devices
        holder = {"state": state}

        def one_step():
            holder["state"], metrics = compiled(holder["state"], data)
            jax.block_until_ready(metrics["loss"])

        step_s = median_seconds(one_step, steps, warmup=2)
    peak = matmul_peak_flops()
    result = {
        "devices": devices,
        "batch": batch,
        "compile_s": compile_s,
        "step_s": step_s,
        "examples_per_s": batch / step_s,
        "flops_per_step_xla": flops,
        "peak_flops_measured": peak,
        "mfu": flops / step_s / peak,
        "machine": machine(),
    }
    if devices == 1:
        result.update(checkpoint_costs(holder["state"], config, step_s))
    return result


def checkpoint_costs(state, config, step_s) -> dict:
    import jax

    from omni_img.training.checkpoint import Checkpointer

    with tempfile.TemporaryDirectory() as workdir:
        checkpointer = Checkpointer(workdir, config.checkpoint)
        checkpointer.save(1, state)  # the first save also sets Orbax up: not timed
        checkpointer.wait()
        t0 = time.perf_counter()
        checkpointer.save(2, state)
        blocked = time.perf_counter() - t0
        checkpointer.wait()
        total = time.perf_counter() - t0
        step_dir = pathlib.Path(workdir) / "checkpoints" / "2"
        size = sum(p.stat().st_size for p in step_dir.rglob("*") if p.is_file())
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
        )
        t0 = time.perf_counter()
        jax.block_until_ready(checkpointer.restore(abstract, step=2))
        restore = time.perf_counter() - t0
        checkpointer.close()
    return {
        "checkpoint_blocked_s": blocked,
        "checkpoint_blocked_fraction_of_step": blocked / step_s,
        "checkpoint_save_total_s": total,
        "checkpoint_restore_s": restore,
        "checkpoint_bytes": size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--devices", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.devices:  # child process: measure and print JSON
        print(json.dumps(measure(args.devices, args.steps, args.batch)))
        return
    sys.path.insert(0, str(ROOT))
    from benchmarks.common import print_table, write_results

    rows = []
    for devices in (1, 8):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
               "JAX_PLATFORMS": "cpu"}  # fmt: skip
        out = subprocess.run(
            [sys.executable, __file__, "--devices", str(devices), "--steps", str(args.steps),
             "--batch", str(args.batch)],
            env=env, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        rows.append(json.loads(out.strip().splitlines()[-1]))
    path = write_results("train_tokenizer", {"rows": rows})
    print_table(rows, ["devices", "batch", "compile_s", "step_s", "examples_per_s",
                       "flops_per_step_xla", "peak_flops_measured", "mfu"])  # fmt: skip
    ckpt = rows[0]
    print(f"checkpoint: blocked {ckpt['checkpoint_blocked_s'] * 1e3:.1f} ms "
          f"({100 * ckpt['checkpoint_blocked_fraction_of_step']:.1f} % of a step), "
          f"save {ckpt['checkpoint_save_total_s']:.2f} s, restore "
          f"{ckpt['checkpoint_restore_s']:.2f} s, {ckpt['checkpoint_bytes'] / 1e6:.2f} MB")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
