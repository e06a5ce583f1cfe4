"""One-attribute perturbations of a scene, to prove a judge can fail.

Each function takes a scene and a `random.Random` and returns a valid scene that differs
from it in exactly one named way, or None when that kind cannot apply (e.g. no second
object to move). The judge self-test renders the perturbed scene and expects the judge,
given the *original* spec, to reject it.

Some mistakes no valid scene can express: an object touching another, or anything beside
a word's surface. The drawn perturbations (`DRAWN_COMPOSE_KINDS`, `DRAWN_WRITE_KINDS`)
take the scene, its render and a `random.Random` and paint one extra thing onto a copy
of the render, or return None where it does not fit.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
import string

import numpy as np
from PIL import Image, ImageDraw

from omni_img.world.render import SIGN_POST, SUPERSAMPLE, SURFACE_BOXES, object_alpha, shape_mask
from omni_img.world.scenes import ALL_CELLS, contrasts
from omni_img.world.spec import (
    BACKGROUND_COLOURS,
    COLOURS,
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


# ---------------------------------------------------------------- drawn additions

EXTRA_SIDES = (0.30, 0.25, 0.20)  # an extra object's box side, of the image side
# A stray object on a write scene may be smaller, to fit the strips a banner or card leaves;
# at 0.18 (12 px at 64 px) every shape still covers more than the judge's noise floor.
STRAY_SIDES = (0.25, 0.20, 0.18)
SIGN_SIDES = (0.30, 0.25, 0.20)  # a second sign's box side, largest first
# Where no sign fits (beside a banner or a card) the second surface is a flat board of
# this height, three times as wide.
BOARD_HEIGHTS = (0.16, 0.14, 0.12)
SURFACE_GAP_PX = 3  # a second surface keeps this far from everything, so it stays separate
DIRECTIONS = 16  # directions an extra object slides out from the object it will touch


def _coverage(mask_in_box, width_px: float, height_px: float) -> np.ndarray:
    """float32 (h, w) coverage of a drawing fitted to a width_px x height_px box, centred
    in a window 2 px larger (rounded up).

    mask_in_box(box, (w, h)) gives the bool (h, w) drawing at SUPERSAMPLE x, which is then
    box-filtered down as the renderer does.
    """
    w, h = math.ceil(width_px) + 2, math.ceil(height_px) + 2
    x0, y0 = (w - width_px) / 2 * SUPERSAMPLE, (h - height_px) / 2 * SUPERSAMPLE
    box = (x0, y0, x0 + width_px * SUPERSAMPLE, y0 + height_px * SUPERSAMPLE)
    big = mask_in_box(box, (w * SUPERSAMPLE, h * SUPERSAMPLE)).astype(np.float32)
    return big.reshape(h, SUPERSAMPLE, w, SUPERSAMPLE).mean(axis=(1, 3))


def _shape_coverage(shape_name: str, side_px: float) -> np.ndarray:
    return _coverage(lambda box, size: shape_mask(shape_name, box, size[0]), side_px, side_px)


def _rectangles_mask(parts, box, size) -> np.ndarray:
    """bool (h, w): rectangles given in fractions of box, drawn on a size = (w, h) canvas."""
    x0, y0, x1, y1 = box
    canvas = Image.new("L", size, 0)
    draw = ImageDraw.Draw(canvas)
    for part in parts:
        draw.rectangle(
            [x0 + part[0] * (x1 - x0), y0 + part[1] * (y1 - y0),
             x0 + part[2] * (x1 - x0) - 1, y0 + part[3] * (y1 - y0) - 1],
            fill=255,
        )  # fmt: skip
    return np.asarray(canvas) > 127


def _surfaces(resolution: int):
    """Coverage of second surfaces to try, largest first: signs, then flat boards."""
    # A board on a post, in the proportions of the write scenes' sign; a plain board.
    sign = functools.partial(_rectangles_mask, (SURFACE_BOXES["sign"], SIGN_POST))
    board = functools.partial(_rectangles_mask, ((0.0, 0.0, 1.0, 1.0),))
    for side in SIGN_SIDES:
        yield _coverage(sign, side * resolution, side * resolution)
    for height in BOARD_HEIGHTS:
        yield _coverage(board, 3 * height * resolution, height * resolution)


def _paint(image: np.ndarray, alpha: np.ndarray, corner: tuple[int, int], colour: str):
    """A copy of uint8 image with alpha (h, w) of colour composited at corner (x, y)."""
    out = image.astype(np.float32)
    x, y = corner
    window = out[y : y + alpha.shape[0], x : x + alpha.shape[1]]
    window += alpha[..., None] * (np.asarray(COLOURS[colour], np.float32) - window)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _drawn(image: np.ndarray, background: str) -> np.ndarray:
    """bool (R, R): every pixel that is not exactly the background colour."""
    return np.any(image != np.asarray(COLOURS[background], np.uint8), axis=-1)


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """mask dilated by `pixels` in the chessboard metric."""
    out = mask.copy()
    for _ in range(pixels):
        padded = np.pad(out, 1)
        out = np.zeros_like(out)
        for dy, dx in np.ndindex(3, 3):
            out |= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]]
    return out


def _free_corners(blocked: np.ndarray, shape: tuple[int, int]) -> list[tuple[int, int]]:
    """(x, y) of every (h, w) window, 1 px inside the border, that no blocked pixel enters."""
    (h, w), size = shape, blocked.shape[0]
    sums = np.pad(np.cumsum(np.cumsum(blocked, 0), 1), ((1, 0), (1, 0)))
    # Pixels inside window (y, x): a summed-area difference for every corner at once.
    ys, xs = np.arange(1, size - h), np.arange(1, size - w)
    counts = (
        sums[ys[:, None] + h, xs[None, :] + w]
        - sums[ys[:, None], xs[None, :] + w]
        - sums[ys[:, None] + h, xs[None, :]]
        + sums[ys[:, None], xs[None, :]]
    )
    return [(int(xs[j]), int(ys[i])) for i, j in zip(*np.nonzero(counts == 0), strict=True)]


def _object_mask(obj: Shape, resolution: int) -> np.ndarray:
    alpha, (x, y) = object_alpha(obj, resolution)
    mask = np.zeros((resolution, resolution), bool)
    mask[y : y + alpha.shape[0], x : x + alpha.shape[1]] = alpha > 0
    return mask


def _slide_until_touching(
    alpha: np.ndarray, target: np.ndarray, drawn: np.ndarray, angle: float
) -> tuple[int, int] | None:
    """Corner where alpha, slid out from target's centre along angle, first clears every
    drawn pixel while touching target; None if it leaves the image first."""
    size, n = drawn.shape[0], alpha.shape[0]
    footprint = alpha > 0
    ys, xs = np.nonzero(target)
    cx, cy = xs.mean(), ys.mean()
    for step in range(size):
        x = round(cx + step * math.cos(angle) - n / 2)
        y = round(cy + step * math.sin(angle) - n / 2)
        if not (1 <= x <= size - 1 - n and 1 <= y <= size - 1 - n):
            return None
        if not (drawn[y : y + n, x : x + n] & footprint).any():
            near = _grow(footprint, 1)
            return (x, y) if (target[y : y + n, x : x + n] & near).any() else None
    return None


def touching_object(scene: Scene, image: np.ndarray, rng: random.Random) -> np.ndarray | None:
    """An extra object of a colour the scene does not use, painted touching one of its objects."""
    used = {o.colour for o in scene.objects}
    colours = [c for c in OBJECT_COLOURS if c not in used and contrasts(c, scene.background)]
    if not scene.objects or not colours:
        return None
    resolution = image.shape[0]
    target = _object_mask(scene.objects[rng.randrange(len(scene.objects))], resolution)
    drawn = _drawn(image, scene.background) | target
    alpha = _shape_coverage(rng.choice(SHAPES), rng.choice(EXTRA_SIDES) * resolution)
    angles = [2 * math.pi * k / DIRECTIONS for k in range(DIRECTIONS)]
    rng.shuffle(angles)
    for angle in angles:
        corner = _slide_until_touching(alpha, target, drawn, angle)
        if corner is not None:
            return _paint(image, alpha, corner, rng.choice(colours))
    return None


def stray_object(scene: Scene, image: np.ndarray, rng: random.Random) -> np.ndarray | None:
    """An object beside a word's surface, anywhere on the free background (touching or not)."""
    if scene.word is None:
        return None
    colours = [
        c for c in OBJECT_COLOURS if c != scene.word.colour and contrasts(c, scene.background)
    ]
    shape_name, colour = rng.choice(SHAPES), rng.choice(colours)
    drawn = _drawn(image, scene.background)
    largest = rng.randrange(len(STRAY_SIDES))  # the largest side to try; smaller ones follow
    for side in STRAY_SIDES[largest:]:
        alpha = _shape_coverage(shape_name, side * image.shape[0])
        corners = _free_corners(drawn, alpha.shape)
        if corners:
            return _paint(image, alpha, rng.choice(corners), colour)
    return None


def second_sign(scene: Scene, image: np.ndarray, rng: random.Random) -> np.ndarray | None:
    """A second, blank surface in the word's surface colour, as large as the free background
    allows: a sign on a post, or a flat board where no sign fits."""
    if scene.word is None:
        return None
    blocked = _grow(_drawn(image, scene.background), SURFACE_GAP_PX)
    for alpha in _surfaces(image.shape[0]):
        corners = _free_corners(blocked, alpha.shape)
        if corners:
            return _paint(image, alpha, rng.choice(corners), scene.word.colour)
    return None


DRAWN_COMPOSE_KINDS = {"touching_object": touching_object}
DRAWN_WRITE_KINDS = {"stray_object": stray_object, "second_sign": second_sign}


def differs(a: Scene, b: Shape | Scene) -> bool:
    """True if two scenes differ in anything but their category label."""
    return dataclasses.replace(a, category="") != dataclasses.replace(b, category="")
