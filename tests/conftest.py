"""Test setup: 8 fake CPU devices, set before anything imports jax."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# `omni-img generate` turns on JAX's persistent compilation cache process-wide; in-process
# CLI tests would then write every later test's executables into the user's cache.
os.environ.setdefault("OMNI_IMG_COMPILATION_CACHE", "")
# A test may never need TensorFlow; keep its import noise out of the logs if present.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402  (after the environment above)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """The tiny trained run of tests/support/bundles.py (tests/export and tests/serve)."""
    from tests.support.bundles import train_tiny_run

    return train_tiny_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="session")
def bundle_dir(trained_run, tmp_path_factory):
    """A float32 bundle exported from `trained_run` (tests copy it before corrupting it)."""
    from omni_img.export.bundle import export_bundle, resolve_run

    rolling, generator, tokenizer = resolve_run(trained_run)
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    export_bundle(rolling, out, generator_workdir=generator, tokenizer_workdir=tokenizer)
    return out


@pytest.fixture(scope="session")
def bundle(bundle_dir):
    from omni_img.export.bundle import load_bundle

    return load_bundle(bundle_dir)


SHARED_RUN_GROUP = "trained_run"


@pytest.hookimpl(trylast=True)  # after xdist's own hook, which misses the group (below)
def pytest_collection_modifyitems(config, items):
    """Under xdist (.ci/run), the tests that use the trained tiny run share one worker: the
    session fixture trains three stages, which each worker would otherwise train again.

    `--dist loadgroup` reads a test's group from an "@group" suffix of its node id, which
    pytest-xdist's worker hook writes to `item._nodeid`. pytest 9.2 keeps the id in
    `item._id` (a NodeId) instead, so that write no longer changes the id and every group
    is silently ignored. The suffix is therefore written here, where it takes effect."""
    grouping = getattr(config.option, "loadgroup", False)  # set on xdist's workers only
    for item in items:
        if SHARED_RUN_GROUP not in getattr(item, "fixturenames", ()):
            continue
        item.add_marker(pytest.mark.xdist_group(SHARED_RUN_GROUP))
        if grouping:
            set_group_suffix(item, SHARED_RUN_GROUP)


def set_group_suffix(item, group: str) -> None:
    """Append "@group" to the item's node id, as loadgroup scheduling expects it."""
    if "@" in item.nodeid.rpartition("]")[2]:
        return  # already grouped (an xdist that writes the suffix where pytest reads it)
    grouped = f"{item.nodeid}@{group}"
    if hasattr(item, "_id"):  # pytest >= 9.2
        from _pytest.nodeid import NodeId

        item._id = NodeId.parse(grouped)
    else:
        item._nodeid = grouped
