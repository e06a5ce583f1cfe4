"""Named mesh presets for the scale experiments: a target machine x a sharding layout.

An experiment's argument picks both, `TARGET[,LAYOUT]`, e.g. `t2i_256.py:gpu32,fsdp_tp`:

| target      | devices | what                                                      |
|-------------|---------|-----------------------------------------------------------|
| `gpu8`      | 8       | one 8-GPU node                                            |
| `gpu32`     | 32      | 4 nodes x 8 GPUs                                          |
| `tpu_v5p64` | 32      | a v5p-64-like slice (32 chips; JAX sees one device a chip) |

| layout    | params, grads, optimizer state | batch split over |
|-----------|--------------------------------|------------------|
| `pure_dp` | replicated on every device     | all devices      |
| `fsdp`    | sharded inside a node (GPU) or over the slice (TPU) | data x fsdp |
| `fsdp_tp` | as fsdp, with matrices also split 2 ways (tensor)    | data x fsdp |

Across GPU nodes the layouts keep fsdp inside a node (NVLink) and data parallelism
across nodes; a TPU slice's ICI is fast enough to shard over all of it.
"""

from __future__ import annotations

import ml_collections

from omni_img.errors import UserError

TARGET_DEVICES = {"gpu8": 8, "gpu32": 32, "tpu_v5p64": 32}

LAYOUTS: dict[str, dict[str, dict[str, int]]] = {
    "gpu8": {
        "pure_dp": {"data": 8, "fsdp": 1, "tensor": 1},
        "fsdp": {"data": 1, "fsdp": 8, "tensor": 1},
        "fsdp_tp": {"data": 1, "fsdp": 4, "tensor": 2},
    },
    "gpu32": {
        "pure_dp": {"data": 32, "fsdp": 1, "tensor": 1},
        "fsdp": {"data": 4, "fsdp": 8, "tensor": 1},
        "fsdp_tp": {"data": 4, "fsdp": 4, "tensor": 2},
    },
    "tpu_v5p64": {
        "pure_dp": {"data": 32, "fsdp": 1, "tensor": 1},
        "fsdp": {"data": 1, "fsdp": 32, "tensor": 1},
        "fsdp_tp": {"data": 1, "fsdp": 16, "tensor": 2},
    },
}


def mesh_preset(arg: str | None, default: str = "gpu8,fsdp") -> tuple[str, str, dict[str, int]]:
    """(target, layout, mesh axes) for an experiment argument `TARGET[,LAYOUT]`."""
    target, _, layout = (arg or default).partition(",")
    layout = layout or default.partition(",")[2]
    if target not in LAYOUTS:
        raise UserError(f"unknown target {target!r}; targets: {', '.join(LAYOUTS)}")
    if layout not in LAYOUTS[target]:
        raise UserError(f"unknown mesh layout {layout!r}; layouts: {', '.join(LAYOUTS[target])}")
    return target, layout, dict(LAYOUTS[target][layout])


def apply_mesh_preset(config: ml_collections.ConfigDict, arg: str | None, default: str) -> None:
    """Set `config.mesh` from the preset and record which one in `config.mesh_preset`."""
    target, layout, axes = mesh_preset(arg, default)
    config.mesh = ml_collections.ConfigDict(axes)
    config.mesh_preset = f"{target},{layout}"
