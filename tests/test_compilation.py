"""StoredJit: executables kept on disk, keyed so that only the same program matches."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omni_img import compilation
from omni_img.compilation import StoredJit


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setattr(StoredJit, "directory", str(tmp_path))
    monkeypatch.setattr(StoredJit, "hits", 0)
    monkeypatch.setattr(StoredJit, "misses", 0)
    return pathlib.Path(tmp_path)


def _scale(x, *, factor):
    return x * factor


def _fresh():
    """A new wrapper, as a new process would build it (nothing loaded in memory)."""
    return StoredJit(jax.jit(_scale, static_argnames="factor"), "scale")


def test_a_new_wrapper_loads_what_another_compiled(store):
    x = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(_fresh()(x, factor=2.0), x * 2)
    assert (StoredJit.hits, StoredJit.misses) == (0, 1)
    assert len(list(store.glob("scale-*.bin"))) == 1
    np.testing.assert_array_equal(_fresh()(x, factor=2.0), x * 2)
    assert (StoredJit.hits, StoredJit.misses) == (1, 1)


def test_other_statics_shapes_or_dtypes_never_match(store):
    x = np.arange(4, dtype=np.float32)
    _fresh()(x, factor=2.0)
    np.testing.assert_array_equal(_fresh()(x, factor=3.0), x * 3)
    _fresh()(np.arange(5, dtype=np.float32), factor=2.0)
    _fresh()(np.arange(4, dtype=np.int32), factor=2)
    assert StoredJit.hits == 0 and StoredJit.misses == 4
    assert len(list(store.glob("scale-*.bin"))) == 4


def test_a_damaged_entry_is_compiled_anew(store):
    x = np.arange(4, dtype=np.float32)
    _fresh()(x, factor=2.0)
    (entry,) = store.glob("scale-*.bin")
    entry.write_bytes(entry.read_bytes()[:100])
    np.testing.assert_array_equal(_fresh()(x, factor=2.0), x * 2)
    assert (StoredJit.hits, StoredJit.misses) == (0, 2)


def test_inside_a_trace_or_without_a_directory_it_is_the_jitted_function(store, monkeypatch):
    wrapped = _fresh()
    out = jax.jit(lambda x: wrapped(x, factor=2.0) + 1)(jnp.ones(3))
    np.testing.assert_array_equal(out, np.full(3, 3.0))
    assert StoredJit.misses == 0 and not list(store.glob("*.bin"))
    monkeypatch.setattr(StoredJit, "directory", None)
    np.testing.assert_array_equal(wrapped(np.ones(2), factor=2.0), [2.0, 2.0])
    assert StoredJit.misses == 0


def test_the_source_fingerprint_is_part_of_the_key(store, monkeypatch):
    x = np.arange(4, dtype=np.float32)
    _fresh()(x, factor=2.0)
    monkeypatch.setattr(compilation, "source_fingerprint", lambda: "other code")
    _fresh()(x, factor=2.0)
    assert (StoredJit.hits, StoredJit.misses) == (0, 2)


def test_cache_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("OMNI_IMG_COMPILATION_CACHE", "")
    assert compilation.cache_directory() is None
    monkeypatch.setenv("OMNI_IMG_COMPILATION_CACHE", str(tmp_path / "c"))
    assert compilation.cache_directory() == str(tmp_path / "c")
    monkeypatch.delenv("OMNI_IMG_COMPILATION_CACHE")
    monkeypatch.setenv("OMNI_IMG_CACHE", str(tmp_path / "root"))
    assert compilation.cache_directory() == str(tmp_path / "root" / "jax_compilation")


def test_an_unwritable_cache_turns_the_store_off(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("OMNI_IMG_COMPILATION_CACHE", str(blocker / "cache"))
    monkeypatch.setattr(StoredJit, "directory", None)
    assert compilation.enable_persistent_cache() is None
    assert StoredJit.directory is None
