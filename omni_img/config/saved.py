"""The resolved config of a run, saved in its workdir as JSON and read back."""

from __future__ import annotations

import json
import pathlib

import ml_collections

from omni_img.config.defaults import STAGE_DEFAULTS
from omni_img.errors import UserError

CONFIG_FILE = "config.json"


def save_config(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> None:
    path = pathlib.Path(workdir) / CONFIG_FILE
    path.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list))


def load_saved_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
    path = pathlib.Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{workdir} holds no {CONFIG_FILE}: is it the workdir of a training run?")
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON ({error.msg} at line {error.lineno})") from None
    try:
        return over_stage_defaults(saved)
    except (TypeError, ValueError, AttributeError) as error:  # a value unlike the key's
        message = " ".join(str(error).split())
        raise UserError(f"{path} does not fit its stage's keys: {message}") from None


def over_stage_defaults(saved: dict) -> ml_collections.ConfigDict:
    """A saved config laid over its stage's defaults: a run saved before a key existed
    reads that key's default, which is what the code of its day did without the key."""
    if not isinstance(saved, dict) or saved.get("stage") not in STAGE_DEFAULTS:
        return ml_collections.ConfigDict(saved)
    config = STAGE_DEFAULTS[saved["stage"]]()
    config.update(saved)
    return config
