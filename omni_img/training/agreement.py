"""Decisions every process of a run must take alike, agreed with one host all-gather."""

from __future__ import annotations

import jax
import numpy as np


def agree_any(flags: tuple[bool, ...]) -> tuple[bool, ...]:
    """Each flag OR-ed over all processes (identity with one process)."""
    if jax.process_count() == 1:
        return flags
    from jax.experimental import multihost_utils

    gathered = multihost_utils.process_allgather(np.asarray(flags, np.bool_))
    return tuple(bool(x) for x in np.any(np.reshape(gathered, (-1, len(flags))), axis=0))
