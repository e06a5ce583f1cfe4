"""Plain-English prompts: compose captions, write captions and edit instructions.

Several templates and synonyms per attribute, drawn from the same `random.Random` as the
scene, so the text encoder has to generalise rather than memorise one string per scene.
Every attribute a caption leaves out is fixed by the scene's category (see docs/data.md).
"""

from __future__ import annotations

import random

from omni_img.world.scenes import COUNT_LAYOUTS, Edit
from omni_img.world.spec import CELLS, Scene, Shape

COLOUR_WORDS = {c: (c,) for c in ("red", "orange", "yellow", "green", "blue", "purple", "pink")}
COLOUR_WORDS |= {
    "cyan": ("cyan", "light blue"),
    "white": ("white",),
    "black": ("black",),
    "grey": ("grey", "gray"),
}
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
PLURALS = {"cross": "crosses"}
STYLE_ADJECTIVES = {
    "filled": ("", "", "solid", "filled"),
    "outlined": ("outlined", "hollow"),
    "striped": ("striped", "stripy"),
    "soft": ("soft-edged", "blurry", "fuzzy"),
}
POSITION_PHRASES = {
    "top left": ("in the top left", "at the top left", "in the upper left corner"),
    "top": ("at the top", "at the top centre", "in the top middle"),
    "top right": ("in the top right", "at the top right", "in the upper right corner"),
    "left": ("on the left", "at the left", "in the middle left"),
    "centre": ("in the centre", "in the middle", "at the center"),
    "right": ("on the right", "at the right", "in the middle right"),
    "bottom left": ("in the bottom left", "at the bottom left", "in the lower left corner"),
    "bottom": ("at the bottom", "at the bottom centre", "in the bottom middle"),
    "bottom right": ("in the bottom right", "at the bottom right", "in the lower right corner"),
}
RELATION_PHRASES = {
    "left of": ("to the left of", "left of"),
    "right of": ("to the right of", "right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
BACKGROUND_TEMPLATES = (
    "on a {c} background",
    "against a {c} background",
    "on {c}",
    "with a {c} backdrop",
)
PREFIXES = ("", "", "a picture of ", "an image of ", "a drawing of ")
NUMBERS = {2: ("two", "2"), 3: ("three", "3")}
SURFACE_WORDS = {"sign": ("sign",), "banner": ("banner",), "card": ("card", "plain card")}


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _colour(rng: random.Random, colour: str) -> str:
    return rng.choice(COLOUR_WORDS[colour])


def _noun(rng: random.Random, obj: Shape, size: bool, plural: bool = False) -> str:
    """e.g. 'small red striped circle' (size optional), without an article."""
    words = []
    if size:
        words.append(rng.choice(SIZE_WORDS[obj.size]))
    words.append(_colour(rng, obj.colour))
    style = rng.choice(STYLE_ADJECTIVES[obj.style])
    if style:
        words.append(style)
    name = PLURALS.get(obj.shape, obj.shape + "s") if plural else obj.shape
    return " ".join(words + [name])


def _with_background(rng: random.Random, text: str, background: str) -> str:
    tail = rng.choice(BACKGROUND_TEMPLATES).format(c=_colour(rng, background))
    return f"{rng.choice(PREFIXES)}{text} {tail}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def compose_caption(rng: random.Random, scene: Scene) -> str:
    """The prompt of a compose scene; names every attribute its category does not fix."""
    objects = scene.objects
    if scene.category == "colours":  # one large object in the centre
        text = _article(_noun(rng, objects[0], size=False))
    elif scene.category == "counting":  # identical objects in a canonical layout
        assert tuple(o.position for o in objects) == COUNT_LAYOUTS[len(objects)]
        text = f"{rng.choice(NUMBERS[len(objects)])} {_noun(rng, objects[0], True, plural=True)}"
    elif scene.category == "position":  # two objects in the canonical layout of a relation
        a, b = objects
        relation = _relation(a, b)
        if rng.random() < 0.5:
            text = (
                f"{_article(_noun(rng, a, True))} "
                f"{rng.choice(RELATION_PHRASES[relation])} {_article(_noun(rng, b, True))}"
            )
        else:
            inverse = {"left of": "right of", "right of": "left of", "above": "below"}
            inverse["below"] = "above"
            text = (
                f"{_article(_noun(rng, b, True))} "
                f"{rng.choice(RELATION_PHRASES[inverse[relation]])} "
                f"{_article(_noun(rng, a, True))}"
            )
    else:
        text = _join([_placed(rng, obj) for obj in objects])
    return _with_background(rng, text, scene.background)


def _relation(a: Shape, b: Shape) -> str:
    (ax, ay), (bx, by) = (_cell_xy(a.position), _cell_xy(b.position))
    if ax != bx:
        return "left of" if ax < bx else "right of"
    return "above" if ay < by else "below"


def _cell_xy(position: str) -> tuple[int, int]:
    return CELLS[position]


def _placed(rng: random.Random, obj: Shape) -> str:
    return f"{_article(_noun(rng, obj, True))} {rng.choice(POSITION_PHRASES[obj.position])}"


def write_caption(rng: random.Random, scene: Scene) -> str:
    """The prompt of a word scene, e.g. 'a blue sign that says "river" on a white background'."""
    word = scene.word
    surface = rng.choice(SURFACE_WORDS[word.surface])
    colour = _colour(rng, word.colour)
    template = rng.choice(
        (
            '{a} {c} {s} that says "{w}"',
            '{a} {c} {s} with the word "{w}"',
            '{a} {c} {s} reading "{w}"',
            'the word "{w}" written on {a} {c} {s}',
            '{a} {s} in {c} that reads "{w}"',
        )
    )
    article = "an" if colour[0] in "aeiou" else "a"
    if template.startswith("{a} {s}"):
        article = "a"
    text = template.format(a=article, c=colour, s=surface, w=word.text)
    return _with_background(rng, text, scene.background)


def reference(rng: random.Random, scene: Scene, index: int) -> str:
    """The shortest unambiguous name of object `index` in scene, e.g. 'red circle on the left'."""
    obj = scene.objects[index]
    same = [o for o in scene.objects if (o.shape, o.colour) == (obj.shape, obj.colour)]
    name = f"{_colour(rng, obj.colour)} {obj.shape}"
    if len(same) > 1:
        name += " " + rng.choice(POSITION_PHRASES[obj.position])
    return name


def instruction(rng: random.Random, source: Scene, edit: Edit) -> str:
    """The plain-English instruction that turns source into edit.target."""
    op, value = edit.op, edit.value
    if source.word is not None:
        surface = source.word.surface
        if op == "recolour":
            c = _colour(rng, value)
            return rng.choice(
                (
                    f"make the {surface} {c}",
                    f"paint the {surface} {c}",
                    f"change the {surface} to {c}",
                )
            )
        if op == "word":
            return rng.choice(
                (
                    f'change the word to "{value}"',
                    f'make the {surface} say "{value}"',
                    f'replace "{source.word.text}" with "{value}"',
                )
            )
    if op == "background":
        c = _colour(rng, value)
        return rng.choice(
            (
                f"change the background to {c}",
                f"make the background {c}",
                f"use a {c} background",
            )
        )
    if op == "add":
        new = edit.target.objects[edit.subject]
        placed = _placed(rng, new)
        return rng.choice((f"add {placed}", f"put {placed}", f"also draw {placed}"))
    ref = reference(rng, source, edit.subject)
    if op == "recolour":
        c = _colour(rng, value)
        return rng.choice(
            (
                f"make the {ref} {c}",
                f"change the colour of the {ref} to {c}",
                f"paint the {ref} {c}",
            )
        )
    if op == "move":
        where = rng.choice(POSITION_PHRASES[value])
        return rng.choice((f"move the {ref} {where}", f"put the {ref} {where}"))
    if op == "remove":
        return rng.choice((f"remove the {ref}", f"delete the {ref}", f"take away the {ref}"))
    if op == "restyle":
        return rng.choice(
            {
                "filled": (f"make the {ref} solid", f"fill in the {ref}"),
                "outlined": (f"make the {ref} outlined", f"draw the {ref} as an outline"),
                "striped": (f"make the {ref} striped", f"give the {ref} stripes"),
                "soft": (f"make the {ref} soft-edged", f"soften the edges of the {ref}"),
            }[value]
        )
    raise AssertionError(op)
