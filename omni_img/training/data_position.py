"""The data iterator's position in a checkpoint, restorable onto another process count.

grain saves one file per process, `process_{i}-of-{n}.json` (its checkpoint handler
writes them, see `training.checkpoint`), and its own restore reads only the file of
the same index and count. Every process of a run walks the same global batches and
takes its block of each (`training.data`), so after k steps every process's state is
the same count of k batches, and that count places a process of any other count on
the same next global batch. This module restores it so: a process reads its own file
when the process count is unchanged, else any saved one, after checking that all the
saved ones agree (a checkpoint whose processes disagree is refused, not guessed).
The global batch size must be unchanged, as for any resume.
"""

from __future__ import annotations

import json
import re

import jax

from omni_img.errors import UserError

_POSITION_FILE = re.compile(r"process_(\d+)-of-(\d+)\.json")


def position_file(process_index: int, process_count: int) -> str:
    """The name grain gives the position of one process."""
    return f"process_{process_index}-of-{process_count}.json"


def saved_positions(directory) -> dict[str, dict]:
    """Every process's saved position in a checkpoint's data folder, by file name."""
    if not directory.is_dir():
        return {}
    return {
        path.name: json.loads(path.read_text())
        for path in directory.iterdir()
        if _POSITION_FILE.fullmatch(path.name)
    }


def position_for(directory, process_index: int, process_count: int) -> dict:
    """The iterator state that process `process_index` of `process_count` resumes from."""
    own = directory / position_file(process_index, process_count)
    if own.exists():
        return json.loads(own.read_text())
    saved = saved_positions(directory)
    if not saved:
        raise UserError(f"{directory} holds no data iterator position to resume from")
    distinct = {json.dumps(state, sort_keys=True) for state in saved.values()}
    if len(distinct) > 1:
        raise UserError(
            f"the data position in {directory} was saved by {len(saved)} processes at "
            f"different positions, so no single position can be restored onto "
            f"{process_count} process{'es' if process_count > 1 else ''}"
        )
    return json.loads(distinct.pop())


def restore_position(
    directory, iterator, process_index: int | None = None, process_count: int | None = None
):
    """Move `iterator` (a grain DatasetIterator) to the position saved in `directory`."""
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    iterator.set_state(position_for(directory, process_index, process_count))
    start_prefetch = getattr(iterator, "start_prefetch", None)
    if start_prefetch is not None:  # as grain's own restore does
        start_prefetch()
    return iterator
