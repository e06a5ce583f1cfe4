"""The learning curve's fixed validation sample: single objects apart from other scenes."""

import numpy as np

from omni_img.data import reading
from omni_img.evals.generation import ATTRIBUTES, judge_records
from omni_img.evals.samples import CURVE_GROUPS, curve_records, curve_scores, exact_share
from omni_img.world.examples import example


def test_each_group_gets_its_first_records_and_single_objects_stand_apart():
    records = [example(0, "validation", index) for index in range(120)]
    groups = curve_records(records, per_group=4)
    assert tuple(groups) == CURVE_GROUPS
    assert all(len(chosen) == 4 for chosen in groups.values()), {
        k: len(v) for k, v in groups.items()
    }
    assert all(reading.text(r["category"]) == "single_object" for r in groups["single_object"])
    assert all(
        reading.text(r["task"]) == "compose" and reading.text(r["category"]) != "single_object"
        for r in groups["compose"]
    )
    assert {reading.text(r["task"]) for r in groups["write"]} == {"write"}
    # Fixed: the same records at every mark, in dataset order.
    again = curve_records(records, per_group=4)
    assert [int(r["index"]) for r in again["edit"]] == [int(r["index"]) for r in groups["edit"]]
    assert [int(r["index"]) for r in groups["edit"]] == sorted(
        int(r["index"]) for r in groups["edit"]
    )


def test_write_exact_counts_images_that_never_reached_ocr_as_wrong():
    assert exact_share({"read": 0, "of": 32, "exact_match": None, "cer": None}) == 0.0
    assert exact_share({"read": 10, "of": 40, "exact_match": 0.5, "cer": 0.2}) == 0.125
    assert exact_share({"read": 0, "of": 0, "exact_match": None, "cer": None}) == 0.0


def test_curve_scores_carry_each_attribute_so_early_marks_can_differ():
    records = [example(0, "validation", index) for index in range(200)]
    scenes = curve_records(records, per_group=6)["single_object"]
    truth = np.stack([r["image"] for r in scenes])
    blank = np.zeros_like(truth) + truth[:, :1, :1]  # each scene's background, no object
    right = curve_scores("single_object", judge_records(truth, scenes)[0])
    empty = curve_scores("single_object", judge_records(blank, scenes)[0])
    assert right["single_object"] == 1.0 and right["single_object_shape"] == 1.0
    assert empty["single_object"] == 0.0
    assert empty["single_object_background"] == 1.0 and empty["single_object_shape"] == 0.0
    assert set(right) == set(empty) == {"single_object"} | {
        f"single_object_{name}" for name in ("background", "colour_count", *ATTRIBUTES)
    }
