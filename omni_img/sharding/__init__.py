"""Mesh construction and logical-axis rules."""

from omni_img.sharding.mesh import (
    BATCH_AXES,
    MESH_AXES,
    batch_sharding,
    data_parallel_size,
    make_mesh,
    mesh_context,
    replicated,
    resolve_mesh_shape,
    unsharded,
)
from omni_img.sharding.rules import DEFAULT_RULES

__all__ = [
    "BATCH_AXES",
    "DEFAULT_RULES",
    "MESH_AXES",
    "batch_sharding",
    "data_parallel_size",
    "make_mesh",
    "mesh_context",
    "replicated",
    "resolve_mesh_shape",
    "unsharded",
]
