"""`omni-img train`: run the trainer of the stage a config names."""

from __future__ import annotations

import argparse
import importlib

from omni_img import preflight
from omni_img.errors import UserError
from omni_img.sharding import distributed

# config.stage -> module with `train(config, workdir) -> report`
TRAINERS = {
    "tokenizer": "omni_img.trainers.tokenizer",
    "generator": "omni_img.trainers.generator",
    "rolling": "omni_img.trainers.rolling",
}

ACCEPTS_CONFIG_OVERRIDES = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="experiments/NAME.py[:arg]")
    parser.add_argument("--workdir", required=True, help="checkpoints, metrics and samples go here")
    distributed.add_arguments(parser)
    parser.epilog = "Any config key can be overridden: --config.optim.lr=3e-4"


def tools_needed(config) -> tuple[preflight.Tool, ...]:
    """System tools the run's evaluations will call: the omni_shapes judge reads written
    words with OCR in the tokenizer's evaluation and in the generator's test-split judging."""
    if config.data.name != "omni_shapes":
        return ()
    judges = config.stage == "tokenizer" or (
        config.stage == "generator" and int(config.eval.judge_per_task) > 0
    )
    return (preflight.TESSERACT,) if judges else ()


def main(args: argparse.Namespace) -> int:
    from omni_img.config import load_config

    config = load_config(args.config, args.overrides)
    distributed.initialize_from_args(args)  # before anything touches a JAX backend
    if config.get("stage") not in TRAINERS:
        raise UserError(
            f"config.stage={config.get('stage')!r} has no trainer; stages: {sorted(TRAINERS)}"
        )
    preflight.require(tools_needed(config), f"training the {config.stage} on {config.data.name}")
    trainer = importlib.import_module(TRAINERS[config.stage])
    report = trainer.train(config, args.workdir)
    if report.get("stopped_by_signal"):
        return 0  # the trainer said where it stopped; the checkpoint is the result
    summary = ", ".join(f"{k}={v:.4g}" for k, v in report.items() if isinstance(v, float))
    print(f"{config.stage} done: {summary}")
    return 0
