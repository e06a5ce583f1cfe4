"""Reading omni shapes scenes back from pixels: background, coloured regions, shape, style.

Everything here works from the image alone and tolerates imperfect pictures: a pixel
is explained as a mix of the background and one named colour (so anti-aliased and
soft edges are not mistaken for a third colour), regions below a minimum area are
noise, and shapes are classified by their best overlap with a template.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from PIL import Image
from scipy import ndimage

from omni_img.world.render import shape_mask, stripe_period
from omni_img.world.spec import CELL_CENTRES, COLOURS, OBJECT_COLOURS, POSITIONS, SHAPES, SIZES

MIN_AREA = 0.008  # of R^2: smaller regions are noise
MAX_RESIDUAL = (
    70.0  # RGB distance from the background-colour line beyond which a pixel is unexplained
)
EIGHT = np.ones((3, 3), bool)  # 8-connectivity


@dataclasses.dataclass
class Region:
    """A connected region of one named colour: ink mask, filled mask, box (x0, y0, x1, y1) px."""

    colour: str
    ink: np.ndarray  # bool (R, R): pixels labelled with this colour
    filled: np.ndarray  # bool (R, R): ink with its holes filled
    box: tuple[int, int, int, int]  # exclusive end

    @property
    def area(self) -> int:
        return int(self.ink.sum())

    def centre(self, resolution: int) -> tuple[float, float]:
        """Box centre in fractions of the side."""
        x0, y0, x1, y1 = self.box
        return ((x0 + x1) / 2 / resolution, (y0 + y1) / 2 / resolution)

    def side(self, resolution: int) -> float:
        """The box's longer side, as a fraction of the image side."""
        x0, y0, x1, y1 = self.box
        return max(x1 - x0, y1 - y0) / resolution


def rgb(name: str) -> np.ndarray:
    """float32 (3,) RGB of a named colour."""
    return np.asarray(COLOURS[name], np.float32)


def nearest_colour(pixel: np.ndarray, names: tuple[str, ...] = tuple(COLOURS)) -> str:
    """The named colour closest in RGB to a float (3,) pixel."""
    distances = [float(np.linalg.norm(pixel - rgb(n))) for n in names]
    return names[int(np.argmin(distances))]


def background(image: np.ndarray) -> tuple[str, np.ndarray]:
    """(name, float32 (3,) measured RGB) of the background: the median of the border pixels."""
    border = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])
    measured = np.median(border.astype(np.float32), axis=0)
    return nearest_colour(measured), measured


def alpha_towards(image: np.ndarray, bg: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """float32 (R, R) in [0, 1]: each pixel's position on the line from bg to colour."""
    direction = colour - bg
    offset = image.astype(np.float32) - bg
    return np.clip(offset @ direction / max(1.0, float(direction @ direction)), 0.0, 1.0)


def label_pixels(image: np.ndarray, bg: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """int (R, R): index into names of each pixel's colour, -1 for background or unexplained.

    A pixel belongs to colour c when it is at least half-way from the background to c and
    close to that line; among candidates the one with the smallest residual wins, with a
    small penalty for being far from the pure colour (so grey on white is grey, not a
    half-covered black).
    """
    pixels = image.astype(np.float32)
    scores, alphas = [], []
    for name in names:
        colour = rgb(name)
        alpha = alpha_towards(pixels, bg, colour)
        residual = np.linalg.norm(pixels - bg - alpha[..., None] * (colour - bg), axis=-1)
        penalty = 0.25 * (1 - alpha) * float(np.linalg.norm(colour - bg))
        scores.append(residual + penalty)
        alphas.append(np.where(residual <= MAX_RESIDUAL, alpha, 0.0))
    scores_k, alphas_k = np.stack(scores), np.stack(alphas)
    best = np.argmin(scores_k, axis=0)
    best_alpha = np.take_along_axis(alphas_k, best[None], axis=0)[0]
    return np.where(best_alpha >= 0.5, best, -1)


def regions(image: np.ndarray, bg: np.ndarray, names: tuple[str, ...]) -> list[Region]:
    """Connected regions (8-connected, gaps of 1 px bridged) of each colour in names."""
    resolution = image.shape[0]
    labels = label_pixels(image, bg, names)
    min_area = MIN_AREA * resolution * resolution
    out = []
    for k, name in enumerate(names):
        ink = labels == k
        if ink.sum() < min_area:
            continue
        # Dilate before labelling so that a hairline break does not split one object.
        components, count = ndimage.label(ndimage.binary_dilation(ink, EIGHT), structure=EIGHT)
        for index in range(1, count + 1):
            part = ink & (components == index)
            if part.sum() < min_area:
                continue
            ys, xs = np.nonzero(part)
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            filled = ndimage.binary_fill_holes(ndimage.binary_closing(part, EIGHT)) | part
            out.append(Region(name, part, filled, box))
    return out


def object_regions(image: np.ndarray, bg: np.ndarray, bg_name: str) -> list[Region]:
    """Regions of every object colour except the background's."""
    return regions(image, bg, tuple(c for c in OBJECT_COLOURS if c != bg_name))


@functools.cache
def _template(shape: str) -> np.ndarray:
    """bool (h, w): the filled shape cropped to its own box, drawn at 128 px."""
    mask = shape_mask(shape, (4.0, 4.0, 124.0, 124.0), 128)
    ys, xs = np.nonzero(mask)
    return mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def shape_scores(region: Region) -> dict[str, float]:
    """{shape: IoU of the region's filled mask with that shape's template in the same box}."""
    x0, y0, x1, y1 = region.box
    crop = region.filled[y0:y1, x0:x1]
    scores = {}
    for shape in SHAPES:
        template = Image.fromarray(_template(shape).astype(np.uint8) * 255)
        resized = np.asarray(template.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR)) > 127
        union = np.logical_or(resized, crop).sum()
        scores[shape] = float(np.logical_and(resized, crop).sum() / max(1, union))
    return scores


def classify_shape(region: Region) -> str:
    """The shape whose template overlaps the region best."""
    scores = shape_scores(region)
    return max(scores, key=scores.get)


def style_features(region: Region, image: np.ndarray, bg: np.ndarray) -> dict[str, float]:
    """Holes inside the shape (filled: none; striped: thin bands; outlined: larger) and softness.

    Softness is the number of part-covered pixels around the region per pixel of its
    outline: about 1 for an anti-aliased edge, several for a feathered one.
    """
    holes = region.filled & ~region.ink
    hole_fraction = float(holes.sum() / max(1, region.filled.sum()))
    parts, count = ndimage.label(holes)
    tallest = 0
    for rows, _ in ndimage.find_objects(parts) if count else []:
        tallest = max(tallest, rows.stop - rows.start)
    alpha = alpha_towards(image, bg, rgb(region.colour))
    near = ndimage.binary_dilation(region.filled, EIGHT, iterations=4)
    partial = near & (alpha > 0.1) & (alpha < 0.9)
    edge = region.filled & ~ndimage.binary_erosion(region.filled, EIGHT)
    return {
        # A striped shape's holes are the gaps between stripes: none taller than a gap.
        "tallest_hole": tallest / max(1, stripe_period(image.shape[0])),
        "hole_fraction": hole_fraction,
        "softness": float(partial.sum() / max(1, edge.sum())),
    }


SOFTNESS_THRESHOLD = 1.5  # filled edges measure <= 1.1, soft ones >= 2
SOLID_BELOW = 0.08  # hole fraction under which a shape counts as solid
STRIPE_GAP_MAX = 0.8  # tallest hole of a striped shape, in stripe periods (a gap is 0.5)


def classify_style(features: dict[str, float]) -> str:
    """'outlined', 'striped', 'soft' or 'filled' from style_features."""
    if features["hole_fraction"] >= SOLID_BELOW:
        return "striped" if features["tallest_hole"] <= STRIPE_GAP_MAX else "outlined"
    return "soft" if features["softness"] > SOFTNESS_THRESHOLD else "filled"


def cell_of(centre: tuple[float, float]) -> str:
    """The named grid cell whose centre is nearest to a (x, y) point in fractions."""
    column = int(np.argmin([abs(centre[0] - c) for c in CELL_CENTRES]))
    row = int(np.argmin([abs(centre[1] - c) for c in CELL_CENTRES]))
    return POSITIONS[(column, row)]


SIZE_THRESHOLD = (SIZES["small"] + SIZES["large"]) / 2


def size_of(side: float) -> str:
    """'small' or 'large' from a box side in fractions: the nearer of the two classes."""
    return "large" if side >= SIZE_THRESHOLD else "small"
