"""The omni shapes judge: passes ground truth, fails perturbations, reads pixels only."""

import numpy as np
import pytest
from PIL import Image, ImageFilter

from omni_img.world import judge_selftest
from omni_img.world.examples import example_specs
from omni_img.world.judge import judge, judge_batch, summarize
from omni_img.world.render import render
from omni_img.world.spec import CATEGORIES


def _check(report, gt_floor, fail_floor):
    for task in ("compose", "write", "edit"):
        assert report[task]["ground_truth_pass"] >= gt_floor, (task, report)
        for kind, rate in report[task]["perturbed_fail"].items():
            assert rate >= fail_floor, (task, kind, report)
    kinds = set(report["compose"]["perturbed_fail"])
    assert {"colour", "shape", "position", "count", "background", "style", "size"} <= kinds
    assert "touching_object" in kinds
    assert {"letter", "stray_object", "second_sign"} <= set(report["write"]["perturbed_fail"])
    assert {"untouched_moved", "edit_not_applied", "touching_object", "stray_object",
            "second_sign"} <= set(report["edit"]["perturbed_fail"])  # fmt: skip


def test_self_test_small():
    _check(judge_selftest.self_test(n_per_task=30), gt_floor=0.96, fail_floor=0.9)


@pytest.mark.slow
def test_self_test_1000_per_task():
    report = judge_selftest.self_test(n_per_task=1000)
    assert all(report[t]["n"] == 1000 for t in ("compose", "write", "edit"))
    _check(report, gt_floor=0.99, fail_floor=0.99)


def _examples(n):
    return [s for s in example_specs(0, "test", 0, 3 * n)]


def test_renders_of_other_specs_fail():
    specs = _examples(40)
    images = [render(s.scene, 64) for s in specs]
    shifted = images[3:] + images[:3]  # same task, different example
    sources = [None if s.source is None else render(s.source, 64) for s in specs]
    verdicts = judge_batch(shifted, [s.scene for s in specs], [s.task for s in specs], sources,
                           [s.source for s in specs])  # fmt: skip
    assert sum(v.passed for v in verdicts) <= 1
    blank = np.zeros((64, 64, 3), np.uint8)
    assert not any(judge(blank, s.scene, s.task).passed for s in specs[:9])


def test_tolerates_noise_and_colour_drift():
    rng = np.random.default_rng(0)
    specs = [s for s in _examples(60) if s.task == "compose"]
    passed = 0
    for spec in specs:
        noisy = render(spec.scene, 64) + rng.normal(0, 8, (64, 64, 3)) + rng.normal(0, 10, 3)
        passed += judge(np.clip(noisy, 0, 255).astype(np.uint8), spec.scene, "compose").passed
    assert passed / len(specs) >= 0.95


def test_blur_only_changes_the_style_verdict():
    # A blurred edge is what the soft style looks like, so only style may be disputed.
    specs = [s for s in _examples(60) if s.task == "compose"]
    for spec in specs:
        image = Image.fromarray(render(spec.scene, 64)).filter(ImageFilter.GaussianBlur(0.6))
        verdict = judge(np.asarray(image), spec.scene, "compose")
        assert verdict.passed or "style is soft" in verdict.reason, verdict.reason


def test_summary_reports_geneval_categories_and_ocr():
    specs = _examples(60)
    images = [render(s.scene, 64) for s in specs]
    sources = [None if s.source is None else render(s.source, 64) for s in specs]
    tasks = [s.task for s in specs]
    verdicts = judge_batch(images, [s.scene for s in specs], tasks, sources,
                           [s.source for s in specs])  # fmt: skip
    summary = summarize(verdicts, tasks, [s.scene for s in specs], [s.edit_op for s in specs])
    assert set(summary["geneval"]) == set(CATEGORIES) | {"overall"}
    assert summary["tasks"]["write"]["n"] == 60
    assert summary["write_ocr"]["exact_match"] >= 0.95 and summary["write_ocr"]["cer"] < 0.05
    assert set(summary["edit_ops"]) <= {"recolour", "move", "add", "remove", "restyle",
                                        "background", "word"}  # fmt: skip


def test_missing_tesseract_names_the_package(monkeypatch):
    from omni_img import preflight
    from omni_img.errors import UserError
    from omni_img.world import ocr

    monkeypatch.delenv("OMNI_IMG_TESSERACT", raising=False)
    monkeypatch.setattr(preflight.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="tesseract-ocr"):
        ocr.read_lines([np.full((20, 60), 255, np.uint8)])


def test_character_error_rate():
    from omni_img.world.ocr import character_error_rate

    assert character_error_rate("river", "river") == 0
    assert character_error_rate("rivet", "river") == pytest.approx(0.2)
    assert character_error_rate("", "cat") == 1


def test_ocr_stats_score_only_the_images_ocr_read():
    from omni_img.world.judge import ocr_stats

    read = [{"exact": True, "cer": 0.0}, {"exact": False, "cer": 0.5}]
    failed_before_ocr = [{"background": "red"}]
    stats = ocr_stats(read + failed_before_ocr)
    assert stats == {"read": 2, "of": 3, "exact_match": 0.5, "cer": 0.25}
    # Nothing read is "nothing to score", not a perfect or a zero score.
    assert ocr_stats(failed_before_ocr) == {"read": 0, "of": 1, "exact_match": None, "cer": None}
