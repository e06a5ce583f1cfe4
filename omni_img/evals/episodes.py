"""Chained edit episodes: each turn edits the image the generator made at the turn before.

A dataset's edit records are turns of episodes, but each record's source is the ground
truth of the turn before, so judging records one at a time never shows whether a
conversation holds together. Here an episode runs through a `Session`: turn 1 starts
from the episode's ground-truth start image; turn t + 1 gets turn t's *generated* tokens
as its source and the earlier instructions as history, as a user's conversation would.

Each turn's image is judged against that turn's target spec, with the image the model
was given as the edit's source (so "left the rest alone" is measured against what it
saw). An episode passes when every one of its turns passes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from omni_img.data import reading
from omni_img.evals.generation import judge_records
from omni_img.sampling.session import Session

# sessions, instructions -> uint8 images (B, H, W, 3); records each turn in its session.
RunTurn = Callable[[list[Session], list[str]], np.ndarray]


def chained_episodes(source, count: int, turns: int = 3) -> list[list[dict]]:
    """The first `count` edit episodes of `source` with turns 1..`turns`, in turn order.

    Reads records in order and stops as soon as it has `count` episodes: an episode's
    turns are consecutive edit records (omni_shapes lays them out so).
    """
    found: dict[int, dict[int, dict]] = {}
    complete: list[int] = []
    for index in range(len(source)):
        record = source[index]
        if reading.text(record["task"]) != "edit" or int(record["episode"]) < 0:
            continue
        episode, turn = int(record["episode"]), int(record["turn"])
        if 1 <= turn <= turns:
            found.setdefault(episode, {})[turn] = record
        if len(found.get(episode, {})) == turns and episode not in complete:
            complete.append(episode)
            if len(complete) == count:
                break
    return [[found[e][t] for t in range(1, turns + 1)] for e in complete]


def judge_chained(
    episodes: Sequence[Sequence[Mapping[str, Any]]],
    sessions: list[Session],
    run_turn: RunTurn,
) -> dict[str, Any]:
    """Run every episode turn by turn (all episodes together) and judge each turn.

    `sessions[i]` starts episode i (its source tokens: the start image's); `run_turn`
    makes one turn's images for all sessions and records the turn in each.
    Returns per-turn accuracy, episode accuracy and the judge's summary of each turn.
    """
    if not episodes:
        return {"episodes": 0}
    turns = len(episodes[0])
    passed = np.ones(len(episodes), bool)
    previous = np.stack([np.asarray(e[0]["source_image"], np.uint8) for e in episodes])
    report: dict[str, Any] = {"episodes": len(episodes), "turns": turns, "per_turn": []}
    for t in range(turns):
        records = [_with_source(e[t], image) for e, image in zip(episodes, previous, strict=True)]
        images = run_turn(sessions, [reading.text(r["caption"]) for r in records])
        summary, verdicts = judge_records(images, records)
        turn_passed = np.array([v.passed for v in verdicts])
        passed &= turn_passed
        report["per_turn"].append(
            {
                "turn": t + 1,
                "accuracy": float(turn_passed.mean()),
                "all_turns_so_far": float(passed.mean()),
                "edit_ops": summary.get("edit_ops", {}),
            }
        )
        previous = images
    report["episode_accuracy"] = float(passed.mean())
    return report


def _with_source(record: Mapping[str, Any], source_image: np.ndarray) -> dict:
    """The record with the image the model was given as its edit source."""
    return {**record, "source_image": source_image}
