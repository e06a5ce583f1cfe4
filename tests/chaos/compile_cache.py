"""JAX's persistent compilation cache for the chaos tests that restart training many
times: every restart compiles the same programs, which on a busy 2-core machine is
most of its time. A cached executable is the one XLA compiled for the same program, so
the numbers a restart computes are unchanged (the kill test checks them bit for bit).
"""

from __future__ import annotations

import contextlib
import pathlib

import jax
from jax.experimental.compilation_cache import compilation_cache

_OPTIONS = {
    "jax_compilation_cache_dir": None,  # set to the test's directory
    "jax_persistent_cache_min_compile_time_secs": 0.0,
    "jax_persistent_cache_min_entry_size_bytes": -1,
}


def cache_environment(directory: pathlib.Path) -> dict[str, str]:
    """Environment variables that turn the cache on in a worker process."""
    values = {**_OPTIONS, "jax_compilation_cache_dir": str(directory)}
    return {name.upper(): str(value) for name, value in values.items()}


@contextlib.contextmanager
def cached_compiles(directory: pathlib.Path):
    """The cache on in this process while inside; then off again as it was."""
    values = {**_OPTIONS, "jax_compilation_cache_dir": str(directory)}
    before = {name: getattr(jax.config, name) for name in values}
    compilation_cache.reset_cache()  # the cache is set up once, at the first compile
    for name, value in values.items():
        jax.config.update(name, value)
    try:
        yield
    finally:
        for name, value in before.items():
            jax.config.update(name, value)
        compilation_cache.reset_cache()
