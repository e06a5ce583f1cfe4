"""Load an experiment file and apply `--config.a.b=value` overrides."""

from __future__ import annotations

import ast
import importlib.util
import pathlib

import ml_collections

from omni_img.errors import UserError
from omni_img.fields import unknown_key_message

OVERRIDE_PREFIX = "--config."


def load_config(spec: str, overrides: list[str] | None = None) -> ml_collections.ConfigDict:
    """Load `path/to/experiment.py[:arg]`, apply overrides, return the ConfigDict.

    Validation (every key against its stage's schema, mesh shapes, batch divisibility,
    ...) is separate: `validate_config`.
    """
    path_text, _, arg = spec.partition(":")
    path = pathlib.Path(path_text)
    if not path.is_file():
        raise UserError(f"config file not found: {path_text}")
    module_spec = importlib.util.spec_from_file_location(f"omni_img_experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:  # a broken experiment file: say which and why
        raise UserError(f"config file {path_text} failed to load: {error!r}") from error
    if not hasattr(module, "get_config"):
        raise UserError(f"config file {path_text} defines no get_config(arg)")
    try:
        config = module.get_config(arg or None)
    except UserError:
        raise
    except Exception as error:  # e.g. ml_collections refusing a value of another type
        message = " ".join(str(error).split())
        raise UserError(
            f"config file {path_text}: get_config failed: {type(error).__name__}: {message}"
        ) from error
    if not isinstance(config, ml_collections.ConfigDict):
        raise UserError(f"{path_text}: get_config must return an ml_collections.ConfigDict")
    apply_overrides(config, overrides or [])
    return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]) -> None:
    """Apply `--config.key.sub=value` strings in place, keeping each key's type."""
    for item in overrides:
        if not item.startswith(OVERRIDE_PREFIX) or "=" not in item:
            raise UserError(
                f"unrecognised argument {item!r}: overrides look like --config.key=value"
            )
        dotted, _, text = item[len(OVERRIDE_PREFIX) :].partition("=")
        parent, leaf = _resolve_parent(config, dotted)
        parent[leaf] = _coerce(dotted, parent[leaf], text)


def _resolve_parent(config: ml_collections.ConfigDict, dotted: str):
    parts = dotted.split(".")
    node = config
    for depth, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            known = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            prefix = ".".join(parts[:depth])
            raise UserError(unknown_key_message(dotted, part, known, prefix))
        if depth == len(parts) - 1:
            return node, part
        node = node[part]
    raise AssertionError("unreachable")


def _coerce(dotted: str, current, text: str):
    """Parse `text` into the type of the key's current value, or fail naming the key."""
    if isinstance(current, ml_collections.ConfigDict):
        raise UserError(f"config.{dotted} is a group of keys; set one of {sorted(current.keys())}")
    if isinstance(current, bool):
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise UserError(f"config.{dotted} expects a bool (true/false), got {text!r}")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise UserError(f"config.{dotted} expects an int, got {text!r}") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise UserError(f"config.{dotted} expects a float, got {text!r}") from None
    if isinstance(current, str) or current is None:
        return text
    if isinstance(current, (tuple, list)):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = tuple(part for part in text.split(",") if part)
        if not isinstance(value, (tuple, list)):
            value = (value,)
        return type(current)(value)
    raise UserError(
        f"config.{dotted} of type {type(current).__name__} cannot be set from the command line"
    )
