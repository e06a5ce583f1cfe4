"""The keys every training config shares, with their defaults.

Experiment files start from `training_defaults()` and set what differs; the command
line can then override any key (`--config.optim.lr=1e-3`). Unknown keys are errors.
"""

from __future__ import annotations

import ml_collections

from omni_img.sharding.rules import DEFAULT_RULES


def training_defaults() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.stage = ""
    config.seed = 0
    config.batch_size = 32
    config.num_steps = 1000
    config.max_minutes = 0.0  # > 0: stop (with a checkpoint) once this much training time passed
    config.grad_accum = 1
    config.ema_decay = 0.999
    config.compute_dtype = "float32"  # or "bfloat16": compute dtype; params stay float32
    config.remat = False
    config.log_every = 20
    config.eval_every = 0  # 0: evaluate only at the end
    config.profile_steps = ""  # "first,last": write a jax.profiler trace of those steps
    # A step whose loss or gradient norm is NaN/Inf: "stop" (the run ends naming it, and
    # that state is never saved) or "skip" (keep the previous state, count the batch).
    config.nonfinite = "stop"
    config.resume_from = ""
    config.init_from = ""

    config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    config.logical_axis_rules = [list(rule) for rule in DEFAULT_RULES]

    config.optim = ml_collections.ConfigDict(
        {
            "name": "adamw",
            "lr": 1e-3,
            "warmup_steps": 100,
            "min_lr_ratio": 0.1,
            "b1": 0.9,
            "b2": 0.99,
            "eps": 1e-8,
            "weight_decay": 1e-4,
            "clip_norm": 1.0,
            "frozen": (),  # parameter path prefixes that are never updated
        }
    )
    config.checkpoint = ml_collections.ConfigDict(
        {
            "every_steps": 500,
            "every_minutes": 10.0,
            "keep": 3,
            "keep_every": 0,
            "async_save": True,
            # Orbax's replica-parallel save splits every replicated array into one slice
            # a device, dispatched one by one while the loop waits (several times the
            # blocking for small states: docs/performance.md, checkpoint rows). Turn it
            # on for large replicated (pure data-parallel) states, where splitting the
            # device-to-host copies over replicas pays.
            "replica_parallel": False,
        }
    )
    config.data = ml_collections.ConfigDict(
        {
            "name": "omni_shapes",
            "builder_config": "",  # empty: the builder's default config
            "data_dir": "",  # empty: TFDS_DATA_DIR or ~/tensorflow_datasets
            "train_split": "train",
            "eval_split": "validation",
            "worker_count": 0,  # grain worker processes; 0 reads in the main process
            # The command(s) that make this data; quoted when the data is missing.
            "prepare": "",
        }
    )
    return config


def rules_from_config(config: ml_collections.ConfigDict) -> tuple:
    """The logical-axis rules as the tuple of pairs flax expects."""
    return tuple(
        (name, tuple(target) if isinstance(target, list) else target)
        for name, target in config.logical_axis_rules
    )
