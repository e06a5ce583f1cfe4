"""The TFDS builder of the built-in dataset: `omni_shapes/<config>`, ArrayRecord, no TensorFlow.

Record i of a split is `examples.example(config.seed, split, i, config.resolution)`:
shuffling is off, so a record's position is its index. Pixels are stored as zlib-packed
uint8 tensors and texts as `Text`, which TFDS encodes and decodes without TensorFlow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import sys
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from omni_img.world import examples

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
    # Same validation and test records as 64px (a record depends on its index only).
    _config("64px_200k", 64, 200_000, 2_000, 3_000, "10x the train records, for long runs"),
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


@contextlib.contextmanager
def deterministic_serialization() -> Iterator[None]:
    """Serialize records with a fixed field order while inside (TFDS leaves it to protobuf).

    A protobuf map (the tf.Example's feature names) is written in an order that changes
    from process to process; `deterministic=True` sorts it, so two builds give equal bytes.
    """
    from tensorflow_datasets.core import example_serializer

    cls = example_serializer.ExampleSerializer
    original = cls.serialize_example

    def serialize_example(self, example):
        return self.get_tf_example(example).SerializeToString(deterministic=True)

    cls.serialize_example = serialize_example
    try:
        yield
    finally:
        cls.serialize_example = original


def features(resolution: int) -> tfds.features.FeaturesDict:
    """The record format shared by omni_shapes and ingested datasets (see docs/data.md)."""
    pixels = tfds.features.Tensor(
        shape=(resolution, resolution, 3), dtype=np.uint8, encoding="zlib"
    )
    text = tfds.features.Text
    number = tfds.features.Scalar(dtype=np.int64)
    return tfds.features.FeaturesDict(
        {
            "image": pixels,  # the target image
            "source_image": pixels,  # the edit's source; zeros when there is none
            "caption": text(),  # the prompt; for an edit, the instruction
            "history": text(),  # JSON list of the episode's earlier instructions
            "task": text(),  # compose | write | edit (| caption for ingested data)
            "category": text(),  # GenEval category of a compose scene, else ""
            "spec": text(),  # JSON of the target scene ("" for ingested data)
            "source_spec": text(),  # JSON of the source scene, or ""
            "edit_op": text(),  # recolour | move | add | remove | restyle | background | word
            "turn": number,  # 1-based turn within an edit episode, else 0
            "episode": number,  # edit episode id within the split, else -1
            "index": number,  # the example's index in its split
        }
    )


class OmniShapes(tfds.core.GeneratorBasedBuilder):
    """Procedural shapes, words and edits with exact specs; see docs/data.md."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Compose, write and edit tasks; held-out pairs and words in test.",
        "1.1.0": "Small objects are 0.36 of the side (were 0.32): small stars keep their points.",
    }
    BUILDER_CONFIGS = list(CONFIGS)
    DEFAULT_CONFIG_NAME = DEFAULT_CONFIG

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=features(self.builder_config.resolution),
            supervised_keys=None,
            # Record i is example i: readers can index by example, builds stay identical.
            disable_shuffling=True,
        )

    def _download_and_prepare(self, *args, **kwargs):
        with deterministic_serialization():
            return super()._download_and_prepare(*args, **kwargs)

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
