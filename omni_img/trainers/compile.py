"""`omni-img compile`: compile a stage's train step ahead of time for a target mesh.

    omni-img compile --config experiments/t2i_256.py:gpu8,fsdp [--topology cpu:8] \
        [--config.key=value ...] [--json OUT.json]

Lowers and compiles exactly the step `omni-img train` would run, from shapes only
(no parameters, optimizer state or data are ever allocated), and prints what a launch
needs to know before it queues for hours: the parameter count and bytes (total and
per device), XLA's per-device memory estimate, the FLOPs of one step from XLA's cost
analysis, and every collective in the compiled HLO (an all-gather you did not plan
for shows here).

`--topology` picks the devices: `cpu:N` (N fake CPU devices on this host: the default,
with N the mesh's device count) or `tpu:NAME` (a TPU topology such as `tpu:v5p:4x4x2`,
through `jax.experimental.topologies`; needs libtpu). On fake CPU devices the memory
figures are XLA:CPU's for the same partitioned program: what each device holds is
exact (params, optimizer state, batch), temporaries are close to but not the GPU's.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import pathlib
import re
import time

from omni_img.errors import UserError
from omni_img.sharding.distributed import split_cpu

ACCEPTS_CONFIG_OVERRIDES = True

COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
# `%name = f32[8,128]{1,0} all-gather(...)`, `(f32[..], f32[..]) all-reduce-start(...)`
_HLO_OP = re.compile(
    r"=\s*(?P<shape>\(.*?\)|[a-z0-9]+\[[0-9,]*\](?:\{[^}]*\})?)\s+"
    r"(?P<op>" + "|".join(COLLECTIVES) + r")(?P<start>-start)?\("
)
_ARRAY = re.compile(r"(?P<dtype>[a-z]+[0-9]*)\[(?P<dims>[0-9,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2,
          "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="experiments/NAME.py[:arg]")
    parser.add_argument(
        "--topology", default="", help="cpu:N (fake CPU devices) or tpu:NAME (default: cpu:mesh)"
    )
    parser.add_argument("--json", default="", help="also write the report to this file")
    parser.epilog = "Any config key can be overridden: --config.batch_size=64"


def collective_summary(hlo_text: str) -> dict[str, dict[str, int]]:
    """{op: {"count", "bytes"}} of the collectives in an HLO module's text (result bytes
    per device; an async `-start` counts once, its `-done` not at all)."""
    summary: dict[str, dict[str, int]] = collections.defaultdict(lambda: {"count": 0, "bytes": 0})
    for match in _HLO_OP.finditer(hlo_text):
        shapes = _ARRAY.findall(match["shape"])
        if match["start"] and len(shapes) > 1:
            shapes = shapes[len(shapes) // 2 :]  # (operands..., results...): the results
        entry = summary[match["op"]]
        entry["count"] += 1
        entry["bytes"] += sum(
            _BYTES.get(dtype, 4) * math.prod(int(d) for d in dims.split(",") if d)
            for dtype, dims in shapes
        )
    return dict(summary)


def _mesh_devices(config) -> int | None:
    sizes = [int(config.mesh[name]) for name in ("data", "fsdp", "tensor")]
    return None if -1 in sizes else math.prod(sizes)


def _devices(topology: str, config):
    """The devices to compile for (fake CPU ones are made before JAX starts)."""
    kind, _, name = topology.partition(":")
    if kind in ("", "cpu"):
        count = int(name) if name else _mesh_devices(config)
        if count is not None:
            split_cpu(count)
        import jax

        devices = jax.devices("cpu")
        if count is not None and len(devices) != count:
            raise UserError(
                f"--topology cpu:{count} but this process already has {len(devices)} CPU "
                "devices (XLA_FLAGS fixes the count when JAX starts)"
            )
        return devices
    if kind == "tpu":
        from jax.experimental import topologies

        try:
            return topologies.get_topology_desc(name, "tpu").devices
        except Exception as error:  # no libtpu, or an unknown topology name
            raise UserError(f"cannot build TPU topology {name!r}: {error}") from None
    raise UserError(f"unknown --topology {topology!r}: use cpu:N or tpu:NAME")


def stage_step(config):
    """The StageStep `omni-img train` would build for this config, without its data."""
    from omni_img.trainers.commands import TRAINERS

    stage = config.get("stage")
    if stage not in TRAINERS:
        raise UserError(f"config.stage={stage!r} has no trainer; stages: {sorted(TRAINERS)}")
    if stage == "tokenizer":
        from omni_img.stages import tokenizer

        return tokenizer.train_step_parts(config)
    from omni_img.stages import generator

    if stage == "generator":
        return generator.train_step_parts(config, _token_metadata(config))
    from omni_img.config.saved import load_saved_config
    from omni_img.stages import rolling

    # The generator's config gives E's shape, the tokenizer's the conv base: their
    # workdirs need a saved config.json, not a trained checkpoint.
    generator_config = load_saved_config(config.generator_workdir)
    metadata = _token_metadata(config)
    model, _ = generator.model_and_transform(generator_config, metadata)
    if metadata is None:
        metadata = {"grid": list(model.cfg.grid), "num_codes": model.cfg.image_vocab_size}
    return rolling.train_step_parts(config, metadata, model.cfg)


def _token_metadata(config) -> dict | None:
    """The tokenized train split's metadata, or None if there is none (a preset)."""
    directory = config.data.tokenized_dir
    path = pathlib.Path(directory) / f"{config.data.train_split}.json"
    return json.loads(path.read_text()) if directory and path.is_file() else None


def compile_report(config, devices) -> dict:
    """Compile the config's train step on `devices`; return what the command prints."""
    import jax

    from omni_img.config import validate_config
    from omni_img.config.defaults import rules_from_config
    from omni_img.models.generator import count_params
    from omni_img.sharding import make_mesh
    from omni_img.training.fit import abstract_train_state, compile_train_step

    validate_config(config, len(devices), 1)
    mesh = make_mesh(config.mesh, devices)
    rules = rules_from_config(config)
    stage = stage_step(config)
    abstract, shardings, _, _ = abstract_train_state(config, stage.init_params, mesh, rules)
    params = jax.tree.leaves(abstract.params)
    param_bytes = sum(x.size * x.dtype.itemsize for x in params)
    per_device_param_bytes = sum(
        math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize
        for x, s in zip(params, jax.tree.leaves(shardings.params), strict=True)
    )
    started = time.perf_counter()
    compiled = compile_train_step(config, stage, mesh, rules)
    compile_seconds = time.perf_counter() - started
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis() or {}
    per_device = {
        name: int(getattr(memory, f"{name}_size_in_bytes", 0))
        for name in ("argument", "output", "alias", "temp", "generated_code")
    }
    # Live at once: inputs, outputs not aliased to (donated) inputs, and temporaries.
    per_device["peak_estimate"] = (
        per_device["argument"] + per_device["output"] - per_device["alias"] + per_device["temp"]
    )
    return {
        "stage": config.stage,
        "devices": len(devices),
        "device_kind": devices[0].device_kind,
        "mesh": {name: int(size) for name, size in mesh.shape.items()},
        "batch_size": int(config.batch_size),
        "parameters": int(count_params(abstract.params)),
        "parameter_bytes": int(param_bytes),
        "parameter_bytes_per_device": int(per_device_param_bytes),
        "memory_bytes_per_device": per_device,
        "flops_per_device": float(cost.get("flops", 0.0)),
        "bytes_accessed_per_device": float(cost.get("bytes accessed", 0.0)),
        "collectives": collective_summary(compiled.as_text()),
        "compile_seconds": round(compile_seconds, 2),
    }


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def format_report(report: dict) -> str:
    mem = report["memory_bytes_per_device"]
    params_line = (
        f"{report['parameters'] / 1e6:.2f} M, {_size(report['parameter_bytes'])} "
        f"(per device {_size(report['parameter_bytes_per_device'])})"
    )
    memory_line = (
        f"peak ~{_size(mem['peak_estimate'])}: arguments {_size(mem['argument'])}, "
        f"outputs {_size(mem['output'])} ({_size(mem['alias'])} aliased to donated inputs), "
        f"temporaries {_size(mem['temp'])}, code {_size(mem['generated_code'])}"
    )
    flops = report["flops_per_device"]
    flops_line = (
        f"{flops / 1e9:.2f} GFLOP per device, "
        f"{flops * report['devices'] / 1e9:.2f} GFLOP in all (XLA cost analysis)"
    )
    collectives = ", ".join(
        f"{op} x{entry['count']} ({_size(entry['bytes'])})"
        for op, entry in sorted(report["collectives"].items())
    )
    collectives = f"{collectives} (result bytes per device)" if collectives else "none"
    return "\n".join(
        [
            f"{report['stage']} train step on {report['devices']} x {report['device_kind']}, "
            f"mesh {report['mesh']}, batch {report['batch_size']}",
            f"  parameters       {params_line}",
            f"  memory / device  {memory_line}",
            f"  FLOPs / step     {flops_line}",
            f"  collectives      {collectives}",
            f"  compiled in      {report['compile_seconds']:.1f} s",
        ]
    )


def main(args: argparse.Namespace) -> int:
    from omni_img.config import load_config

    config = load_config(args.config, args.overrides)
    devices = _devices(args.topology, config)
    report = compile_report(config, devices)
    report["config"] = args.config
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0
