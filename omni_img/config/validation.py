"""Checks that run before anything compiles; each failure is one line naming the key."""

from __future__ import annotations

import math
import os
import pathlib

import ml_collections

from omni_img.config.schema import check_stage_keys
from omni_img.errors import UserError
from omni_img.sharding.mesh import BATCH_AXES, resolve_mesh_shape

# Keys every training config carries, with the Python type each must hold.
COMMON_SCHEMA: dict[str, type | tuple[type, ...]] = {
    "stage": str,
    "seed": int,
    "batch_size": int,
    "num_steps": int,
    "grad_accum": int,
    "ema_decay": float,
    "compute_dtype": str,
    "remat": bool,
    "log_every": int,
    "eval_every": int,
    "profile_steps": str,
    "resume_from": str,
    "init_from": str,
    "mesh.data": int,
    "mesh_devices": int,
    "mesh.fsdp": int,
    "mesh.tensor": int,
    "optim.name": str,
    "optim.lr": float,
    "optim.warmup_steps": int,
    "optim.weight_decay": float,
    "optim.clip_norm": float,
    "checkpoint.every_steps": int,
    "checkpoint.every_minutes": float,
    "checkpoint.keep": int,
    "checkpoint.keep_every": int,
    "checkpoint.async_save": bool,
    "checkpoint.replica_parallel": bool,
    "checkpoint.device_snapshot": bool,
}
COMPUTE_DTYPES = ("float32", "bfloat16")
OPTIMIZERS = ("adamw", "adam", "sgd", "muon")
NONFINITE_MODES = ("stop", "skip")


def _lookup(config: ml_collections.ConfigDict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise UserError(f"config.{dotted} is missing (every training config needs it)")
        node = node[part]
    return node


def validate_config(
    config: ml_collections.ConfigDict,
    num_devices: int,
    num_processes: int = 1,
    workdir: str | None = None,
) -> dict[str, int]:
    """Validate a training config; return the resolved mesh shape.

    Raises UserError (one line, naming the key) on the first problem found; the first
    check is that every key of the config is one its stage knows.
    """
    check_stage_keys(config)
    for dotted, expected in COMMON_SCHEMA.items():
        value = _lookup(config, dotted)
        if isinstance(value, bool) and expected in (int, float):
            raise UserError(f"config.{dotted} expects {expected.__name__}, got a bool")
        if expected is float and isinstance(value, int):
            continue
        if not isinstance(value, expected):
            name = getattr(expected, "__name__", str(expected))
            raise UserError(f"config.{dotted} expects {name}, got {type(value).__name__} {value!r}")
    if config.compute_dtype not in COMPUTE_DTYPES:
        raise UserError(
            f"config.compute_dtype={config.compute_dtype!r}; choose one of {COMPUTE_DTYPES}"
        )
    if config.optim.name not in OPTIMIZERS:
        raise UserError(f"config.optim.name={config.optim.name!r}; choose one of {OPTIMIZERS}")
    for key in ("batch_size", "num_steps", "grad_accum", "log_every"):
        if config[key] <= 0:
            raise UserError(f"config.{key}={config[key]} must be positive")
    if not 0.0 <= config.ema_decay < 1.0:
        raise UserError(f"config.ema_decay={config.ema_decay} must be in [0, 1)")
    if config.nonfinite not in NONFINITE_MODES:
        raise UserError(f"config.nonfinite={config.nonfinite!r}; choose one of {NONFINITE_MODES}")

    mesh_shape = resolve_mesh_shape(dict(config.mesh), mesh_device_count(config, num_devices))
    data_parallel = math.prod(mesh_shape[name] for name in BATCH_AXES)
    micro_batch, remainder = divmod(config.batch_size, config.grad_accum)
    if remainder:
        raise UserError(
            f"config.batch_size={config.batch_size} is not divisible by "
            f"config.grad_accum={config.grad_accum}"
        )
    if micro_batch % data_parallel:
        raise UserError(
            f"config.batch_size={config.batch_size} (micro-batch {micro_batch}) is not divisible "
            f"by the data-parallel size {data_parallel} (mesh data×fsdp = "
            f"{mesh_shape['data']}×{mesh_shape['fsdp']})"
        )
    if config.mesh_devices and num_processes > 1:
        raise UserError(
            f"config.mesh_devices={config.mesh_devices} takes the first devices of one "
            f"process; with {num_processes} processes leave it 0"
        )
    if micro_batch % num_processes:
        raise UserError(
            f"config.batch_size={config.batch_size} is not divisible by "
            f"the {num_processes} processes"
        )
    parse_profile_steps(config.profile_steps)
    if workdir is not None:
        parent = pathlib.Path(workdir).expanduser().absolute().parent
        if not parent.is_dir():
            raise UserError(f"--workdir {workdir}: parent directory {parent} does not exist")
        require_writable(pathlib.Path(workdir).expanduser().absolute())
    return mesh_shape


def mesh_device_count(config: ml_collections.ConfigDict, num_devices: int) -> int:
    """How many of the `num_devices` the run's mesh takes (`config.mesh_devices`)."""
    wanted = config.mesh_devices
    if wanted == 0:
        return num_devices
    if not 0 < wanted <= num_devices:
        raise UserError(
            f"config.mesh_devices={wanted}: choose 0 (all) or 1..{num_devices}, the devices here"
        )
    return wanted


def require_writable(workdir: pathlib.Path) -> None:
    """UserError naming the workdir (and its last checkpoint) if nothing can be written
    in it: better now than at the first save, minutes of training later."""
    target = workdir if workdir.is_dir() else workdir.parent
    probe = target / f".omni_img_write_probe_{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        checkpoints = workdir / "checkpoints"
        steps = sorted(
            int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()
        ) if checkpoints.is_dir() else []  # fmt: skip
        last = f"its last checkpoint is step {steps[-1]}, untouched" if steps else "no checkpoint"
        raise UserError(
            f"--workdir {workdir} is not writable ({error.strerror or error}); {last}"
        ) from None


def parse_profile_steps(text: str) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        first, last = (int(part) for part in text.split(","))
    except ValueError:
        raise UserError(
            f"config.profile_steps={text!r}: expected 'first,last' step numbers"
        ) from None
    if not 0 <= first <= last:
        raise UserError(f"config.profile_steps={text!r}: need 0 <= first <= last")
    return first, last
