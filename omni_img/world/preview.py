"""A picture of the dataset: examples of every task at several resolutions, in one grid.

python -m omni_img.world.preview docs/images/omni_shapes.png
"""

from __future__ import annotations

import sys

import numpy as np
from PIL import Image

from omni_img.world.examples import example_specs
from omni_img.world.render import render

CELL = 128  # px per grid cell: every resolution is shown at the same size


def _pick(seed: int, split: str) -> list:
    """Two compose scenes of different categories, two words, and two edit turns."""
    specs = example_specs(seed, split, 0, 72)
    compose = [s for s in specs if s.task == "compose"]
    picked = [compose[0]] + [
        next(s for s in compose if s.scene.category != compose[0].scene.category)
    ]
    picked += [s for s in specs if s.task == "write"][:2]
    edits = [s for s in specs if s.task == "edit" and s.scene.objects]
    picked += [edits[0], next(s for s in edits if s.episode != edits[0].episode)]
    return picked


def example_grid(resolutions: tuple[int, ...] = (32, 64, 128), seed: int = 0) -> np.ndarray:
    """uint8 (rows*CELL, 8*CELL, 3): per resolution, compose x2, write x2, edit pairs x2."""
    picked = _pick(seed, "train")
    rows = []
    for resolution in resolutions:
        cells = []
        for spec in picked:
            scenes = [spec.source, spec.scene] if spec.task == "edit" else [spec.scene]
            for scene in scenes:
                image = Image.fromarray(render(scene, resolution))
                cells.append(np.asarray(image.resize((CELL, CELL), Image.Resampling.NEAREST)))
        rows.append(np.concatenate(cells, axis=1))
    grid = np.concatenate(rows, axis=0)
    # Thin white lines between cells, so neighbouring backgrounds do not merge.
    grid[::CELL] = 255
    grid[:, ::CELL] = 255
    return grid


def main(path: str) -> None:
    Image.fromarray(example_grid()).save(path, optimize=True)
    for spec in _pick(0, "train"):
        print(f"{spec.task:8s} {spec.caption}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "omni_shapes.png")
