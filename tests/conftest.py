"""Test setup: 8 fake CPU devices, set before anything imports jax."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# `omni-img generate` turns on JAX's persistent compilation cache process-wide; in-process
# CLI tests would then write every later test's executables into the user's cache.
os.environ.setdefault("OMNI_IMG_COMPILATION_CACHE", "")
# A test may never need TensorFlow; keep its import noise out of the logs if present.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
