"""Compiled code kept across processes, and where a command's compile time goes.

A fresh process traces, lowers and compiles every sampling function again: for a 64 px
bundle that is most of an `omni-img generate` call. Two layers keep that work on disk
(on one machine, for one jax version, backend and device count):

- JAX's persistent compilation cache: XLA executables keyed by the lowered program, so
  a later process skips XLA's compilation but still traces and lowers (seconds here).
- `StoredJit`, around the few jitted entry points of sampling: the executable itself,
  keyed by the function's name, its static arguments, the shapes and dtypes of its
  inputs and a fingerprint of omni_img's source, so a later process skips tracing and
  lowering too. Any change to the package's code changes the key.

Both live under `$OMNI_IMG_COMPILATION_CACHE` if set (empty: both off), else
`<omni_img cache>/jax_compilation` (see `omni_img.cache`). What is stored there is
machine code this process will run: keep the directory as private as the package itself.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import pathlib
import pickle
from collections.abc import Callable
from typing import Any

from omni_img import cache

# The events jax records around each compilation (jax._src.dispatch and compiler).
_TRACE = "/jax/core/compile/jaxpr_trace_duration"
_LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT = "/jax/compilation_cache/cache_hits"
_CACHE_MISS = "/jax/compilation_cache/cache_misses"


def cache_directory() -> str | None:
    """The persistent cache's directory, or None where the user turned it off."""
    named = os.environ.get("OMNI_IMG_COMPILATION_CACHE")
    if named is not None:
        return named or None
    return os.path.join(cache.cache_dir(), "jax_compilation")


def enable_persistent_cache() -> str | None:
    """Turn on JAX's persistent compilation cache and the `StoredJit` store; returns
    their directory (None: off).

    Every executable is cached, however fast it compiled: the sampling functions are many
    small ones, and together they are what a second process would otherwise recompile.
    """
    import jax

    directory = cache_directory()
    if directory is None:
        return None
    try:
        os.makedirs(os.path.join(directory, "executables"), exist_ok=True)
    except OSError:
        return None  # an unwritable cache costs speed, never the call
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    StoredJit.directory = os.path.join(directory, "executables")
    return directory


@functools.cache
def source_fingerprint() -> str:
    """sha256 over omni_img's Python source: stored executables of other code never match."""
    digest = hashlib.sha256()
    package = pathlib.Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _platform_key() -> str:
    import jax
    import jaxlib

    devices = jax.devices()
    flags = os.environ.get("XLA_FLAGS", "")
    return f"{jax.__version__}|{jaxlib.__version__}|{devices[0].device_kind}|{len(devices)}|{flags}"


class StoredJit:
    """A jitted function whose compiled executables persist in `StoredJit.directory`.

    Called like the jitted function (static arguments by keyword). With no directory
    set, static arguments whose repr is not stable across processes (an object address),
    or inside another trace, it is the jitted function. Counts its store's `hits` and
    `misses` (class-wide).
    """

    directory: str | None = None
    hits = 0
    misses = 0

    def __init__(self, jitted: Callable, name: str, static_repr: str = ""):
        self.jitted = jitted
        self.name = name
        self.static_repr = static_repr  # what a closure bakes in (e.g. a config)
        self._loaded: dict[str, Any] = {}

    def __call__(self, *args, **static):
        if StoredJit.directory is None:
            return self.jitted(*args, **static)
        key = self._key(args, static)
        if key is None:
            return self.jitted(*args, **static)
        compiled = self._loaded.get(key) or self._load(key) or self._compile(key, args, static)
        return compiled(*args)

    def _key(self, args: tuple, static: dict) -> str | None:
        import jax

        statics = self.static_repr + repr(sorted(static.items()))
        leaves, treedef = jax.tree.flatten(args)
        if " at 0x" in statics or any(isinstance(x, jax.core.Tracer) for x in leaves):
            return None  # an unstable key, or called inside another trace (export)
        avals = [(jax.numpy.shape(x), str(jax.numpy.result_type(x)), _weak(x), _placement(x))
                 for x in leaves]  # fmt: skip
        text = "\n".join(
            [self.name, statics, str(treedef), repr(avals), source_fingerprint(), _platform_key()]
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def _path(self, key: str) -> str:
        return os.path.join(StoredJit.directory, f"{self.name}-{key[:32]}.bin")

    def _load(self, key: str):
        import jax
        from jax.experimental import serialize_executable

        try:
            with open(self._path(key), "rb") as f:
                blob, in_tree, out_tree, device_ids = pickle.load(f)
            by_id = {d.id: d for d in jax.devices()}
            devices = [by_id[i] for i in device_ids]  # the devices it was compiled for
            compiled = serialize_executable.deserialize_and_load(
                blob, in_tree, out_tree, execution_devices=devices
            )
        except Exception:  # noqa: BLE001  absent, damaged or stale: compile it anew
            return None
        StoredJit.hits += 1
        self._loaded[key] = compiled
        return compiled

    def _compile(self, key: str, args: tuple, static: dict):
        from jax.experimental import serialize_executable

        compiled = self.jitted.lower(*args, **static).compile()
        StoredJit.misses += 1
        self._loaded[key] = compiled
        path = self._path(key)
        tmp = f"{path}.{os.getpid()}.tmp"
        try:  # atomic: a concurrent reader sees the whole entry or none
            with open(tmp, "wb") as f:
                device_ids = [d.id for d in compiled.runtime_executable().local_devices()]
                pickle.dump((*serialize_executable.serialize(compiled), device_ids), f)
            os.replace(tmp, path)
        except OSError:
            pathlib.Path(tmp).unlink(missing_ok=True)  # a full disk costs speed, not the call
        return compiled


def _placement(x) -> str:
    """Where an input lives: a compiled executable takes its inputs as they were placed."""
    sharding = getattr(x, "sharding", None)
    return "host" if sharding is None else str(sharding)


def _weak(x) -> bool:
    return bool(getattr(x, "weak_type", False) or isinstance(x, int | float | bool))


@dataclasses.dataclass
class CompileStats:
    """Seconds spent tracing, lowering and compiling, and persistent-cache hits/misses,
    summed over every compilation since `watch()` (process-wide listeners)."""

    trace_s: float = 0.0
    lower_s: float = 0.0
    backend_compile_s: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0

    def watch(self) -> CompileStats:
        from jax import monitoring

        durations = {_TRACE: "trace_s", _LOWER: "lower_s", _BACKEND_COMPILE: "backend_compile_s"}
        counts = {_CACHE_HIT: "cache_hits", _CACHE_MISS: "cache_misses"}

        def on_duration(event: str, seconds: float, **_: object) -> None:
            if event in durations:
                setattr(self, durations[event], getattr(self, durations[event]) + seconds)

        def on_event(event: str, **_: object) -> None:
            if event in counts:
                setattr(self, counts[event], getattr(self, counts[event]) + 1)

        monitoring.register_event_duration_secs_listener(on_duration)
        monitoring.register_event_listener(on_event)
        return self

    def summary(self) -> str:
        """'stored executables: 3 hits, 0 misses; trace 0.1 s, lower 0.0 s, compile 0.0 s
        (persistent cache: 9 hits, 0 misses)'."""
        return (
            f"stored executables: {StoredJit.hits} hits, {StoredJit.misses} misses; "
            f"trace {self.trace_s:.2f} s, lower {self.lower_s:.2f} s, "
            f"compile {self.backend_compile_s:.2f} s "
            f"(persistent cache: {self.cache_hits} hits, {self.cache_misses} misses)"
        )
