"""Random scenes and edits, drawn from a `random.Random` so they are a pure function of its seed.

Every sampler respects the split's held-out set (`vocabulary.py`): train and validation
never see a held-out shape x colour pair or word; the test split draws one for about
half of its scenes, so generalisation is measured on it.
"""

from __future__ import annotations

import dataclasses
import functools
import random

import numpy as np

from omni_img.world.spec import (
    BACKGROUND_COLOURS,
    COLOURS,
    OBJECT_COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    STYLES,
    SURFACES,
    Scene,
    Shape,
    Word,
    layout_is_clear,
)
from omni_img.world.vocabulary import HELD_OUT_PAIRS, HELD_OUT_WORDS, pair_allowed, words_for

MIN_CONTRAST = 130.0  # least RGB distance between an object (or surface) and the background
HELD_OUT_RATE = 0.5  # in the test split, the share of scenes built around a held-out item
ALL_CELLS = tuple(POSITIONS.values())
# Canonical layouts, so that a caption that names no position still fixes every position.
COUNT_LAYOUTS = {2: ("left", "right"), 3: ("top left", "top right", "bottom")}
RELATION_LAYOUTS = {
    "left of": ("left", "right"),
    "right of": ("right", "left"),
    "above": ("top", "bottom"),
    "below": ("bottom", "top"),
}


@functools.cache
def contrasts(colour: str, background: str) -> bool:
    """True if `colour` stands out from `background` enough for a tolerant judge."""
    diff = np.subtract(COLOURS[colour], COLOURS[background])
    return float(np.linalg.norm(diff)) >= MIN_CONTRAST


def _colours_on(background: str, exclude: tuple[str, ...] = ()) -> list[str]:
    return [c for c in OBJECT_COLOURS if c not in exclude and contrasts(c, background)]


def _shape_and_colour(
    rng: random.Random, split: str, background: str, held_out: bool, **exclude
) -> tuple[str, str]:
    """A (shape, colour) allowed in split, contrasting with background, avoiding exclusions."""
    bad_shapes = exclude.get("shapes", ())
    bad_colours = exclude.get("colours", ())
    if held_out:
        pairs = sorted(
            (s, c)
            for s, c in HELD_OUT_PAIRS
            if s not in bad_shapes and c not in bad_colours and contrasts(c, background)
        )
        if pairs:
            return rng.choice(pairs)
    pairs = [
        (s, c)
        for s in SHAPES
        if s not in bad_shapes
        for c in _colours_on(background, bad_colours)
        if pair_allowed(s, c, split)
    ]
    return rng.choice(pairs)


def _background(rng: random.Random) -> str:
    return rng.choice(BACKGROUND_COLOURS)


def _wants_held_out(rng: random.Random, split: str) -> bool:
    return split == "test" and rng.random() < HELD_OUT_RATE


def _place(rng: random.Random, objects: list[Shape], free_size: bool = True) -> list[Shape] | None:
    """Give the objects distinct random cells (and sizes if free_size) with a clear layout."""
    for _ in range(200):
        cells = rng.sample(ALL_CELLS, len(objects))
        placed = [
            dataclasses.replace(
                obj, position=cell, size=rng.choice(tuple(SIZES)) if free_size else obj.size
            )
            for obj, cell in zip(objects, cells, strict=True)
        ]
        if layout_is_clear(placed):
            return placed
    return None


def sample_compose(rng: random.Random, split: str) -> Scene:
    """A compose scene of one of GenEval's six categories (1-3 objects)."""
    category = rng.choice(
        ("single_object", "two_objects", "counting", "colours", "position", "colour_attribution")
    )
    background = _background(rng)
    held_out = _wants_held_out(rng, split)
    first = Shape(*_shape_and_colour(rng, split, background, held_out), style=rng.choice(STYLES))
    if category == "single_object":
        objects = _place(rng, [first])
    elif category == "colours":
        objects = [dataclasses.replace(first, size="large", position="centre")]
    elif category == "counting":
        count = rng.choice((2, 3))
        size = rng.choice(tuple(SIZES))
        objects = [
            dataclasses.replace(first, size=size, position=cell) for cell in COUNT_LAYOUTS[count]
        ]
        if not layout_is_clear(objects):
            objects = [dataclasses.replace(obj, size="small") for obj in objects]
    else:
        count = 3 if category == "colour_attribution" and rng.random() < 0.3 else 2
        objects = [first]
        for _ in range(count - 1):
            shapes = tuple(o.shape for o in objects)
            colours = tuple(o.colour for o in objects)
            if category == "two_objects":  # two shapes, one colour
                shape, colour = _shape_and_colour(
                    rng, split, background, False, shapes=shapes + _bad_shapes(first, split)
                )
                colour = first.colour
            else:  # every object differs in shape and colour
                shape, colour = _shape_and_colour(
                    rng, split, background, False, shapes=shapes, colours=colours
                )
            objects.append(Shape(shape, colour, style=rng.choice(STYLES)))
        if category == "position":
            relation = rng.choice(tuple(RELATION_LAYOUTS))
            cells = RELATION_LAYOUTS[relation]
            for _ in range(50):
                sized = [
                    dataclasses.replace(o, position=c, size=rng.choice(tuple(SIZES)))
                    for o, c in zip(objects, cells, strict=True)
                ]
                if layout_is_clear(sized):
                    break
            objects = sized
        else:
            objects = _place(rng, objects)
    return Scene(background, tuple(objects), category=category)


def _bad_shapes(first: Shape, split: str) -> tuple[str, ...]:
    """Shapes that may not take first's colour in this split (held-out pairs)."""
    return tuple(s for s in SHAPES if not pair_allowed(s, first.colour, split))


def sample_write(rng: random.Random, split: str) -> Scene:
    """A word scene: a word of the split's vocabulary on a coloured surface."""
    background = _background(rng)
    vocabulary = words_for(split)
    if _wants_held_out(rng, split):
        vocabulary = tuple(sorted(HELD_OUT_WORDS))
    word = Word(rng.choice(vocabulary), rng.choice(_colours_on(background)), rng.choice(SURFACES))
    return Scene(background, word=word)


def sample_edit_start(rng: random.Random, split: str) -> Scene:
    """The first scene of an edit episode: 1-3 objects anywhere (3 in 4) or a word."""
    if rng.random() < 0.25:
        return sample_write(rng, split)
    background = _background(rng)
    held_out = _wants_held_out(rng, split)
    objects: list[Shape] = []
    for _ in range(rng.choice((1, 2, 3))):
        shape, colour = _shape_and_colour(rng, split, background, held_out and not objects)
        objects.append(Shape(shape, colour, style=rng.choice(STYLES)))
    placed = _place(rng, objects)
    while placed is None:  # three large objects may not fit: drop one
        objects.pop()
        placed = _place(rng, objects)
    return Scene(background, tuple(placed))


@dataclasses.dataclass(frozen=True)
class Edit:
    """One edit: the op, the target scene, and what the instruction needs to name."""

    op: str
    target: Scene
    subject: int = -1  # index of the object acted on, in the source scene (-1: none)
    value: str = ""  # the new colour / cell / style / background / word


def edit_options(scene: Scene, split: str) -> list[str]:
    """The edit ops that can apply to scene."""
    if scene.word is not None:
        return ["recolour", "background", "word"]
    ops = ["recolour", "move", "restyle", "background"]
    if len(scene.objects) < 3:
        ops.append("add")
    if len(scene.objects) > 1:
        ops.append("remove")
    return ops


def _replace_object(scene: Scene, index: int, **changes) -> Scene:
    objects = list(scene.objects)
    objects[index] = dataclasses.replace(objects[index], **changes)
    return dataclasses.replace(scene, objects=tuple(objects), category="")


def sample_edit(rng: random.Random, scene: Scene, split: str) -> Edit | None:
    """One random edit of scene, valid for split; None if the drawn op cannot apply."""
    op = rng.choice(edit_options(scene, split))
    n = len(scene.objects)
    if scene.word is not None:
        word = scene.word
        if op == "recolour":
            colours = _colours_on(scene.background, (word.colour,))
            colour = rng.choice(colours)
            target = dataclasses.replace(scene, word=dataclasses.replace(word, colour=colour))
            return Edit(op, target, value=colour)
        if op == "word":
            text = rng.choice([w for w in words_for(split) if w != word.text])
            target = dataclasses.replace(scene, word=dataclasses.replace(word, text=text))
            return Edit(op, target, value=text)
    if op == "background":
        used = [o.colour for o in scene.objects] + ([scene.word.colour] if scene.word else [])
        options = [
            b
            for b in BACKGROUND_COLOURS
            if b != scene.background and all(contrasts(c, b) for c in used)
        ]
        if not options:
            return None
        background = rng.choice(options)
        return Edit(op, dataclasses.replace(scene, background=background), value=background)
    index = rng.randrange(n)
    obj = scene.objects[index]
    if op == "recolour":
        options = [
            c
            for c in _colours_on(scene.background, (obj.colour,))
            if pair_allowed(obj.shape, c, split)
        ]
        colour = rng.choice(options)
        return Edit(op, _replace_object(scene, index, colour=colour), index, colour)
    if op == "restyle":
        style = rng.choice([s for s in STYLES if s != obj.style])
        return Edit(op, _replace_object(scene, index, style=style), index, style)
    if op == "move":
        options = [c for c in ALL_CELLS if c != obj.position]
        rng.shuffle(options)
        for cell in options:
            target = _replace_object(scene, index, position=cell)
            if layout_is_clear(target.objects):
                return Edit(op, target, index, cell)
        return None
    if op == "remove":
        objects = scene.objects[:index] + scene.objects[index + 1 :]
        return Edit(op, dataclasses.replace(scene, objects=objects, category=""), index)
    if op == "add":
        shape, colour = _shape_and_colour(rng, split, scene.background, False)
        new = Shape(shape, colour, rng.choice(tuple(SIZES)), style=rng.choice(STYLES))
        cells = [c for c in ALL_CELLS if c not in {o.position for o in scene.objects}]
        rng.shuffle(cells)
        for cell in cells:
            objects = scene.objects + (dataclasses.replace(new, position=cell),)
            if layout_is_clear(objects):
                target = dataclasses.replace(scene, objects=objects, category="")
                return Edit(op, target, n, cell)
        return None
    raise AssertionError(op)


def sample_episode(rng: random.Random, split: str, turns: int) -> tuple[Scene, list[Edit]]:
    """A start scene and `turns` chained edits of it."""
    scene = sample_edit_start(rng, split)
    start, edits = scene, []
    while len(edits) < turns:
        edit = sample_edit(rng, scene, split)
        if edit is not None:
            edits.append(edit)
            scene = edit.target
    return start, edits
