"""The keys each stage's config may hold, and the walk that refuses any other.

An experiment file is Python: `config.model.num_res_block = 3` (one letter short) would
add a key no code reads, and the run would train with the default. So before anything
compiles, every key of a config is compared with its stage's key tree: the keys of
its stage's defaults (omni_img/config/defaults.py), model blocks included. One rule for
every stage and every depth: a key not in the tree is a one-line UserError naming the
dotted key and the closest known one.

A key tree maps each key to `None` (a value) or to the tree of a group of keys.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from omni_img.config.defaults import STAGE_DEFAULTS
from omni_img.errors import UserError
from omni_img.fields import unknown_key_message

KeyTree = dict[str, Any]  # key -> None (a value) or the KeyTree of a group

# Task names a dataset's records carry: omni_shapes' three, and the one of ingested
# image folders (omni_img/data/ingest.py); `data.task_weights` weighs them.
TASK_NAMES = ("compose", "write", "edit", "caption")


def check_keys(config: ml_collections.ConfigDict, known: KeyTree, prefix: str = "") -> None:
    """Raise UserError at the first key of `config` (depth first) that `known` lacks."""
    for key in config.keys():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in known:
            raise UserError(unknown_key_message(dotted, key, list(known), prefix))
        subtree, value = known[key], config[key]
        is_group = isinstance(value, ml_collections.ConfigDict)
        if subtree is None and is_group:
            raise UserError(f"config.{dotted} holds one value, not a group of keys")
        if subtree is not None and not is_group:
            raise UserError(
                f"config.{dotted} must be a group of keys ({', '.join(sorted(subtree))}), "
                f"got {type(value).__name__} {value!r}"
            )
        if subtree is not None:
            check_keys(value, subtree, dotted)


def check_stage_keys(config: ml_collections.ConfigDict, prefix: str = "") -> None:
    """Check a training config against the key tree of the stage it names."""
    stage = config.get("stage")  # a config of no stage at all is what this reports
    if stage not in STAGE_DEFAULTS:
        where = f"config.{prefix}.stage" if prefix else "config.stage"
        raise UserError(f"{where}={stage!r} has no trainer; stages: {sorted(STAGE_DEFAULTS)}")
    check_keys(config, stage_keys(stage), prefix)


def stage_keys(stage: str) -> KeyTree:
    """The key tree of a stage's training config (`stage` one of STAGE_DEFAULTS): the
    keys of its defaults, and the task names `data.task_weights` may weigh."""
    tree = key_tree(STAGE_DEFAULTS[stage]())
    tree["mesh_preset"] = None  # recorded by omni_img.config.meshes.apply_mesh_preset
    if "task_weights" in tree["data"]:
        tree["data"]["task_weights"] = leaves(*TASK_NAMES)
    return tree


def key_tree(config: ml_collections.ConfigDict) -> KeyTree:
    """The key tree of an existing config: its groups become subtrees."""
    return {
        key: key_tree(value) if isinstance(value, ml_collections.ConfigDict) else None
        for key, value in config.items()
    }


def leaves(*names: str) -> KeyTree:
    return dict.fromkeys(names)
