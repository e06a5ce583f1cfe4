"""Entry point the multi-process tests launch: train a tiny stage, joined as `omni-img
train` would be (the OMNI_IMG_* variables that launch/local_multiprocess.sh sets).

    python tests/launch/run_stage.py tokenizer|generator WORKDIR NUM_STEPS
        [--tokens DIR] [--delay S] [--restore_to FILE]

The tokenizer trains on synthetic images, the generator on a synthetic tokenized
split (--tokens, written by the test); both with global batch 16 and a checkpoint
every 2 steps. --delay slows every record read (a run that is still going when the
test kills it). --restore_to restores the workdir's latest params in this process
instead of training and writes them (flattened) to an .npz file.
"""

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from omni_img.sharding import distributed  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("stage", choices=["tokenizer", "generator"])
parser.add_argument("workdir")
parser.add_argument("num_steps", type=int)
parser.add_argument("--tokens", default="")
parser.add_argument("--delay", type=float, default=0.0)
parser.add_argument("--restore_to", default="")
args = parser.parse_args()
group = distributed.detect()
distributed.initialize(group, heartbeat_timeout_s=10)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from tests.support.synthetic import SyntheticSource  # noqa: E402

print(f"joined as process {jax.process_index()} of {jax.process_count()}, "
      f"{jax.local_device_count()} local devices", flush=True)  # fmt: skip

if args.stage == "tokenizer":
    from omni_img.stages import tokenizer as stage
    from omni_img.trainers import tokenizer as trainer
    from tests.support.tiny_configs import tiny_tokenizer_config

    config = tiny_tokenizer_config(num_steps=args.num_steps)
    train = lambda: trainer.train(  # noqa: E731
        config,
        args.workdir,
        train_source=SyntheticSource(delay=args.delay),
        eval_source=SyntheticSource(length=16),
    )
else:
    from omni_img.stages import generator as stage
    from omni_img.trainers import generator as trainer
    from tests.support.tiny_configs import tiny_generator_config

    config = tiny_generator_config(args.tokens, args.num_steps, data=-1, fsdp=1, tensor=1)
    train = lambda: trainer.train(config, args.workdir)  # noqa: E731

if not args.restore_to:
    train()
else:  # restore the latest checkpoint's EMA params in this (single) process
    from omni_img.training.checkpoint import Checkpointer

    checkpointer = Checkpointer(args.workdir, config.checkpoint)
    step = checkpointer.latest_step()
    checkpointer.close()
    ema_params = stage.load_workdir(args.workdir)[2]
    leaves = jax.tree_util.tree_flatten_with_path(ema_params)[0]
    flat = {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}
    np.savez(args.restore_to, step=step, **flat)
