"""One-attribute perturbations of a scene, to prove a judge can fail.

Each function takes a scene and a `random.Random` and returns a valid scene that differs
from it in exactly one named way, or None when that kind cannot apply (e.g. no second
object to move). The judge self-test renders the perturbed scene and expects the judge,
given the *original* spec, to reject it.
"""

from __future__ import annotations

import dataclasses
import random
import string

from omni_img.data.scenes import ALL_CELLS, contrasts
from omni_img.data.spec import (
    BACKGROUND_COLOURS,
    OBJECT_COLOURS,
    SHAPES,
    STYLES,
    Scene,
    Shape,
    layout_is_clear,
)


def _with_object(scene: Scene, index: int, **changes) -> Scene | None:
    objects = list(scene.objects)
    objects[index] = dataclasses.replace(objects[index], **changes)
    if not layout_is_clear(objects):
        return None
    return dataclasses.replace(scene, objects=tuple(objects))


def _pick(rng: random.Random, scene: Scene) -> int | None:
    return rng.randrange(len(scene.objects)) if scene.objects else None


def colour(scene: Scene, rng: random.Random) -> Scene | None:
    """One object (or the word's surface) in another colour."""
    if scene.word is not None:
        options = [
            c for c in OBJECT_COLOURS if c != scene.word.colour and contrasts(c, scene.background)
        ]
        word = dataclasses.replace(scene.word, colour=rng.choice(options))
        return dataclasses.replace(scene, word=word)
    index = _pick(rng, scene)
    if index is None:
        return None
    obj = scene.objects[index]
    options = [c for c in OBJECT_COLOURS if c != obj.colour and contrasts(c, scene.background)]
    return _with_object(scene, index, colour=rng.choice(options))


def shape(scene: Scene, rng: random.Random) -> Scene | None:
    """One object drawn as another shape."""
    index = _pick(rng, scene)
    if index is None:
        return None
    current = scene.objects[index].shape
    return _with_object(scene, index, shape=rng.choice([s for s in SHAPES if s != current]))


def style(scene: Scene, rng: random.Random) -> Scene | None:
    """One object drawn in another style."""
    index = _pick(rng, scene)
    if index is None:
        return None
    current = scene.objects[index].style
    return _with_object(scene, index, style=rng.choice([s for s in STYLES if s != current]))


def size(scene: Scene, rng: random.Random) -> Scene | None:
    """One object in the other size class (if it still fits)."""
    index = _pick(rng, scene)
    if index is None:
        return None
    other = "small" if scene.objects[index].size == "large" else "large"
    return _with_object(scene, index, size=other)


def move(scene: Scene, rng: random.Random, index: int | None = None) -> Scene | None:
    """One object (index, or a random one) moved to another free cell."""
    index = _pick(rng, scene) if index is None else index
    if index is None:
        return None
    cells = [c for c in ALL_CELLS if c != scene.objects[index].position]
    rng.shuffle(cells)
    for cell in cells:
        moved = _with_object(scene, index, position=cell)
        if moved is not None:
            return moved
    return None


def count(scene: Scene, rng: random.Random) -> Scene | None:
    """One more copy of an object (in a free cell), or one object fewer."""
    if not scene.objects:
        return None
    if len(scene.objects) > 1 and rng.random() < 0.5:
        index = rng.randrange(len(scene.objects))
        return dataclasses.replace(
            scene, objects=scene.objects[:index] + scene.objects[index + 1 :]
        )
    copy = scene.objects[rng.randrange(len(scene.objects))]
    cells = [c for c in ALL_CELLS if c not in {o.position for o in scene.objects}]
    rng.shuffle(cells)
    for cell in cells:
        objects = scene.objects + (dataclasses.replace(copy, position=cell),)
        if layout_is_clear(objects):
            return dataclasses.replace(scene, objects=objects)
    if len(scene.objects) > 1:
        return dataclasses.replace(scene, objects=scene.objects[1:])
    return None


def background(scene: Scene, rng: random.Random) -> Scene | None:
    """Another background colour that every object still stands out from."""
    used = [o.colour for o in scene.objects] + ([scene.word.colour] if scene.word else [])
    options = [
        b
        for b in BACKGROUND_COLOURS
        if b != scene.background and all(contrasts(c, b) for c in used)
    ]
    return dataclasses.replace(scene, background=rng.choice(options)) if options else None


def letter(scene: Scene, rng: random.Random) -> Scene | None:
    """The word with one letter replaced by another."""
    if scene.word is None:
        return None
    text = scene.word.text
    i = rng.randrange(len(text))
    new = rng.choice([c for c in string.ascii_lowercase if c != text[i]])
    word = dataclasses.replace(scene.word, text=text[:i] + new + text[i + 1 :])
    return dataclasses.replace(scene, word=word)


def untouched_moved(source: Scene, target: Scene, rng: random.Random) -> Scene | None:
    """The target with one object that the edit did not touch moved to another cell."""
    from collections import Counter

    remaining = Counter(source.objects)
    candidates = []
    for i, obj in enumerate(target.objects):
        if remaining[obj] > 0:
            remaining[obj] -= 1
            candidates.append(i)
    if not candidates:
        return None
    return move(target, rng, rng.choice(candidates))


COMPOSE_KINDS = {
    "colour": colour,
    "shape": shape,
    "position": move,
    "count": count,
    "background": background,
    "style": style,
    "size": size,
}
WRITE_KINDS = {"letter": letter, "background": background, "colour": colour}


def differs(a: Scene, b: Shape | Scene) -> bool:
    """True if two scenes differ in anything but their category label."""
    return dataclasses.replace(a, category="") != dataclasses.replace(b, category="")
