"""The omni shapes judge: does an image show the scene it was asked for?

`judge(image, spec, task, source_image, source_spec)` reads the image's pixels only (it
never sees a render of the spec) and returns a `Verdict` with a reason:

- compose: background colour; per colour the number of objects; no unexpected object
  (`strays`: only an expected object's blended edge may have another colour);
  then each object's shape, style, size class and grid cell.
- write: background, surface colour and kind, nothing else beside the surface (no
  object, no second surface), and the word read by Tesseract (exact match; the
  character error rate is reported too).
- edit: the target scene checked as compose or write, and every object the instruction
  did not touch must sit where it sat in the source image, at the same size.

`summarize` aggregates verdicts per task, per GenEval category (compose) and per edit op.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from omni_img.world import ocr, segment, strays
from omni_img.world.render import SURFACE_BOXES
from omni_img.world.spec import CATEGORIES, Scene, Shape, spec_from_json, text_colour

MAX_SHIFT = 0.08  # of the side: how far an untouched object may drift in an edit
MAX_SCALE = 1.3  # how much an untouched object may grow or shrink in an edit


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Pass/fail, the first reason it failed ("ok" if it passed), and what was measured."""

    passed: bool
    reason: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


def as_scene(spec: Scene | str | dict | None) -> Scene | None:
    """A Scene from a Scene, its JSON text or its dict; None (or "") stays None."""
    if spec is None or isinstance(spec, Scene):
        return spec
    if isinstance(spec, bytes):
        spec = spec.decode()
    return None if spec == "" else spec_from_json(spec)


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1]:
        raise ValueError(f"expected a square (R, R, 3) image, got shape {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return image


# ---------------------------------------------------------------- compose


def match_objects(
    image: np.ndarray, scene: Scene
) -> tuple[str | None, list[tuple[Shape, segment.Region]], dict[str, Any]]:
    """Find scene's objects in image: (failure reason or None, [(object, region)], details)."""
    resolution = image.shape[0]
    bg_name, bg = segment.background(image)
    details: dict[str, Any] = {"background": bg_name}
    if bg_name != scene.background:
        return f"background is {bg_name}, expected {scene.background}", [], details
    found = segment.object_regions(image, bg, bg_name)
    by_colour: dict[str, list[segment.Region]] = defaultdict(list)
    for region in found:
        by_colour[region.colour].append(region)
    expected: dict[str, list[Shape]] = defaultdict(list)
    for obj in scene.objects:
        expected[obj.colour].append(obj)
    details["found"] = {c: len(r) for c, r in by_colour.items()}
    for colour, objects in expected.items():
        if len(by_colour[colour]) != len(objects):
            return (
                f"found {len(by_colour[colour])} {colour} object(s), expected {len(objects)}",
                [],
                details,
            )
    kept = [(r.filled, r.colour) for r in found if r.colour in expected]
    unexplained = [(r.colour, r.ink) for r in found if r.colour not in expected]
    stray = strays.first_stray(image, bg, unexplained, kept)
    if stray is not None:
        return f"unexpected {stray} object", [], details
    matches: list[tuple[Shape, segment.Region]] = []
    for colour, objects in expected.items():
        candidates = by_colour[colour]
        best = min(
            itertools.permutations(candidates),
            key=lambda order: sum(
                _distance(obj, region, resolution) for obj, region in zip(objects, order)
            ),
        )
        matches.extend(zip(objects, best, strict=True))
    return None, matches, details


def _distance(obj: Shape, region: segment.Region, resolution: int) -> float:
    box = obj.box()
    cx, cy = region.centre(resolution)
    return abs(cx - (box[0] + box[2]) / 2) + abs(cy - (box[1] + box[3]) / 2)


def check_objects(image: np.ndarray, scene: Scene) -> Verdict:
    """Compose check of image against scene (objects, background)."""
    resolution = image.shape[0]
    reason, matches, details = match_objects(image, scene)
    if reason is not None:
        return Verdict(False, reason, details)
    _, bg = segment.background(image)
    seen = []
    failure = None
    for obj, region in matches:
        features = segment.style_features(region, image, bg)
        measured = {
            "shape": segment.classify_shape(region),
            "style": segment.classify_style(features),
            "size": segment.size_of(region.side(resolution)),
            "position": segment.cell_of(region.centre(resolution)),
        }
        seen.append({"colour": obj.colour, **measured, **features})
        if failure is None:
            for attribute in ("shape", "style", "size", "position"):
                want = getattr(obj, attribute)
                if measured[attribute] != want:
                    failure = f"{obj.colour} {obj.shape}: {attribute} is {measured[attribute]}"
                    failure += f", expected {want}"
                    break
    details["objects"] = seen
    return Verdict(failure is None, failure or "ok", details)


# ---------------------------------------------------------------- write


def _surface(image: np.ndarray, bg_name: str) -> tuple[str, np.ndarray] | None:
    """(colour, bool (R, R) filled mask) of the largest non-background colour, or None."""
    pixels = image.astype(np.float32)
    names = [c for c in segment.OBJECT_COLOURS if c != bg_name]
    distances = np.stack([np.linalg.norm(pixels - segment.rgb(c), axis=-1) for c in names])
    nearest = np.argmin(distances, axis=0)
    close = np.min(distances, axis=0) < segment.MAX_RESIDUAL
    counts = np.bincount(nearest[close], minlength=len(names))
    if counts.max() < 0.1 * image.shape[0] ** 2:
        return None
    k = int(np.argmax(counts))
    components, count = ndimage.label((nearest == k) & close)
    largest = 1 + int(
        np.argmax(ndimage.sum_labels(np.ones_like(components), components, range(1, count + 1)))
    )
    mask = ndimage.binary_fill_holes(components == largest)
    return names[k], mask


def _surface_kind(mask: np.ndarray) -> str:
    """'banner' if the surface spans the width, 'sign' if it has a post, else 'card'."""
    r = mask.shape[0]
    if mask[:, 0].sum() > 0.2 * r and mask[:, -1].sum() > 0.2 * r:
        return "banner"
    post = mask[int(0.72 * r) : int(0.9 * r), int(0.4 * r) : int(0.6 * r)]
    return "sign" if post.mean() > 0.3 else "card"


def word_crop(image: np.ndarray, scene: Scene) -> np.ndarray | None:
    """uint8 (h, w) dark-on-white crop of the text on the surface, for OCR; None if no surface."""
    bg_name, _ = segment.background(image)
    found = _surface(image, bg_name)
    if found is None:
        return None
    colour, mask = found
    inside = ndimage.binary_erosion(mask, iterations=2)
    if not inside.any():
        return None
    ys, xs = np.nonzero(inside)
    r = image.shape[0]
    # The text line sits in the board's upper part on a sign: drop the post below it.
    y_end = ys.max() + 1
    if scene.word is not None and scene.word.surface == "sign":
        y_end = min(y_end, int(SURFACE_BOXES["sign"][3] * r))
    box = (xs.min(), ys.min(), xs.max() + 1, y_end)
    crop = image[box[1] : box[3], box[0] : box[2]].astype(np.float32)
    surface_rgb = np.median(image[inside].astype(np.float32), axis=0)
    ink_rgb = segment.rgb(text_colour(colour))
    scale = max(60.0, 0.8 * float(np.linalg.norm(ink_rgb - surface_rgb)))
    ink = np.clip(np.linalg.norm(crop - surface_rgb, axis=-1) / scale, 0, 1)
    ink[~inside[box[1] : box[3], box[0] : box[2]]] = 0
    return np.rint(255 * (1 - ink)).astype(np.uint8)


def check_word(image: np.ndarray, scene: Scene, read: str | None = None) -> Verdict:
    """Write check of image against scene; `read` is the OCR text if already known."""
    bg_name, _ = segment.background(image)
    details: dict[str, Any] = {"background": bg_name}
    if bg_name != scene.background:
        return Verdict(False, f"background is {bg_name}, expected {scene.background}", details)
    found = _surface(image, bg_name)
    if found is None:
        return Verdict(False, "no surface found", details)
    colour, mask = found
    details.update(surface_colour=colour, surface=_surface_kind(mask))
    if read is None:
        crop = word_crop(image, scene)
        read = "" if crop is None else ocr.read_lines([crop])[0]
    expected = scene.word.text
    details.update(read=read, exact=read == expected, cer=ocr.character_error_rate(read, expected))
    if colour != scene.word.colour:
        return Verdict(False, f"surface is {colour}, expected {scene.word.colour}", details)
    if details["surface"] != scene.word.surface:
        return Verdict(
            False, f"surface is a {details['surface']}, expected a {scene.word.surface}", details
        )
    stray = _stray_beside_surface(image, bg_name, colour, mask)
    if stray is not None:
        return Verdict(False, stray, details)
    if read != expected:
        return Verdict(False, f'read "{read}", expected "{expected}"', details)
    return Verdict(True, "ok", details)


def _stray_beside_surface(
    image: np.ndarray, bg_name: str, colour: str, mask: np.ndarray
) -> str | None:
    """Why the background around the surface is not plain (another object, a second
    surface), or None. What lies on the surface is the word's; the surface's own edge
    may blend into a third colour, as an object's does."""
    _, bg = segment.background(image)
    outside = [(r.colour, r.ink & ~mask) for r in segment.object_regions(image, bg, bg_name)]
    stray = strays.first_stray(image, bg, [o for o in outside if o[1].any()], [(mask, colour)])
    if stray is None:
        return None
    return f"a second {colour} surface" if stray == colour else f"unexpected {stray} object"


# ---------------------------------------------------------------- edit


def untouched(source: Scene, target: Scene) -> list[Shape]:
    """Objects of target that appear unchanged in source (as a multiset)."""
    remaining = Counter(source.objects)
    out = []
    for obj in target.objects:
        if remaining[obj] > 0:
            remaining[obj] -= 1
            out.append(obj)
    return out


def check_edit(
    image: np.ndarray,
    scene: Scene,
    source_image: np.ndarray | None,
    source: Scene | None,
    read: str | None = None,
) -> Verdict:
    """The target scene must hold, and objects the edit left alone must not have moved."""
    verdict = check_word(image, scene, read) if scene.word else check_objects(image, scene)
    if not verdict.passed or source_image is None or source is None or not scene.objects:
        return verdict
    resolution = image.shape[0]
    _, after = match_objects(image, scene)[:2]
    reason, before, _ = match_objects(source_image, source)
    if reason is not None:  # the source does not show its own spec: nothing to compare
        return Verdict(verdict.passed, verdict.reason, {**verdict.details, "source": reason})
    before_of = defaultdict(list)
    for obj, region in before:
        before_of[obj].append(region)
    for obj in untouched(source, scene):
        region = next(r for o, r in after if o == obj)
        was = min(before_of[obj], key=lambda r: _gap(r, region, resolution))
        shift = _gap(was, region, resolution)
        scale = region.side(resolution) / max(1e-6, was.side(resolution))
        if shift > MAX_SHIFT or not 1 / MAX_SCALE <= scale <= MAX_SCALE:
            return Verdict(
                False,
                f"untouched {obj.colour} {obj.shape} changed "
                f"(moved {shift:.2f}, scale {scale:.2f})",
                verdict.details,
            )
    return verdict


def _gap(a: segment.Region, b: segment.Region, resolution: int) -> float:
    (ax, ay), (bx, by) = a.centre(resolution), b.centre(resolution)
    return float(np.hypot(ax - bx, ay - by))


# ---------------------------------------------------------------- API


def judge(
    image: np.ndarray,
    spec: Scene | str | dict,
    task: str,
    source_image: np.ndarray | None = None,
    source_spec: Scene | str | dict | None = None,
    *,
    read: str | None = None,
) -> Verdict:
    """Judge one uint8 (R, R, 3) image against the spec it was asked for.

    task: "compose", "write" or "edit" (edit also takes the source image and spec).
    read: the OCR text of the image's word when the caller already ran OCR (judge_batch).
    """
    image = _check_image(image)
    scene = as_scene(spec)
    if task == "compose":
        return check_objects(image, scene)
    if task == "write":
        return check_word(image, scene, read)
    if task == "edit":
        source = as_scene(source_spec)
        source_image = None if source_image is None else _check_image(source_image)
        if source_image is not None and not source_image.any() and source is None:
            source_image = None
        return check_edit(image, scene, source_image, source, read)
    raise ValueError(f"unknown task {task!r}; expected compose, write or edit")


def judge_batch(
    images: Sequence[np.ndarray],
    specs: Sequence[Scene | str | dict],
    tasks: Sequence[str],
    source_images: Sequence[np.ndarray | None] | None = None,
    source_specs: Sequence[Scene | str | dict | None] | None = None,
) -> list[Verdict]:
    """judge() over a batch, with one Tesseract process for all the words in it."""
    n = len(images)
    source_images = source_images if source_images is not None else [None] * n
    source_specs = source_specs if source_specs is not None else [None] * n
    scenes = [as_scene(s) for s in specs]
    images = [_check_image(im) for im in images]
    wants = [i for i, s in enumerate(scenes) if s.word is not None]
    crops = {i: word_crop(images[i], scenes[i]) for i in wants}
    readable = [i for i in wants if crops[i] is not None]
    texts = dict(zip(readable, ocr.read_lines([crops[i] for i in readable]), strict=True))
    return [
        judge(
            images[i],
            scenes[i],
            tasks[i],
            source_images[i],
            source_specs[i],
            read=texts.get(i, "" if i in wants else None),
        )
        for i in range(n)
    ]


def summarize(
    verdicts: Sequence[Verdict],
    tasks: Sequence[str],
    specs: Sequence[Scene | str | dict],
    edit_ops: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Accuracy overall, per task, per GenEval category (compose), per edit op; write OCR stats."""
    scenes = [as_scene(s) for s in specs]
    out: dict[str, Any] = {"n": len(verdicts), "accuracy": _mean([v.passed for v in verdicts])}
    out["tasks"] = {
        task: {"n": len(idx), "accuracy": _mean([verdicts[i].passed for i in idx])}
        for task, idx in _group(tasks).items()
    }
    compose = [i for i, t in enumerate(tasks) if t == "compose"]
    if compose:
        by_category = _group([scenes[i].category for i in compose])
        geneval = {
            c: _mean([verdicts[compose[j]].passed for j in by_category[c]])
            for c in CATEGORIES
            if c in by_category
        }
        geneval["overall"] = _mean(list(geneval.values()))
        out["geneval"] = geneval
    writes = [v.details for v, t in zip(verdicts, tasks, strict=True) if t == "write"]
    if writes:
        out["write_ocr"] = ocr_stats(writes)
    if edit_ops is not None:
        edits = [i for i, t in enumerate(tasks) if t == "edit"]
        by_op = _group([edit_ops[i] for i in edits])
        out["edit_ops"] = {
            op: _mean([verdicts[edits[j]].passed for j in idx]) for op, idx in by_op.items()
        }
    return out


def ocr_stats(write_details: Sequence[dict]) -> dict[str, Any]:
    """Exact match and CER over the write images that OCR ran on (`read` of `of`): an
    image whose background or sign is wrong fails before OCR and has no reading. With
    none read, exact_match and cer are None, not 0: there was nothing to score."""
    read = [d for d in write_details if "cer" in d]
    return {
        "read": len(read),
        "of": len(write_details),
        "exact_match": _mean([d["exact"] for d in read]) if read else None,
        "cer": _mean([d["cer"] for d in read]) if read else None,
    }


def _group(keys: Sequence[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        groups[key].append(i)
    return dict(groups)


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def verdict_to_json(verdict: Verdict) -> str:
    """A Verdict as one line of JSON (numpy values made plain)."""
    return json.dumps(dataclasses.asdict(verdict), default=lambda x: getattr(x, "item", str)(x))


__all__ = [
    "Verdict",
    "judge",
    "judge_batch",
    "summarize",
    "untouched",
    "verdict_to_json",
]
