"""Input pipelines: grain over a random-access source, sharded per process.

Every process walks the same shuffled stream (same seed) and reads only its rows of
each global batch: global batch k is the P consecutive blocks of B/P records that
start at k*B, and process p reads block p. So the global batches, and the losses,
do not depend on how many processes share them, and a checkpoint's iterator
position (a count of batches, the same on every process) means the same on any
process count with the same global batch size: `training.data_position` restores it
onto another count. Batches are assembled into global `jax.Array`s with
`jax.make_array_from_process_local_data`. The iterator is checkpointable (grain saves
its position), so resume continues on the exact next batch. A record that fails to
read or decode is skipped and counted (`training.corrupt_records`): each batch carries
the count in an extra column that `fit` takes out before the step.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import grain
import jax
import numpy as np
from jax.sharding import Mesh

from omni_img.sharding import batch_sharding
from omni_img.training.corrupt_records import SkippingMap

Example = Mapping[str, Any]


def make_train_iterator(
    source,
    *,
    global_batch_size: int,
    seed: int,
    transform: Callable[[Example], dict[str, np.ndarray]],
    worker_count: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.DatasetIterator:
    """A checkpointable iterator of per-process batches (dicts of NumPy arrays).

    `source` is any random-access source (`len`, `[i]`), e.g. `tfds.data_source(...)`,
    or a grain MapDataset (e.g. an infinite task mixture).
    `transform` maps one record to the arrays the step needs (cheap NumPy only).
    `num_epochs=None` repeats forever.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if global_batch_size % process_count:
        raise ValueError(
            f"global batch {global_batch_size} not divisible by {process_count} processes"
        )
    if not isinstance(source, grain.MapDataset):
        source = grain.MapDataset.source(source)
    dataset = source.shuffle(seed=seed) if shuffle else source
    if len(dataset) < sys.maxsize:  # an already infinite dataset (a mixture) is not repeated
        dataset = dataset.repeat(num_epochs)
    local_batch_size = global_batch_size // process_count
    # Transforms are lazy: a process only decodes the records of its own blocks.
    dataset = SkippingMap(dataset, transform).batch(local_batch_size, drop_remainder=True)
    dataset = dataset[process_index::process_count]
    iterable = dataset.to_iter_dataset()
    if worker_count > 0:
        iterable = iterable.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return iter(iterable)


def to_global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Per-process NumPy batch -> global arrays sharded over the data-parallel axes."""
    return {
        name: jax.make_array_from_process_local_data(batch_sharding(mesh, value.ndim), value)
        for name, value in local_batch.items()
    }


def batch_shardings(example_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict:
    """The sharding of each entry of a batch with this structure."""
    return {name: batch_sharding(mesh, np.ndim(value)) for name, value in example_batch.items()}
