"""The TFDS builder of the built-in dataset: `omni_shapes/<config>`, ArrayRecord, no TensorFlow.

Record i of a split is `examples.example(config.seed, split, i, config.resolution)`:
shuffling is off, so a record's position is its index. Pixels are stored as zlib-packed
uint8 tensors and texts as `Text`, which TFDS encodes and decodes without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sys
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from omni_img.data import examples

CHUNK = 36 * 8  # examples per worker task: whole edit groups (36 indices hold 12 edit slots)


@dataclasses.dataclass
class OmniShapesConfig(tfds.core.BuilderConfig):
    """Resolution (px), examples per split and the generator seed of one build."""

    resolution: int = 64
    train_examples: int = 20_000
    validation_examples: int = 2_000
    test_examples: int = 3_000
    seed: int = 0

    def split_sizes(self) -> dict[str, int]:
        """{split name: number of examples}."""
        return {
            "train": self.train_examples,
            "validation": self.validation_examples,
            "test": self.test_examples,
        }


def _config(name: str, resolution: int, train: int, validation: int, test: int, note: str):
    return OmniShapesConfig(
        name=name,
        description=f"{resolution}x{resolution} px; {note}",
        resolution=resolution,
        train_examples=train,
        validation_examples=validation,
        test_examples=test,
    )


CONFIGS: tuple[OmniShapesConfig, ...] = (
    _config("64px", 64, 20_000, 2_000, 3_000, "the default"),
    _config("32px", 32, 20_000, 2_000, 3_000, "the smallest resolution"),
    _config("128px", 128, 10_000, 1_000, 3_000, "fewer train examples: 4x the pixels"),
    _config("256px", 256, 3_000, 600, 3_000, "few train examples: 16x the pixels"),
    _config("tiny", 64, 360, 72, 72, "a handful of examples for tests and smoke runs"),
)
DEFAULT_CONFIG = "64px"


def build_workers() -> int:
    """Processes that render during a build: OMNI_IMG_BUILD_WORKERS, else the CPU count (<= 8).

    One when the main module is a script that a spawned worker cannot re-import (stdin).
    """
    main_file = getattr(sys.modules["__main__"], "__file__", None)
    if main_file is not None and not os.path.exists(main_file):
        return 1
    value = os.environ.get("OMNI_IMG_BUILD_WORKERS")
    return max(1, int(value)) if value else max(1, min(8, os.cpu_count() or 1))


class OmniShapes(tfds.core.GeneratorBasedBuilder):
    """Procedural shapes, words and edits with exact specs; see docs/data.md."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Compose, write and edit tasks; held-out pairs and words in test."}
    BUILDER_CONFIGS = list(CONFIGS)
    DEFAULT_CONFIG_NAME = DEFAULT_CONFIG
    # Record i is example i: keeps builds byte-identical and lets readers index by example.
    disable_shuffling = True

    def _info(self) -> tfds.core.DatasetInfo:
        r = self.builder_config.resolution
        pixels = tfds.features.Tensor(shape=(r, r, 3), dtype=np.uint8, encoding="zlib")
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": pixels,
                    "source_image": pixels,
                    "caption": tfds.features.Text(),
                    "history": tfds.features.Text(),
                    "task": tfds.features.Text(),
                    "category": tfds.features.Text(),
                    "spec": tfds.features.Text(),
                    "source_spec": tfds.features.Text(),
                    "edit_op": tfds.features.Text(),
                    "turn": tfds.features.Scalar(dtype=np.int64),
                    "episode": tfds.features.Scalar(dtype=np.int64),
                    "index": tfds.features.Scalar(dtype=np.int64),
                }
            ),
            supervised_keys=None,
            homepage="https://github.com/omni-img/omni_img",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # procedural: nothing to download
        return {
            split: self._generate_examples(split, size)
            for split, size in self.builder_config.split_sizes().items()
        }

    def _generate_examples(self, split: str, size: int) -> Iterator[tuple[int, dict]]:
        config = self.builder_config
        jobs = [
            (config.seed, split, start, min(start + CHUNK, size), config.resolution)
            for start in range(0, size, CHUNK)
        ]
        workers = min(build_workers(), len(jobs))
        if workers <= 1:
            for job in jobs:
                yield from examples.render_chunk(job)
            return
        # imap keeps the chunks in order, so the output does not depend on the worker count.
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers) as pool:
            for chunk in pool.imap(examples.render_chunk, jobs):
                yield from chunk
