"""Examples of the omni shapes dataset as a pure function of (seed, split, index).

Tasks interleave: index i has task TASKS[i % 3] (compose, write, edit), so any run of
3k examples holds k of each. Compose and write examples are drawn from their own seed.
Edit examples are turns of episodes: the edit slots of a split (every third index) are
grouped 12 at a time, and each group is cut into episodes of 2-4 turns drawn from the
group's seed; a turn's example carries the episode's earlier instructions as history.
"""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any

import numpy as np

from omni_img.world import captions, scenes
from omni_img.world.render import render
from omni_img.world.spec import TASKS, Scene, spec_to_json

SPLITS: tuple[str, ...] = ("train", "validation", "test")
EDIT_GROUP = 12  # edit slots per group of episodes
EPISODE_TURNS = (2, 3, 4)


@dataclasses.dataclass(frozen=True)
class ExampleSpec:
    """An example before rendering: what to draw and what to say."""

    index: int
    task: str
    caption: str
    scene: Scene
    source: Scene | None = None
    history: tuple[str, ...] = ()
    edit_op: str = ""
    turn: int = 0  # 1-based turn within its edit episode; 0 for compose and write
    episode: int = -1  # edit episode id, unique within a split; -1 for compose and write


def _rng(seed: int, split: str, kind: str, number: int) -> random.Random:
    # String seeds hash with SHA-512 in CPython: stable across versions and platforms.
    return random.Random(f"omni_shapes/{seed}/{split}/{kind}/{number}")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def edit_group(seed: int, split: str, group: int) -> list[ExampleSpec]:
    """The EDIT_GROUP edit examples of one group: consecutive turns of 2-4 turn episodes."""
    rng = _rng(seed, split, "edit", group)
    lengths: list[int] = []
    while sum(lengths) < EDIT_GROUP:
        lengths.append(rng.choice(EPISODE_TURNS))
    lengths[-1] -= sum(lengths) - EDIT_GROUP
    if lengths[-1] < min(EPISODE_TURNS):  # too short a tail: fold it into the one before
        tail = lengths.pop()
        lengths[-1] += tail
    out: list[ExampleSpec] = []
    for number, turns in enumerate(lengths):
        start, edits = scenes.sample_episode(rng, split, turns)
        source, history = start, []
        for turn, edit in enumerate(edits, 1):
            slot = group * EDIT_GROUP + len(out)
            text = captions.instruction(rng, source, edit)
            out.append(
                ExampleSpec(
                    index=3 * slot + TASKS.index("edit"),
                    task="edit",
                    caption=text,
                    scene=edit.target,
                    source=source,
                    history=tuple(history),
                    edit_op=edit.op,
                    turn=turn,
                    episode=group * EDIT_GROUP + number,
                )
            )
            history.append(text)
            source = edit.target
    return out


def example_spec(seed: int, split: str, index: int) -> ExampleSpec:
    """The unrendered example at (seed, split, index)."""
    _check_split(split)
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    task = TASKS[index % 3]
    if task == "edit":
        slot = index // 3
        return edit_group(seed, split, slot // EDIT_GROUP)[slot % EDIT_GROUP]
    rng = _rng(seed, split, task, index)
    if task == "compose":
        scene = scenes.sample_compose(rng, split)
        return ExampleSpec(index, task, captions.compose_caption(rng, scene), scene)
    scene = scenes.sample_write(rng, split)
    return ExampleSpec(index, task, captions.write_caption(rng, scene), scene)


def example_specs(seed: int, split: str, start: int, stop: int) -> list[ExampleSpec]:
    """Unrendered examples start..stop-1, generating each edit group once."""
    groups: dict[int, list[ExampleSpec]] = {}
    out = []
    for index in range(start, stop):
        if TASKS[index % 3] == "edit":
            slot = index // 3
            group = slot // EDIT_GROUP
            if group not in groups:
                groups = {group: edit_group(seed, split, group)}
            out.append(groups[group][slot % EDIT_GROUP])
        else:
            out.append(example_spec(seed, split, index))
    return out


def blank_image(resolution: int) -> np.ndarray:
    """uint8 (R, R, 3) zeros: the source image of examples that have none."""
    return np.zeros((resolution, resolution, 3), np.uint8)


def to_record(spec: ExampleSpec, resolution: int, cache: dict | None = None) -> dict[str, Any]:
    """The dataset record of an example: images uint8 (R, R, 3), texts, and the index.

    `cache` (spec JSON -> image) lets a caller render an episode's shared scenes once.
    """
    target_json = spec_to_json(spec.scene)
    source_json = spec_to_json(spec.source)

    def draw(scene: Scene, key: str) -> np.ndarray:
        if cache is None:
            return render(scene, resolution)
        if key not in cache:
            if len(cache) > 64:
                cache.clear()
            cache[key] = render(scene, resolution)
        return cache[key]

    return {
        "image": draw(spec.scene, target_json),
        "source_image": blank_image(resolution)
        if spec.source is None
        else draw(spec.source, source_json),
        "caption": spec.caption,
        "history": json.dumps(list(spec.history)),
        "task": spec.task,
        "category": spec.scene.category,
        "spec": target_json,
        "source_spec": source_json,
        "edit_op": spec.edit_op,
        "turn": spec.turn,
        "episode": spec.episode,
        "index": spec.index,
    }


def example(seed: int, split: str, index: int, resolution: int = 64) -> dict[str, Any]:
    """The rendered record at (seed, split, index): exactly what the dataset stores there."""
    return to_record(example_spec(seed, split, index), resolution)


def render_chunk(job: tuple[int, str, int, int, int]) -> list[tuple[int, dict[str, Any]]]:
    """(seed, split, start, stop, resolution) -> [(index, record)] for start..stop-1."""
    seed, split, start, stop, resolution = job
    cache: dict = {}
    return [
        (spec.index, to_record(spec, resolution, cache))
        for spec in example_specs(seed, split, start, stop)
    ]
