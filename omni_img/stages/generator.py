"""The generator stage: its data (task mixture, batches), model, train step and loading
a trained workdir.

Training (``omni_img.trainers.generator``) and everything that reads a trained
generator share these definitions.
"""

from __future__ import annotations

import functools
import json

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from omni_img.config.defaults import rules_from_config
from omni_img.config.saved import load_saved_config
from omni_img.data.tokenized import TokenizedSource
from omni_img.errors import UserError
from omni_img.models.generator import Generator, generator_loss, make_generator
from omni_img.sampling.conditioning import conditioning
from omni_img.sharding import make_mesh
from omni_img.text.tokenizer import as_text, encode_prompt, make_text_tokenizer
from omni_img.training.fit import StageStep, restore_latest

TASKS = ("compose", "write", "edit")


def conditioning_example(record, *, tokenizer, model_cfg) -> dict[str, np.ndarray]:
    """One tokenized record -> the arrays of the generator's batch dict.

    The conditioning is ``omni_img.sampling.conditioning.conditioning``'s, as at sampling
    time, except that an over-long caption is shortened (``training_prompt_ids``) and the
    source keys are always present (zeros and has_source False for a text prompt).
    """
    target = np.asarray(record["target_tokens"], np.int32)
    if model_cfg.class_conditional:
        if "label" not in record:
            raise UserError("a class-conditional generator needs records with a 'label'")
        return {"class_id": np.asarray(record["label"], np.int32), "target_tokens": target}
    with_history = model_cfg.max_history_len > 0
    cond = conditioning(
        tokenizer,
        training_prompt_ids(tokenizer, record["caption"], model_cfg.max_text_len),
        model_cfg,
        source_tokens=np.asarray(record["source_tokens"], np.int32)[None],
        has_source=bool(np.asarray(record["has_source"], bool)),
        history=json.loads(record.get("history") or "[]") if with_history else (),
        source_keys=True,
    )
    example = {key: np.asarray(value[0]) for key, value in cond.items()}
    text = {"text_ids": example.pop("text_ids"), "text_mask": example.pop("text_mask")}
    return {**text, "target_tokens": target, **example}


def training_prompt_ids(tokenizer, caption, max_len: int) -> list[int]:
    """encode_prompt's ids of a training caption, its last words dropped until it fits
    the encoder's context. Web captions (WebDataset shards, Parquet columns) can run
    past it, and one long caption must not stop a run; sampling still refuses an
    over-long prompt, and an empty caption is still an error."""
    text = as_text(caption)
    words = text.split()
    for shorter in (text, *(" ".join(words[:n]) for n in range(len(words) - 1, 1, -1))):
        try:
            return encode_prompt(tokenizer, shorter, max_len)  # as written, if it fits
        except UserError:
            continue
    return encode_prompt(tokenizer, words[0] if words else text, max_len)


class _Subset:
    """Maps a position in `indices` to that record of `source`."""

    def __init__(self, source, indices: np.ndarray):
        self.source, self.indices = source, indices

    def __call__(self, position: int):
        return self.source[int(self.indices[position])]


def mixed_source(source: TokenizedSource, weights: ml_collections.ConfigDict, seed: int):
    """A MapDataset drawing tasks in proportion to `weights` (tasks absent are skipped);
    with no weights (a dataset without tasks, e.g. ImageNet) every record, shuffled."""
    if not weights:
        return with_drawn_caption(grain.MapDataset.source(source).shuffle(seed).repeat(), seed)
    by_task = source.task_indices()
    parts, part_weights = [], []
    for task, weight in weights.items():
        if weight > 0 and task in by_task:
            indices = by_task[task]
            subset = grain.MapDataset.range(len(indices)).map(_Subset(source, indices))
            parts.append(subset.shuffle(seed).repeat())
            part_weights.append(float(weight))
    if not parts:
        raise UserError(f"config.data.task_weights {dict(weights)} selects no task present")
    return with_drawn_caption(grain.MapDataset.mix(parts, part_weights), seed)


def _draw_caption(record, rng: np.random.Generator):
    captions = json.loads(record.get("captions") or "[]")
    if len(captions) < 2:
        return record
    return {**record, "caption": captions[int(rng.integers(len(captions)))]}


def with_drawn_caption(dataset: grain.MapDataset, seed: int) -> grain.MapDataset:
    """Records with several captions (COCO keeps about five an image) get one of them
    each time they are drawn. The draw is a function of the seed and the position in
    the endless stream, so every epoch pairs an image with other words, and a resumed
    run draws exactly what the uninterrupted one drew."""
    return dataset.random_map(_draw_caption, seed=seed + 1)


def token_space(config: ml_collections.ConfigDict, metadata=None) -> tuple[tuple[int, int], int]:
    """(token grid, codebook size) the generator writes: from the tokenized data's
    metadata, which must agree with `config.model` where the config names them (a
    value > 0); from `config.model` (grid_h, grid_w, image_vocab_size) alone when there
    is no data (ahead-of-time compilation of a preset)."""
    named = {key: config.model[key] for key in ("grid_h", "grid_w", "image_vocab_size")}
    if metadata is not None:
        found = dict(zip(named, (*metadata["grid"], metadata["num_codes"]), strict=True))
        for key, value in named.items():
            if value and value != found[key]:
                raise UserError(
                    f"config.model.{key}={value} but the tokenized data has {found[key]}"
                )
        named = found
    missing = [key for key, value in named.items() if not value]
    if missing:
        raise UserError(
            f"no tokenized data and no config.model.{missing[0]}: the token grid is unknown"
        )
    return (int(named["grid_h"]), int(named["grid_w"])), int(named["image_vocab_size"])


def build_model(config: ml_collections.ConfigDict, grid, num_codes: int) -> Generator:
    """The generator of a config for a token space (grid, codebook size)."""
    model_cfg = config.model.to_dict()
    model_cfg.update(grid_h=grid[0], grid_w=grid[1], image_vocab_size=num_codes)
    model_cfg["dtype"] = config.compute_dtype
    model_cfg["remat"] = config.remat
    return make_generator(model_cfg)


def placeholder_record(grid: tuple[int, int]) -> dict:
    """A tokenized record with every field a batch reads: gives the batch's shapes."""
    zeros = np.zeros(grid, np.int16)
    return {"caption": "-", "history": "[]", "target_tokens": zeros, "source_tokens": zeros,
            "has_source": False, "label": 0}  # fmt: skip


def init_fn(model: Generator, batch):
    """rng -> initial params, traced on the first example of `batch`."""
    one = jax.tree.map(lambda x: jnp.asarray(x[:1]), batch)
    return lambda rng: model.init(rng, one)["params"]


def text_tokenizer_for(config: ml_collections.ConfigDict):
    """The config's text tokenizer; ``text_align_words`` lays words out on the encoder's
    ``text_group``-byte positions."""
    word_slots = config.model.text_group if config.text_align_words else 0
    return make_text_tokenizer(config.text_tokenizer, word_slots=word_slots)


def model_and_transform(config: ml_collections.ConfigDict, metadata=None):
    """(model, record -> batch arrays transform) for the token space of `metadata`."""
    grid, num_codes = token_space(config, metadata)
    model = build_model(config, grid, num_codes)
    tokenizer = text_tokenizer_for(config)
    transform = functools.partial(conditioning_example, tokenizer=tokenizer, model_cfg=model.cfg)
    return model, transform


def train_step_parts(config: ml_collections.ConfigDict, metadata=None) -> StageStep:
    """The generator's train step (initialiser, loss, batch shapes) from its config."""
    model, transform = model_and_transform(config, metadata)
    example = transform(placeholder_record(model.cfg.grid))
    example_batch = {k: np.stack([v] * config.batch_size) for k, v in example.items()}
    return StageStep(
        init_params=init_fn(model, example_batch),
        loss_fn=functools.partial(
            generator_loss,
            model=model,
            caption_dropout=config.caption_dropout,
            input_masking=config.input_masking,
            foreground_weight=config.foreground_weight,
        ),
        example_batch=example_batch,
    )


def load_workdir(workdir: str, step: int | None = None):
    """(config, model, EMA params on host, text tokenizer) of a trained generator workdir,
    from its latest checkpoint or the one at `step`."""
    config = load_saved_config(workdir)
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 1, 1
    metadata = TokenizedSource(config.data.tokenized_dir, config.data.eval_split).metadata
    model, _ = model_and_transform(config, metadata)
    init_params = train_step_parts(config, metadata).init_params
    mesh = make_mesh(config.mesh)
    state = restore_latest(config, workdir, init_params, mesh, rules_from_config(config), step)
    return (
        config,
        model,
        jax.device_get(state.ema_params),
        text_tokenizer_for(config),
    )
