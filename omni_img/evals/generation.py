"""Judge a set of images made for dataset records: what every stage's evaluation reports.

`judge_records(images, records)` judges each image against its record's spec (compose,
write or edit, with the edit's source) and returns the judge's summary (accuracy per
task, GenEval categories, OCR exact match and CER, accuracy per edit op) plus, for
compose scenes, the accuracy of each attribute over all requested objects and per
object count and held-out against seen shape-colour pairs, and for write, OCR on
words seen in training apart from held-out words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from omni_img.data import reading
from omni_img.world import judge as judge_lib
from omni_img.world.vocabulary import HELD_OUT_PAIRS, HELD_OUT_WORDS

ATTRIBUTES = ("shape", "style", "size", "position")


def judge_records(
    images_uint8: Sequence[np.ndarray], records: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, Any], list[judge_lib.Verdict]]:
    """(summary, verdicts) of uint8 (R, R, 3) images against their records' specs.

    A record needs `spec` and `task`; edits also `source_image` and `source_spec`,
    and `edit_op` to be reported per op.
    """
    tasks = [reading.text(r["task"]) for r in records]
    specs = [reading.text(r["spec"]) for r in records]
    sources = [r.get("source_image") if t == "edit" else None for r, t in zip(records, tasks)]
    source_specs = [
        reading.text(r.get("source_spec")) or None if t == "edit" else None
        for r, t in zip(records, tasks)
    ]
    verdicts = judge_lib.judge_batch(list(images_uint8), specs, tasks, sources, source_specs)
    edit_ops = [reading.text(r.get("edit_op")) for r in records]
    summary = judge_lib.summarize(verdicts, tasks, specs, edit_ops)
    compose = [i for i, t in enumerate(tasks) if t == "compose"]
    if compose:
        summary["compose_attributes"] = attribute_accuracies(
            [verdicts[i] for i in compose], [specs[i] for i in compose]
        )
        summary["compose_by_count"] = _accuracy_by(
            compose, verdicts, lambda i: f"{len(judge_lib.as_scene(specs[i]).objects)} objects"
        )
        summary["compose_by_pairs"] = _accuracy_by(
            compose, verdicts, lambda i: _pair_group(specs[i])
        )
    writes = [i for i, t in enumerate(tasks) if t == "write"]
    if writes:
        summary["write_by_words"] = {
            group: judge_lib.ocr_stats([verdicts[i].details for i in members])
            for group, members in _group_by(writes, lambda i: _word_group(specs[i])).items()
        }
    return summary, verdicts


def _word_group(spec) -> str:
    word = judge_lib.as_scene(spec).word.text
    return "held_out_words" if word in HELD_OUT_WORDS else "train_words"


def _pair_group(spec) -> str:
    """held_out_pairs where an object's shape and colour never met in training (only test
    scenes have them), else seen_pairs."""
    objects = judge_lib.as_scene(spec).objects
    held_out = any((obj.shape, obj.colour) in HELD_OUT_PAIRS for obj in objects)
    return "held_out_pairs" if held_out else "seen_pairs"


def _group_by(indices, key) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i in indices:
        groups.setdefault(key(i), []).append(i)
    return dict(sorted(groups.items()))


def _accuracy_by(indices, verdicts, key) -> dict[str, dict[str, float]]:
    return {
        group: {
            "n": len(members),
            "accuracy": float(np.mean([verdicts[i].passed for i in members])),
        }
        for group, members in _group_by(indices, key).items()
    }


def attribute_accuracies(verdicts, specs) -> dict[str, float]:
    """Per attribute, the share of requested objects (or scenes) it was right for.

    background and colour/count are per scene (colour and count are checked together:
    the judge segments by colour and counts the objects of each); shape, style, size
    and position are per object, over the objects the judge could match, with scenes
    that failed before matching counted as wrong for every object.
    """
    right = {name: 0 for name in ("background", "colour_count", *ATTRIBUTES)}
    objects_total = 0
    for verdict, spec in zip(verdicts, specs, strict=True):
        scene = judge_lib.as_scene(spec)
        objects_total += len(scene.objects)
        background_ok = verdict.details.get("background") == scene.background
        right["background"] += background_ok
        matched = verdict.details.get("objects")
        if matched is None:  # failed at background or colour/count: nothing matched
            continue
        right["colour_count"] += 1
        for measured, wanted in zip(matched, _matched_order(scene, matched), strict=True):
            for name in ATTRIBUTES:
                right[name] += measured[name] == getattr(wanted, name)
    scenes = max(len(verdicts), 1)
    per_object = max(objects_total, 1)
    return {
        "background": right["background"] / scenes,
        "colour_count": right["colour_count"] / scenes,
        **{name: right[name] / per_object for name in ATTRIBUTES},
    }


def _matched_order(scene, matched):
    """The scene's objects in the order the judge reported its matches (by colour group)."""
    by_colour: dict[str, list] = {}
    for obj in scene.objects:
        by_colour.setdefault(obj.colour, []).append(obj)
    return [obj for objects in by_colour.values() for obj in objects]
