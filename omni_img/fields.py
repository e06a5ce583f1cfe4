"""Typed config blocks from mappings, with one rule for unknown keys.

A model block of an experiment (`config.model`), a dict read back from a saved run or a
bundle's JSON: each becomes its frozen dataclass here, and a key the dataclass lacks is
a one-line UserError naming it and the closest known key, never silently dropped (a
misspelt key that is ignored trains another model than the one asked for).

This module depends on nothing in the package but `errors`, so models may use it.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any, TypeVar

from omni_img.errors import UserError

T = TypeVar("T")


def unknown_key_message(dotted: str, part: str, known: list[str], prefix: str) -> str:
    """`config.<dotted>` is unknown: `part` is not among `known`, the keys under `prefix`."""
    guess = difflib.get_close_matches(part, known, n=1)
    where = f" under config.{prefix}" if prefix else ""
    hint = f"; did you mean config.{prefix + '.' if prefix else ''}{guess[0]}?" if guess else ""
    return f"unknown config key config.{dotted} ({part!r} is not a key{where}){hint}"


def as_mapping(block: Any, prefix: str) -> dict[str, Any]:
    """A plain dict of a ConfigDict or mapping; UserError if `block` is neither."""
    if hasattr(block, "to_dict"):
        block = block.to_dict()
    if not isinstance(block, Mapping):
        raise UserError(f"config.{prefix} must be a group of keys, got {type(block).__name__}")
    return dict(block)


def check_known_keys(cls: type, values: Mapping[str, Any], prefix: str) -> None:
    """UserError naming the first key of `values` that is not a field of dataclass `cls`."""
    known = [field.name for field in dataclasses.fields(cls)]
    for key in values:
        if key not in known:
            raise UserError(unknown_key_message(f"{prefix}.{key}", key, known, prefix))


def dataclass_from_mapping(cls: type[T], block: Any, prefix: str) -> T:
    """`cls(**block)` once every key of `block` (a ConfigDict or mapping) is a field."""
    values = as_mapping(block, prefix)
    check_known_keys(cls, values, prefix)
    return cls(**values)
