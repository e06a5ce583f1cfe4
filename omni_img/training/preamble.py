"""What every trainer does before its data and model: check the config against this
host, build the mesh and the logical-axis rules, and record the config in the workdir.

One definition, so the stages cannot drift apart in what they check or where they
write (a stage that skipped `validate_config` would fail mid-trace instead of naming
the key).
"""

from __future__ import annotations

import pathlib
from typing import NamedTuple

import jax
import ml_collections
from jax.sharding import Mesh

from omni_img.config import validate_config
from omni_img.config.defaults import rules_from_config
from omni_img.config.saved import save_config
from omni_img.sharding import make_mesh


def run_devices(config: ml_collections.ConfigDict) -> list:
    """The devices a run's mesh spans: all, or the first `config.mesh_devices`."""
    return jax.devices()[: config.mesh_devices or None]


class RunStart(NamedTuple):
    mesh: Mesh
    rules: tuple
    workdir: pathlib.Path


def start_run(config: ml_collections.ConfigDict, workdir: str) -> RunStart:
    """Validate `config` for this host's devices and processes, make the workdir, save
    the config there (what `load_workdir` and a resume read back), return mesh and rules."""
    validate_config(config, jax.device_count(), jax.process_count(), workdir)
    mesh = make_mesh(config.mesh, run_devices(config))
    rules = rules_from_config(config)
    workdir_path = pathlib.Path(workdir)
    workdir_path.mkdir(parents=True, exist_ok=True)
    save_config(config, workdir_path)
    return RunStart(mesh, rules, workdir_path)
