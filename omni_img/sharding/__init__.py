"""Mesh construction, logical-axis rules, and joining multi-process runs.

The names are loaded on first use (PEP 562), so that importing `distributed` (which the
command line does to declare its flags) does not pull in JAX and Flax.
"""

import importlib

_EXPORTS = {
    "BATCH_AXES": "mesh",
    "MESH_AXES": "mesh",
    "batch_sharding": "mesh",
    "data_parallel_size": "mesh",
    "make_mesh": "mesh",
    "mesh_context": "mesh",
    "replicated": "mesh",
    "resolve_mesh_shape": "mesh",
    "unsharded": "mesh",
    "DEFAULT_RULES": "rules",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
