"""The judge rejects objects nobody asked for: beside an expected object or a word's surface."""

import random

import numpy as np
import pytest

from omni_img.world import perturb
from omni_img.world.examples import example_specs
from omni_img.world.judge import judge, judge_batch
from omni_img.world.render import render
from omni_img.world.scenes import contrasts
from omni_img.world.spec import COLOURS, OBJECT_COLOURS, Scene, Shape


def _with_block(image: np.ndarray, box: tuple[int, int, int, int], colour: str) -> np.ndarray:
    x0, y0, x1, y1 = box
    out = image.copy()
    out[y0:y1, x0:x1] = COLOURS[colour]
    return out


def _write_scenes(n: int) -> list[Scene]:
    specs = example_specs(0, "test", 0, 3 * n)
    return [s.scene for s in specs if s.task == "write"][:n]


def test_block_touching_the_object_asked_for_fails():
    scene = Scene("white", (Shape("circle", "red", "small", "centre"),))
    image = render(scene, 64)
    assert judge(image, scene, "compose").passed
    # The circle spans x 20.5..43.5; the 20 x 20 block covers its rightmost pixel column.
    verdict = judge(_with_block(image, (43, 22, 63, 42), "blue"), scene, "compose")
    assert not verdict.passed
    assert verdict.reason == "unexpected blue object"


def _free_window(image: np.ndarray, background: str, side: int) -> tuple[int, int]:
    """Top-left (x, y) of the first side x side window of pure background, 2 px in."""
    plain = np.all(image == COLOURS[background], axis=-1)
    for y in range(2, image.shape[0] - side - 2):
        for x in range(2, image.shape[1] - side - 2):
            if plain[y : y + side, x : x + side].all():
                return x, y
    raise AssertionError("no free window")


# A block of the surface's own colour keeps 2 px away, or it would join the surface.
@pytest.mark.parametrize(
    "same_colour, side, gap", [(False, 12, 0), (True, 9, 2)], ids=["other_colour", "surface_colour"]
)
def test_block_beside_a_word_fails(same_colour, side, gap):
    scenes = _write_scenes(5)
    for scene in scenes:
        image = render(scene, 64)
        assert judge(image, scene, "write").passed
        if same_colour:
            colour = scene.word.colour
        else:
            colour = next(
                c for c in OBJECT_COLOURS
                if c != scene.word.colour and contrasts(c, scene.background)
            )  # fmt: skip
        x, y = _free_window(image, scene.background, side + 2 * gap)
        x, y = x + gap, y + gap
        verdict = judge(_with_block(image, (x, y, x + side, y + side), colour), scene, "write")
        assert not verdict.passed, (scene, colour)
        assert "unexpected" in verdict.reason or "second" in verdict.reason, verdict.reason


@pytest.mark.parametrize(
    "kind, function, task",
    [
        ("touching_object", perturb.touching_object, "compose"),
        ("stray_object", perturb.stray_object, "write"),
        ("second_sign", perturb.second_sign, "write"),
    ],
)
def test_drawn_perturbations_fail(kind, function, task):
    specs = [s for s in example_specs(0, "test", 0, 150) if s.task == task]
    images = [render(s.scene, 64) for s in specs]
    changed = [
        function(s.scene, image, random.Random(f"{kind}/{s.index}"))
        for s, image in zip(specs, images, strict=True)
    ]
    tried = [i for i, c in enumerate(changed) if c is not None]
    assert len(tried) >= 0.7 * len(specs), (kind, len(tried), len(specs))
    assert all((changed[i] != images[i]).any() for i in tried)
    verdicts = judge_batch(
        [changed[i] for i in tried], [specs[i].scene for i in tried], [task] * len(tried)
    )
    fooled = [(specs[i].index, v.reason) for i, v in zip(tried, verdicts, strict=True) if v.passed]
    assert not fooled, (kind, fooled)


def test_touching_object_touches_the_object_and_is_an_object():
    scene = Scene("white", (Shape("circle", "red", "small", "centre"),))
    image = render(scene, 64)
    changed = perturb.touching_object(scene, image, random.Random(0))
    added = np.any(changed != image, axis=-1) & np.all(image == COLOURS["white"], axis=-1)
    circle = np.any(image != COLOURS["white"], axis=-1)
    grown = np.pad(circle, 1)
    near = np.zeros_like(circle)
    for dy in range(3):
        for dx in range(3):
            near |= grown[dy : dy + 64, dx : dx + 64]
    assert (added & near).any() and added.sum() > 100
