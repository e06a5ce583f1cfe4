"""The generator trainer on a small synthetic tokenized dataset, 8 fake CPU devices."""

import json
import pathlib

import jax
import numpy as np
import pytest

from omni_img.config import load_config
from omni_img.errors import UserError
from omni_img.trainers import generator
from tests.trainers.tokenized_fixture import write_tokenized

ROOT = pathlib.Path(__file__).resolve().parents[2]


def tiny_config(tokens, num_steps, **mesh):
    overrides = [
        f"--config.data.tokenized_dir={tokens}",
        f"--config.num_steps={num_steps}",
        "--config.batch_size=16",
        "--config.log_every=1",
        "--config.eval_every=0",
        "--config.checkpoint.every_steps=2",
        "--config.eval.num_examples=16",
        # The final test-split judge samples omni_shapes prompts at the dataset's size; the
        # 16 px stand-in tokenizers cannot encode those (test_eval_bundle.py judges a
        # 16 px split).
        "--config.eval.judge_per_task=0",
        "--config.model.dim=32",
        "--config.model.mlp_dim=64",
        "--config.model.num_heads=2",
        "--config.model.enc_layers=1",
        "--config.model.dec_layers=1",
        "--config.model.max_text_len=64",  # word-aligned ids: the captions take 33-57
        "--config.model.max_history_len=32",  # "add a square" + SEP: 25 ids aligned
        "--config.optim.warmup_steps=1",
        *[f"--config.mesh.{axis}={size}" for axis, size in mesh.items()],
    ]
    return load_config(str(ROOT / "experiments/generator_tiny.py"), overrides)


def losses(workdir):
    lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["loss"] for x in lines if '"loss"' in x]


def non_default_options(config):
    """The non-default training options: hidden decoder inputs, the sequential head,
    word-aligned prompts."""
    config.input_masking = 0.5
    config.model.block_head = "sequential"
    config.text_align_words = True
    return config


def test_generator_meshes_agree_and_resume_is_exact(tmp_path):
    """Also with input masking, the sequential block head and word-aligned prompts: the
    hidden positions are drawn from the step's rng, so every mesh and a resumed run hide
    the same ones."""
    tokens = write_tokenized(tmp_path / "tokens")
    whole, split = tmp_path / "whole", tmp_path / "split"

    def config(steps, **mesh):
        return non_default_options(tiny_config(tokens, steps, **mesh))

    generator.train(config(4, data=8, fsdp=1, tensor=1), str(whole))
    generator.train(config(4, data=2, fsdp=2, tensor=2), str(tmp_path / "d2f2t2"))
    reference = losses(whole)
    assert len(reference) == 4 and reference[0] != reference[-1]
    np.testing.assert_allclose(losses(tmp_path / "d2f2t2"), reference, rtol=2e-5)

    # 2 steps, then a second run that resumes from the checkpoint to 4: bitwise the same.
    generator.train(config(2, data=8, fsdp=1, tensor=1), str(split))
    generator.train(config(4, data=8, fsdp=1, tensor=1), str(split))
    assert losses(split) == reference
    _, _, whole_params, _ = generator.load_workdir(str(whole))
    _, _, split_params, text_tokenizer = generator.load_workdir(str(split))
    for a, b in zip(jax.tree.leaves(whole_params), jax.tree.leaves(split_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert text_tokenizer.word_slots == 8  # the saved config's text_group

    # An earlier step by number; a step that was never saved names the saved ones.
    _, _, step2_params, _ = generator.load_workdir(str(split), step=2)
    pairs = zip(jax.tree.leaves(step2_params), jax.tree.leaves(split_params))
    assert any((np.asarray(a) != np.asarray(b)).any() for a, b in pairs)
    with pytest.raises(UserError, match=r"no checkpoint at step 3 \(saved steps: 2, 4\)"):
        generator.load_workdir(str(split), step=3)
