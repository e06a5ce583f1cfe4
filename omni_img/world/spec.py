"""The scene spec of the omni shapes dataset: a small, JSON-serialisable dataclass tree.

A `Scene` is everything an image shows: a background colour, up to three `Shape`s and
an optional `Word` written on a surface. The renderer (`render.py`) turns a scene into
pixels and the judge (`omni_img.world.judge`) checks pixels against one. Geometry is
never stored free-form: an object's box follows from its grid cell and size class, so
every visible attribute has a name that a caption can state.

Coordinates are fractions of the image side, (x0, y0, x1, y1), origin top left.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

# Named colours, RGB. Chosen far apart in RGB (the closest pair, orange and yellow, is
# ~97 apart) so that a tolerant nearest-colour judge can still tell them apart.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (250, 130, 20),
    "yellow": (245, 225, 40),
    "green": (40, 160, 60),
    "cyan": (40, 200, 220),
    "blue": (40, 80, 220),
    "purple": (140, 60, 190),
    "pink": (245, 130, 200),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
    "grey": (128, 128, 128),
}
OBJECT_COLOURS: tuple[str, ...] = tuple(c for c in COLOURS if c != "grey")
BACKGROUND_COLOURS: tuple[str, ...] = ("white", "black", "grey", "yellow", "blue", "pink", "cyan")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "cross")
STYLES: tuple[str, ...] = ("filled", "outlined", "striped", "soft")
# Side of an object's box. Small objects are 23 px at 64 px: at 20 px (0.32) the points
# of a small star took up less than a 4 px token and the tokenizer rounded a third of
# them into circles.
SIZES: dict[str, float] = {"small": 0.36, "large": 0.48}
SURFACES: tuple[str, ...] = ("sign", "banner", "card")

# The 3x3 grid of named positions: (column, row) -> name. Cell centres sit at 1/4, 1/2
# and 3/4 of the side, so a cell name is unambiguous from an object's box centre.
CELL_CENTRES: tuple[float, ...] = (0.25, 0.5, 0.75)
POSITIONS: dict[tuple[int, int], str] = {
    (0, 0): "top left",
    (1, 0): "top",
    (2, 0): "top right",
    (0, 1): "left",
    (1, 1): "centre",
    (2, 1): "right",
    (0, 2): "bottom left",
    (1, 2): "bottom",
    (2, 2): "bottom right",
}
CELLS: dict[str, tuple[int, int]] = {name: cell for cell, name in POSITIONS.items()}
MARGIN = 0.03  # boxes are kept this far inside the image
MIN_GAP = 0.05  # two objects' boxes are at least this far apart along x or y

TASKS: tuple[str, ...] = ("compose", "write", "edit")
# GenEval's six prompt categories; every compose scene belongs to one.
CATEGORIES: tuple[str, ...] = (
    "single_object",
    "two_objects",
    "counting",
    "colours",
    "position",
    "colour_attribution",
)
EDIT_OPS: tuple[str, ...] = (
    "recolour",
    "move",
    "add",
    "remove",
    "restyle",
    "background",
    "word",
)


@dataclasses.dataclass(frozen=True)
class Shape:
    """One object: a shape of a named colour, size class, grid cell and drawing style."""

    shape: str
    colour: str
    size: str = "small"
    position: str = "centre"
    style: str = "filled"

    def box(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) in fractions of the image side; centred on the cell, kept inside."""
        column, row = CELLS[self.position]
        side = SIZES[self.size]
        half = side / 2
        lo, hi = MARGIN + half, 1 - MARGIN - half
        cx = min(max(CELL_CENTRES[column], lo), hi)
        cy = min(max(CELL_CENTRES[row], lo), hi)
        return (cx - half, cy - half, cx + half, cy + half)


@dataclasses.dataclass(frozen=True)
class Word:
    """A word written in black or white (whichever contrasts) on a coloured surface."""

    text: str
    colour: str  # the surface's colour
    surface: str = "sign"


@dataclasses.dataclass(frozen=True)
class Scene:
    """A whole image: background, 0-3 objects, an optional word; `category` is for compose."""

    background: str
    objects: tuple[Shape, ...] = ()
    word: Word | None = None
    category: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; object boxes are included for readers but ignored on load."""
        return {
            "background": self.background,
            "objects": [
                {**dataclasses.asdict(obj), "box": [round(v, 4) for v in obj.box()]}
                for obj in self.objects
            ],
            "word": None if self.word is None else dataclasses.asdict(self.word),
            "category": self.category,
        }


def validate(scene: Scene) -> None:
    """Raise ValueError if a scene names an unknown attribute or its objects collide."""
    if scene.background not in COLOURS:
        raise ValueError(f"unknown background colour {scene.background!r}")
    if scene.category and scene.category not in CATEGORIES:
        raise ValueError(f"unknown category {scene.category!r}")
    for obj in scene.objects:
        for value, allowed, what in (
            (obj.shape, SHAPES, "shape"),
            (obj.colour, OBJECT_COLOURS, "colour"),
            (obj.size, SIZES, "size"),
            (obj.position, CELLS, "position"),
            (obj.style, STYLES, "style"),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {what} {value!r}")
        if obj.colour == scene.background:
            raise ValueError(f"a {obj.colour} object on a {obj.colour} background")
    if not layout_is_clear(scene.objects):
        raise ValueError("objects overlap or sit too close")
    if scene.word is not None:
        if scene.objects:
            raise ValueError("a scene holds either objects or a word, not both")
        if scene.word.surface not in SURFACES:
            raise ValueError(f"unknown surface {scene.word.surface!r}")
        if scene.word.colour not in OBJECT_COLOURS or scene.word.colour == scene.background:
            raise ValueError(f"bad surface colour {scene.word.colour!r}")
        if not (scene.word.text.isascii() and scene.word.text.isalpha()):
            raise ValueError(f"a word must be ASCII letters, got {scene.word.text!r}")


def boxes_apart(a: tuple[float, ...], b: tuple[float, ...], gap: float = MIN_GAP) -> bool:
    """True if boxes a and b (x0, y0, x1, y1) are at least `gap` apart along x or along y."""
    x_gap = max(a[0] - b[2], b[0] - a[2])
    y_gap = max(a[1] - b[3], b[1] - a[3])
    return max(x_gap, y_gap) >= gap - 1e-9


def layout_is_clear(objects: tuple[Shape, ...] | list[Shape]) -> bool:
    """True if every pair of objects is separated by at least MIN_GAP."""
    boxes = [obj.box() for obj in objects]
    return all(
        boxes_apart(boxes[i], boxes[j]) for i in range(len(boxes)) for j in range(i + 1, len(boxes))
    )


def spec_to_json(scene: Scene | None) -> str:
    """Scene -> compact JSON text (sorted keys, so equal scenes give equal bytes); None -> ""."""
    if scene is None:
        return ""
    return json.dumps(scene.to_dict(), sort_keys=True, separators=(",", ":"))


def spec_from_json(text: str | dict[str, Any]) -> Scene:
    """JSON text (or its parsed dict) -> Scene. Raises ValueError on a malformed spec."""
    data = json.loads(text) if isinstance(text, str) else text
    try:
        objects = tuple(
            Shape(**{k: v for k, v in obj.items() if k != "box"}) for obj in data["objects"]
        )
        word = None if data.get("word") is None else Word(**data["word"])
        scene = Scene(
            background=data["background"],
            objects=objects,
            word=word,
            category=data.get("category", ""),
        )
    except (KeyError, TypeError) as error:
        raise ValueError(f"malformed spec: {error}") from error
    validate(scene)
    return scene


def text_colour(surface_colour: str) -> str:
    """The fixed ink colour for a surface: black on light colours, white on dark ones."""
    r, g, b = COLOURS[surface_colour]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "white"
