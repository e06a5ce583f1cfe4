"""Test setup: 8 fake CPU devices, set before anything imports jax."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# `omni-img generate` turns on JAX's persistent compilation cache process-wide; in-process
# CLI tests would then write every later test's executables into the user's cache.
os.environ.setdefault("OMNI_IMG_COMPILATION_CACHE", "")
# A test may never need TensorFlow; keep its import noise out of the logs if present.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def pytest_collection_modifyitems(items):
    """Under xdist (.ci/run), the tests that use the trained tiny run share one worker: the
    session fixture trains three stages, which each worker would otherwise train again."""
    import pytest

    for item in items:
        if "trained_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("trained_run"))
