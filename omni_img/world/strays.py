"""Stray regions: is a region that no expected object explains an extra object or an edge?

A rendered edge is a mix of the background and the object's colour; at some mixes that
colour is nearer a third named colour (red on yellow goes through orange, red on white
through pink), so a thin region of that third colour can hug an object. Such a region
is the object's blended edge only if it touches the object and lies, but for a few
pixels, where the object's edge can be: within reach of the object and made of mixes of
the background and the object's colour. Anything else is a stray object, whatever it
touches.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from omni_img.world import segment

TOUCH_PX = 2  # a region this close (in pixels) to an expected object touches it
# How far an object's edge can reach, in fractions of the side: the soft style's
# feathered halo (3 sigma, sigma 0.1 of the object's side) is where it reaches farthest,
# and only its inner part is dark enough to be labelled as a colour.
EDGE_REACH = 0.08
# Pixels of an edge region allowed outside every object's edge zone, in fractions of
# R^2 (8 px at 64 px). Ground-truth renders leave none: 0 px in every region that no
# object explains, over 3,000 test examples at 64 px and 900 at 32 and 128 px, and 1,500
# blurred (sigma 0.6) or noisy (sigma 8, drift 10). An object of the self-test's
# touching_object or stray_object perturbation leaves at least 60 px at 64 px.
MAX_SPILL = 0.002


def edge_zone(image: np.ndarray, bg: np.ndarray, expected) -> np.ndarray:
    """bool (R, R): where the expected objects' blended edges can be.

    expected: [(bool (R, R) filled mask, colour name)]. A pixel is in the zone if it is
    within EDGE_REACH of an object and is explained as a mix of the background and that
    object's colour (within segment.MAX_RESIDUAL of the mixing line).
    """
    pixels = image.astype(np.float32)
    reach = max(TOUCH_PX, round(EDGE_REACH * image.shape[0]))
    zone = np.zeros(image.shape[:2], bool)
    for filled, colour in expected:
        target = segment.rgb(colour)
        alpha = segment.alpha_towards(pixels, bg, target)
        residual = np.linalg.norm(pixels - bg - alpha[..., None] * (target - bg), axis=-1)
        near = ndimage.binary_dilation(filled, segment.EIGHT, iterations=reach)
        zone |= near & (alpha > 0) & (residual <= segment.MAX_RESIDUAL)
    return zone


def is_edge(ink: np.ndarray, touching: np.ndarray, zone: np.ndarray) -> bool:
    """True if the pixels `ink` touch an expected object and spill out of its edge zone
    by no more than MAX_SPILL."""
    spill = int((ink & ~zone).sum())
    return bool((ink & touching).any()) and spill <= MAX_SPILL * ink.shape[0] ** 2


def first_stray(
    image: np.ndarray, bg: np.ndarray, unexplained: list[tuple[str, np.ndarray]], expected
) -> str | None:
    """The colour of the first unexplained region that is not an expected object's edge.

    unexplained: [(colour, bool (R, R) pixels)]; expected: [(filled mask, colour)].
    """
    if not unexplained:
        return None
    filled = np.zeros(image.shape[:2], bool)
    for mask, _ in expected:
        filled |= mask
    touching = ndimage.binary_dilation(filled, iterations=TOUCH_PX)
    zone = edge_zone(image, bg, expected)
    for colour, ink in unexplained:
        if not is_edge(ink, touching, zone):
            return colour
    return None
