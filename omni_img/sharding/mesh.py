"""The device mesh, from config axes, and the shardings derived from it."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from omni_img.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")
# Mesh axes over which the batch is split (the data-parallel group).
BATCH_AXES = ("data", "fsdp")


def resolve_mesh_shape(axes: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Sizes for `MESH_AXES` with the single `-1` (if any) filled by the remaining devices.

    Raises UserError naming the axis when the shape cannot be built on `num_devices`.
    """
    unknown = sorted(set(axes) - set(MESH_AXES))
    if unknown:
        raise UserError(f"config.mesh has unknown axis {unknown[0]!r}; axes are {MESH_AXES}")
    sizes = {name: int(axes.get(name, 1)) for name in MESH_AXES}
    free = [name for name, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise UserError(f"config.mesh: only one axis may be -1, got {free}")
    for name, size in sizes.items():
        if size == 0 or size < -1:
            raise UserError(f"config.mesh.{name}={size}: sizes are positive or -1 (the rest)")
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if free:
        if num_devices % fixed:
            raise UserError(
                f"config.mesh: fixed axes multiply to {fixed}, which does not divide the "
                f"{num_devices} devices available"
            )
        sizes[free[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise UserError(
            f"config.mesh {sizes} needs {fixed} devices but {num_devices} are available "
            "(set one axis to -1 to use the rest)"
        )
    return sizes


def make_mesh(axes: Mapping[str, int], devices: list | None = None) -> Mesh:
    """A Mesh over `devices` (default: all) with axes ('data', 'fsdp', 'tensor')."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = resolve_mesh_shape(axes, len(devices))
    grid = np.asarray(devices).reshape([sizes[name] for name in MESH_AXES])
    return Mesh(grid, MESH_AXES)


def data_parallel_size(mesh: Mesh) -> int:
    """How many ways the global batch is split."""
    return math.prod(mesh.shape[name] for name in BATCH_AXES)


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
    """Leading axis split over the data-parallel axes, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


@contextlib.contextmanager
def unsharded() -> Iterator[None]:
    """No logical-axis rules: the models' sharding constraints become no-ops.

    For work on host copies of the params inside a training run's mesh context
    (evaluations and sample grids between steps), where a constraint would ask arrays
    that live on one device to be laid out over the mesh.
    """
    with nn.logical_axis_rules(()):
        yield


@contextlib.contextmanager
def mesh_context(mesh: Mesh, rules) -> Iterator[None]:
    """Trace and run under `mesh` with the logical-axis `rules` active.

    Model code calls `nn.with_logical_constraint`, which only constrains when a
    mesh and rules are in context; outside it is a no-op.
    """
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield
