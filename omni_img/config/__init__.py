"""Experiment configs: loading, command-line overrides and validation.

An experiment is one Python file in `experiments/` with `get_config(arg=None)`
returning an `ml_collections.ConfigDict`. `load_config("experiments/x.py:arg",
["--config.optim.lr=3e-4"])` loads it, applies the overrides and validates the
result before anything compiles.
"""

from omni_img.config.loading import apply_overrides, load_config
from omni_img.config.validation import validate_config

__all__ = ["apply_overrides", "load_config", "validate_config"]
