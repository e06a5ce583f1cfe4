"""Open a split of the configured dataset, or of its token grids, as a random-access source.

When the data is missing, the error quotes `config.data.prepare`: a preset names the
dataset it trains on and the command that makes it, and the run stops before
anything compiles.
"""

from __future__ import annotations

import ml_collections

from omni_img.data import reading
from omni_img.errors import UserError


def dataset_name(data: ml_collections.ConfigDict) -> str:
    """`data.name[/data.builder_config]`: what `omni_img.data.reading.source` takes."""
    return f"{data.name}/{data.builder_config}" if data.builder_config else data.name


def with_prepare_hint(error: UserError, data: ml_collections.ConfigDict) -> UserError:
    """The error, on one line, followed by the command that prepares the data (if named)."""
    prepare = data.prepare
    first_line = (str(error).splitlines() or [""])[0]
    return UserError(f"{first_line}; prepare it with: {prepare}" if prepare else first_line)


def open_split(data: ml_collections.ConfigDict, split: str):
    """The random-access source of `split` (UserError naming the fix if not built)."""
    try:
        return reading.source(dataset_name(data), split, data.data_dir or None)
    except UserError as error:
        raise with_prepare_hint(error, data) from None


def open_tokenized(data: ml_collections.ConfigDict, split: str):
    """The token grids of `split` in `data.tokenized_dir` (UserError naming the fix)."""
    from omni_img.data.tokenized import TokenizedSource

    if not data.tokenized_dir:
        error = UserError(f"config.data.tokenized_dir is empty: no token grids of {data.name}")
        raise with_prepare_hint(error, data)
    try:
        return TokenizedSource(data.tokenized_dir, split)
    except UserError as error:
        raise with_prepare_hint(error, data) from None
