"""Subprocess entry for resume tests: train the tiny tokenizer on synthetic data.

    python tests/training/run_tokenizer.py WORKDIR NUM_STEPS DEVICES [--delay S] [--dump FILE]

Runs on DEVICES fake CPU devices (mesh data=-1), checkpoints every 2 steps (or
--checkpoint_every), with --phase_log FILE logs its saves and evaluation there
(tests.chaos.phases), and with --dump writes the final params (flattened) to an .npz file.
"""

import argparse
import os
import pathlib
import sys

parser = argparse.ArgumentParser()
parser.add_argument("workdir")
parser.add_argument("num_steps", type=int)
parser.add_argument("devices", type=int)
parser.add_argument("--delay", type=float, default=0.0)
parser.add_argument("--dump", default="")
parser.add_argument("--restore_only", action="store_true")
parser.add_argument("--checkpoint_every", type=int, default=2)
parser.add_argument("--phase_log", default="")  # tests.chaos.phases: saves and evaluation
args = parser.parse_args()
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from tests.support.synthetic import SyntheticSource  # noqa: E402
from tests.support.tiny_configs import tiny_tokenizer_config  # noqa: E402


def flat_params(params) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


config = tiny_tokenizer_config(num_steps=args.num_steps)
config.checkpoint.every_steps = args.checkpoint_every
if args.restore_only:
    from omni_img.stages.tokenizer import restore_params

    params = restore_params(config, args.workdir)
else:
    from omni_img.trainers import tokenizer

    if args.phase_log:
        from tests.chaos.phases import log_phases

        log_phases(args.phase_log)
    tokenizer.train(
        config,
        args.workdir,
        train_source=SyntheticSource(delay=args.delay),
        eval_source=SyntheticSource(length=16),
    )
    from omni_img.stages.tokenizer import restore_params

    params = restore_params(config, args.workdir)
if args.dump:
    np.savez(args.dump, **flat_params(params))
