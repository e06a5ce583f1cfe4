"""The deterministic renderer: Scene -> uint8 RGB pixels.

Shapes are drawn as masks at 4x the output resolution with Pillow and box-filtered
down, which anti-aliases every edge the same way on every machine. Colours are then
composited in float32 and rounded once. Text uses Pillow's bundled TrueType font
(`ImageFont.load_default(size=...)`), so no system font is needed.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from omni_img.world.spec import COLOURS, SIZES, Scene, Shape, Word, text_colour

SUPERSAMPLE = 4
MIN_RESOLUTION, MAX_RESOLUTION = 32, 256

# Surface geometry, in fractions of the side: the surface's box, where the text line is
# centred, and the widest the text may be.
SURFACE_BOXES: dict[str, tuple[float, float, float, float]] = {
    "banner": (0.0, 0.26, 1.0, 0.74),
    "sign": (0.08, 0.12, 0.92, 0.60),
    "card": (0.08, 0.24, 0.92, 0.76),
}
SIGN_POST = (0.45, 0.60, 0.55, 0.94)
CARD_CORNER = 0.08
TEXT_CENTRE_Y = {"banner": 0.5, "sign": 0.36, "card": 0.5}
TEXT_MAX_WIDTH = {"banner": 0.90, "sign": 0.78, "card": 0.76}
TEXT_LINE_HEIGHT = 0.30  # ascender top to descender bottom; x-height is ~0.72 of it
MIN_SQUEEZE = 0.65  # narrowest horizontal squeeze before long words also get shorter
STRIPED_RIM = 0.5  # a striped shape's rim, as a fraction of the outlined style's line
SOFT_HALO = 0.8  # peak opacity of the soft style's halo (below 1: the halo never hides the edge)


def outline_width(side_px: float) -> float:
    """Outline thickness in output pixels for an object whose box side is side_px."""
    return max(2.0, 0.13 * side_px)


def stripe_period(resolution: int) -> int:
    """Period in output pixels of the striped style's horizontal stripes (half ink)."""
    return max(4, round(0.1 * resolution))


def soft_sigma(side_px: float) -> float:
    """Gaussian sigma in output pixels of the soft style's blurred edge."""
    return max(1.5, 0.1 * side_px)


def shape_polygon(shape: str, box: tuple[float, float, float, float]) -> list[tuple[float, float]]:
    """Vertices (x, y) of a polygonal shape fitted to box (x0, y0, x1, y1); not for circles."""
    x0, y0, x1, y1 = box
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    if shape == "square":
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if shape == "triangle":
        return [(cx, y0), (x1, y1), (x0, y1)]
    if shape == "diamond":
        return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    if shape == "cross":
        a = 0.19  # half the arm width, as a fraction of the side
        xs = (x0, cx - a * w, cx + a * w, x1)
        ys = (y0, cy - a * h, cy + a * h, y1)
        return [
            (xs[1], ys[0]), (xs[2], ys[0]), (xs[2], ys[1]), (xs[3], ys[1]),
            (xs[3], ys[2]), (xs[2], ys[2]), (xs[2], ys[3]), (xs[1], ys[3]),
            (xs[1], ys[2]), (xs[0], ys[2]), (xs[0], ys[1]), (xs[1], ys[1]),
        ]  # fmt: skip
    if shape == "star":
        # Five points, fat inner radius so the star survives small sizes; scaled so its
        # widest extent fills the box and centred on it.
        points = []
        for k in range(10):
            radius = 1.0 if k % 2 == 0 else 0.5
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((radius * math.cos(angle), radius * math.sin(angle)))
        xs_, ys_ = [p[0] for p in points], [p[1] for p in points]
        scale = min(w / (max(xs_) - min(xs_)), h / (max(ys_) - min(ys_)))
        mid_x, mid_y = (max(xs_) + min(xs_)) / 2, (max(ys_) + min(ys_)) / 2
        return [(cx + (px - mid_x) * scale, cy + (py - mid_y) * scale) for px, py in points]
    raise ValueError(f"unknown shape {shape!r}")


def shape_mask(shape: str, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """bool (size, size): the filled shape in box (pixel coordinates of a size x size canvas)."""
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse(box, fill=255)
    else:
        draw.polygon(shape_polygon(shape, box), fill=255)
    return np.asarray(image) > 127


def _downsample(mask: Image.Image) -> np.ndarray:
    """float32 (h/4, w/4) coverage in [0, 1] of an "L" mask drawn at SUPERSAMPLE x: a box filter."""
    size = (mask.width // SUPERSAMPLE, mask.height // SUPERSAMPLE)
    small = mask.resize(size, Image.Resampling.BOX)
    return np.asarray(small, np.float32) / 255.0


def _gaussian_blur(alpha: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a float32 (H, W) map, zero outside."""
    radius = max(1, math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    out = alpha
    for axis in (0, 1):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)])
        acc = np.zeros_like(out)
        for k, tap in enumerate(taps):
            acc += tap * np.take(padded, range(k, k + out.shape[axis]), axis=axis)
        out = acc
    return out


def object_alpha(obj: Shape, resolution: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The object's coverage: float32 (h, w) in [0, 1] and the (x, y) of its window's corner.

    Only a window around the object is drawn (4x supersampled, box-filtered down), which
    keeps the cost per object independent of the resolution's square.
    """
    side_px = SIZES[obj.size] * resolution
    x0, y0, x1, y1 = (v * resolution for v in obj.box())
    pad = 1 + (math.ceil(3 * soft_sigma(side_px)) if obj.style == "soft" else 0)
    wx0, wy0 = max(0, math.floor(x0) - pad), max(0, math.floor(y0) - pad)
    wx1, wy1 = min(resolution, math.ceil(x1) + pad), min(resolution, math.ceil(y1) + pad)
    size = ((wx1 - wx0) * SUPERSAMPLE, (wy1 - wy0) * SUPERSAMPLE)
    box = (
        (x0 - wx0) * SUPERSAMPLE,
        (y0 - wy0) * SUPERSAMPLE,
        (x1 - wx0) * SUPERSAMPLE,
        (y1 - wy0) * SUPERSAMPLE,
    )
    image = Image.new("L", size, 0)
    draw = ImageDraw.Draw(image)
    polygon = None if obj.shape == "circle" else shape_polygon(obj.shape, box)
    if obj.style in ("filled", "soft"):
        _draw_shape(draw, box, polygon, fill=255)
    else:
        # Striped shapes get a thinner rim, so that their stripes show even when small.
        rim = outline_width(side_px) * (STRIPED_RIM if obj.style == "striped" else 1.0)
        _draw_shape(draw, box, polygon, outline=255, width=round(rim * SUPERSAMPLE))
        if obj.style == "striped":
            # Stripes follow the image's rows, not the object's, so they stay crisp.
            half = stripe_period(resolution) * SUPERSAMPLE // 2
            rows = ((np.arange(size[1]) + wy0 * SUPERSAMPLE) // half) % 2 == 0
            filled = Image.new("L", size, 0)
            _draw_shape(ImageDraw.Draw(filled), box, polygon, fill=255)
            stripes = np.where(rows[:, None], np.asarray(filled), 0).astype(np.uint8)
            image = Image.fromarray(np.maximum(np.asarray(image), stripes))
    alpha = _downsample(image)
    if obj.style == "soft":
        # A feathered halo outside a hard core: the edge looks soft, yet the half-covered
        # outline is still the exact shape (a plain blur would round a small star to a disc).
        alpha = np.maximum(alpha, SOFT_HALO * _gaussian_blur(alpha, soft_sigma(side_px)))
    return alpha, (wx0, wy0)


def _draw_shape(draw: ImageDraw.ImageDraw, box, polygon, **style) -> None:
    if polygon is None:
        draw.ellipse(box, **style)
    else:
        draw.polygon(polygon, **style)


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def text_alpha(word: Word, resolution: int) -> np.ndarray:
    """float32 (R, R) in [0, 1]: the word's ink, placed and sized for its surface."""
    big = resolution * SUPERSAMPLE
    line_px = TEXT_LINE_HEIGHT * big
    # The bundled font's glyphs span 0.2..1.2 of the font size (ascender to descender).
    font = _font(max(8, round(line_px)))
    top, bottom = round(0.2 * font.size), round(1.2 * font.size)
    width = math.ceil(font.getlength(word.text)) + 2
    line = Image.new("L", (width, bottom), 0)
    ImageDraw.Draw(line).text((1, 0), word.text, fill=255, font=font)
    line = line.crop((0, top, width, bottom))
    max_width = TEXT_MAX_WIDTH[word.surface] * big
    squeeze = min(1.0, max_width / line.width)
    x_scale = max(squeeze, MIN_SQUEEZE)
    y_scale = squeeze / x_scale  # long words get shorter only past the squeeze limit
    new_w = max(1, round(line.width * x_scale))
    new_h = max(1, round(line.height * y_scale))
    line = line.resize((new_w, new_h), Image.Resampling.BILINEAR)
    canvas = Image.new("L", (big, big), 0)
    left = round(big / 2 - new_w / 2)
    top_px = round(TEXT_CENTRE_Y[word.surface] * big - new_h / 2)
    canvas.paste(line, (left, top_px))
    return _downsample(canvas)


def surface_alpha(word: Word, resolution: int) -> np.ndarray:
    """float32 (R, R) in [0, 1]: the surface (banner, sign with its post, or card)."""
    big = resolution * SUPERSAMPLE
    image = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(image)
    box = [v * big for v in SURFACE_BOXES[word.surface]]
    if word.surface == "card":
        draw.rounded_rectangle(box, radius=CARD_CORNER * big, fill=255)
    else:
        draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=255)
    if word.surface == "sign":
        post = [v * big for v in SIGN_POST]
        draw.rectangle([post[0], post[1], post[2] - 1, post[3] - 1], fill=255)
    return _downsample(image)


def _paint(canvas: np.ndarray, alpha: np.ndarray, colour: str, corner=(0, 0)) -> None:
    x, y = corner
    window = canvas[y : y + alpha.shape[0], x : x + alpha.shape[1]]
    rgb = np.asarray(COLOURS[colour], np.float32)
    window += alpha[..., None] * (rgb - window)


def render(scene: Scene, resolution: int = 64) -> np.ndarray:
    """uint8 (R, R, 3): the scene drawn at R x R pixels (R in 32..256, a multiple of 4)."""
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION or resolution % 4:
        raise ValueError(f"resolution must be a multiple of 4 in 32..256, got {resolution}")
    canvas = np.empty((resolution, resolution, 3), np.float32)
    canvas[:] = np.asarray(COLOURS[scene.background], np.float32)
    for obj in scene.objects:
        alpha, corner = object_alpha(obj, resolution)
        _paint(canvas, alpha, obj.colour, corner)
    if scene.word is not None:
        _paint(canvas, surface_alpha(scene.word, resolution), scene.word.colour)
        _paint(canvas, text_alpha(scene.word, resolution), text_colour(scene.word.colour))
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
