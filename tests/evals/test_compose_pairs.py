"""Compose scenes judged apart by whether a shape-colour pair was held out of training."""

import numpy as np

from omni_img.data import reading
from omni_img.evals.generation import judge_records
from omni_img.world.examples import example
from omni_img.world.judge import as_scene
from omni_img.world.vocabulary import HELD_OUT_PAIRS


def test_compose_scenes_split_into_held_out_and_seen_pairs():
    records = [example(0, "test", index) for index in range(160)]
    compose = [r for r in records if reading.text(r["task"]) == "compose"]
    truth = np.stack([r["image"] for r in compose])
    summary, verdicts = judge_records(truth, compose)
    groups = summary["compose_by_pairs"]
    scenes = [as_scene(reading.text(r["spec"])) for r in compose]
    held_out = [any((o.shape, o.colour) in HELD_OUT_PAIRS for o in s.objects) for s in scenes]
    assert groups["held_out_pairs"]["n"] == sum(held_out) > 0
    assert groups["seen_pairs"]["n"] == len(compose) - sum(held_out) > 0
    passed = np.array([v.passed for v in verdicts])
    assert groups["held_out_pairs"]["accuracy"] == passed[np.array(held_out)].mean()
    assert groups["seen_pairs"]["accuracy"] == passed[~np.array(held_out)].mean()
