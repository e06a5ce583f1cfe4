"""Every key a training config may hold, with its default.

`training_defaults()` holds the keys every stage shares; `tokenizer_defaults()`,
`generator_defaults()` and `rolling_defaults()` add a stage's own, model blocks
included (a model block's defaults are its dataclass's). Experiment files start from
their stage's defaults and set what differs, so code reads every key as it is and
never supplies a default of its own; the command line can then override any key
(`--config.optim.lr=1e-3`). A key not in these trees is an error
(omni_img/config/schema.py derives the trees from here).
"""

from __future__ import annotations

import dataclasses

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
    # > 0: the mesh takes only the first this many devices (one process). A small model
    # on a CPU host's fake devices steps faster on fewer of them: docs/performance.md.
    config.mesh_devices = 0
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
            # With async_save: the loop copies the state on its devices and a background
            # thread saves the copy (one more state of device memory while it saves).
            "device_snapshot": True,
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


def tokenizer_defaults() -> ml_collections.ConfigDict:
    from omni_img.models.tokenizer import TokenizerConfig

    config = training_defaults()
    config.stage = "tokenizer"
    config.model = dataclass_defaults(TokenizerConfig, without=("remat",))  # config.remat
    # adversarial > 0 adds a PatchGAN discriminator (hinge loss) with that weight.
    config.loss = ml_collections.ConfigDict({"l1": 1.0, "l2": 1.0, "adversarial": 0.0})
    # The judge and PSNR on num_examples; codebook usage on usage_examples (0: all).
    config.eval = ml_collections.ConfigDict(
        {"num_examples": 1000, "usage_examples": 0, "batch_size": 64}
    )
    return config


def generator_defaults() -> ml_collections.ConfigDict:
    from omni_img.models.generator import GeneratorConfig
    from omni_img.sampling.ar import SamplingConfig

    config = training_defaults()
    config.stage = "generator"
    config.caption_dropout = 0.1  # share of prompts dropped (classifier-free guidance)
    config.input_masking = 0.0  # up to this share of decoder inputs hidden in training
    config.foreground_weight = 1.0  # loss weight of tokens off the image's background code
    config.text_tokenizer = "bytes"
    config.text_align_words = False  # True: every word starts an encoder position
    config.data.tokenized_dir = ""
    # task -> weight of its records in the mixture; empty: every record, shuffled
    config.data.task_weights = ml_collections.ConfigDict()
    # dtype and remat come from config.compute_dtype and config.remat; the token grid
    # and codebook from the tokenized data where these are 0.
    config.model = dataclass_defaults(GeneratorConfig, without=("dtype", "remat"))
    config.model.update({"grid_h": 0, "grid_w": 0, "image_vocab_size": 0})
    config.sampling = dataclass_defaults(SamplingConfig)
    # samples: a grid of that many at each eval; judge_per_task and episodes: the judge
    # on test records and chained edit episodes at the end; curve_*: the learning curve.
    config.eval = ml_collections.ConfigDict(
        {
            "num_examples": 256,
            "batch_size": 64,
            "samples": 0,
            "judge_per_task": 0,
            "episodes": 0,
            "curve_every_minutes": 0.0,
            "curve_per_task": 0,
        }
    )
    return config


def rolling_defaults() -> ml_collections.ConfigDict:
    from omni_img.models.bands import RollingDecoderConfig

    config = training_defaults()
    config.stage = "rolling"
    config.generator_workdir = ""
    config.tokenizer_workdir = ""
    config.data.tokenized_dir = ""
    # The token grid, codebook, E's width, the dtype and the base tokenizer come from the
    # tokenized data, the generator, config.compute_dtype and the tokenizer workdir.
    derived = ("token_rows", "token_cols", "codebook_size", "text_dim", "dtype", "base_tokenizer")
    config.model = dataclass_defaults(RollingDecoderConfig, without=derived)
    config.model.conv_base = False  # True: refine a frozen copy of the tokenizer's decoder
    # PSNR of every decoder on num_examples; rFID of the conv and rolling decoders on
    # rfid_images (0: none; FID weights from `omni-img eval fetch-weights`).
    config.eval = ml_collections.ConfigDict(
        {"num_examples": 64, "batch_size": 32, "rfid_images": 0}
    )
    return config


STAGE_DEFAULTS = {
    "tokenizer": tokenizer_defaults,
    "generator": generator_defaults,
    "rolling": rolling_defaults,
}


def dataclass_defaults(cls, *, without: tuple[str, ...] = ()) -> ml_collections.ConfigDict:
    """A model block: the default of every field of dataclass `cls`, less those the
    trainer sets itself from other keys (a value given there would be overwritten)."""
    fields = [field for field in dataclasses.fields(cls) if field.name not in without]
    missing = [field.name for field in fields if field.default is dataclasses.MISSING]
    if missing:  # a field added without a plain default would enter configs as MISSING
        raise TypeError(f"{cls.__name__}.{missing[0]} needs a default to be a config key")
    return ml_collections.ConfigDict({field.name: field.default for field in fields})


def rules_from_config(config: ml_collections.ConfigDict) -> tuple:
    """The logical-axis rules as the tuple of pairs flax expects."""
    return tuple(
        (name, tuple(target) if isinstance(target, list) else target)
        for name, target in config.logical_axis_rules
    )
