"""The keys each stage's config may hold, and the walk that refuses any other.

An experiment file is Python: `config.model.num_res_block = 3` (one letter short) would
add a key no code reads, and the run would train with the default. So before anything
compiles, every key of a config is compared with its stage's key tree: the shared keys
of `training_defaults()` plus what the stage's trainer and model read. One rule for
every stage and every depth: a key not in the tree is a one-line UserError naming the
dotted key and the closest known one.

A key tree maps each key to `None` (a value) or to the tree of a group of keys.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from omni_img.config.defaults import training_defaults
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
    stage = config.get("stage")
    if stage not in STAGE_KEYS:
        where = f"config.{prefix}.stage" if prefix else "config.stage"
        raise UserError(f"{where}={stage!r} has no trainer; stages: {sorted(STAGE_KEYS)}")
    check_keys(config, stage_keys(stage), prefix)


def stage_keys(stage: str) -> KeyTree:
    """The key tree of a stage's training config (`stage` one of STAGE_KEYS)."""
    tree = key_tree(training_defaults())
    tree["mesh_preset"] = None  # recorded by omni_img.config.meshes.apply_mesh_preset
    for key, extra in STAGE_KEYS[stage]().items():
        if isinstance(extra, dict) and isinstance(tree.get(key), dict):
            tree[key] = {**tree[key], **extra}
        else:
            tree[key] = extra
    return tree


def key_tree(config: ml_collections.ConfigDict) -> KeyTree:
    """The key tree of an existing config: its groups become subtrees."""
    return {
        key: key_tree(value) if isinstance(value, ml_collections.ConfigDict) else None
        for key, value in config.items()
    }


def leaves(*names: str) -> KeyTree:
    return dict.fromkeys(names)


def dataclass_keys(cls, *, without: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> KeyTree:
    """A model block's keys: the fields of its dataclass, less those the trainer sets
    itself from other keys (a value given there would be overwritten unseen)."""
    names = [field.name for field in dataclasses.fields(cls) if field.name not in without]
    return leaves(*names, *extra)


def _tokenizer_keys() -> KeyTree:
    from omni_img.models.tokenizer import TokenizerSpec

    return {
        "model": dataclass_keys(TokenizerSpec, without=("remat",)),  # remat: config.remat
        "loss": leaves("l1", "l2", "adversarial"),
        "eval": leaves("num_examples", "usage_examples", "batch_size"),
    }


def _generator_keys() -> KeyTree:
    from omni_img.models.generator import GeneratorConfig
    from omni_img.sampling.ar import SamplingConfig

    return {
        **leaves(
            "caption_dropout",
            "input_masking",
            "foreground_weight",
            "text_tokenizer",
            "text_align_words",
        ),
        "data": {"tokenized_dir": None, "task_weights": leaves(*TASK_NAMES)},
        # dtype and remat come from config.compute_dtype and config.remat
        "model": dataclass_keys(GeneratorConfig, without=("dtype", "remat")),
        "sampling": dataclass_keys(SamplingConfig),
        "eval": leaves(
            "num_examples",
            "batch_size",
            "samples",
            "judge_per_task",
            "episodes",
            "curve_every_minutes",
            "curve_per_task",
        ),
    }


def _rolling_keys() -> KeyTree:
    from omni_img.models.bands import RollingDecoderConfig

    # The token grid, codebook, E's width, the dtype and the base tokenizer come from the
    # tokenized data, the generator, config.compute_dtype and the tokenizer workdir.
    derived = ("token_rows", "token_cols", "codebook_size", "text_dim", "dtype", "base_tokenizer")
    return {
        **leaves("generator_workdir", "tokenizer_workdir"),
        "data": leaves("tokenized_dir"),
        "model": dataclass_keys(RollingDecoderConfig, without=derived, extra=("conv_base",)),
        "eval": leaves("num_examples", "batch_size", "rfid_images"),
    }


# stage -> the keys it adds to (or, for a group, merges into) the shared ones
STAGE_KEYS = {"tokenizer": _tokenizer_keys, "generator": _generator_keys, "rolling": _rolling_keys}
