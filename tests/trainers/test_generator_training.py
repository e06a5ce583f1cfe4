"""The generator trainer on a small synthetic tokenized dataset, 8 fake CPU devices."""

import json
import pathlib

import jax
import numpy as np
import pytest

from omni_img.errors import UserError
from omni_img.stages import generator as generator_stage
from omni_img.trainers import generator
from omni_img.training import fit as fit_module
from tests.support.tiny_configs import tiny_generator_config
from tests.support.tokenized import write_tokenized


def losses(workdir):
    lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["loss"] for x in lines if '"loss"' in x]


def non_default_options(config):
    """The non-default training options: hidden decoder inputs, the sequential head, the
    block above as a decoder input, word-aligned prompts, and Muon."""
    config.input_masking = 0.5
    config.model.block_head = "sequential"
    config.model.above_input = True
    config.text_align_words = True
    config.optim.name = "muon"
    return config


class Crash(Exception):
    """Stands for a process dying mid-run (no final checkpoint is written)."""


def crash_before_step(step: int, monkeypatch):
    """Make the loop die when it draws the batch of `step` (after step - 1 ran)."""
    calls, original = [], fit_module._to_device

    def to_device(batch, **kwargs):
        calls.append(None)
        if len(calls) == step:
            raise Crash(f"killed before step {step}")
        return original(batch, **kwargs)

    monkeypatch.setattr(fit_module, "_to_device", to_device)


def records(workdir) -> list[dict]:
    lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines]


def test_generator_meshes_agree_and_resume_is_exact(tmp_path, monkeypatch):
    """Also with input masking, the sequential block head, the block above as an input,
    word-aligned prompts and Muon (whose optimizer state holds masked, empty entries):
    the hidden positions are drawn from the step's rng, so every mesh and a resumed run
    hide the same ones."""
    tokens = write_tokenized(tmp_path / "tokens")
    whole, split = tmp_path / "whole", tmp_path / "split"

    def config(steps, **mesh):
        return non_default_options(tiny_generator_config(tokens, steps, **mesh))

    generator.train(config(4, data=8, fsdp=1, tensor=1), str(whole))
    generator.train(config(4, data=2, fsdp=2, tensor=2), str(tmp_path / "d2f2t2"))
    reference = losses(whole)
    assert len(reference) == 4 and reference[0] != reference[-1]
    np.testing.assert_allclose(losses(tmp_path / "d2f2t2"), reference, rtol=2e-5)

    # A 4-step run dies after step 3, between its saves at 2 and 4 and past the 1-step
    # warmup; the rerun resumes at 2, runs 3 and 4, and ends bitwise where `whole` ended.
    with monkeypatch.context() as patch:
        crash_before_step(4, patch)
        with pytest.raises(Crash):
            generator.train(config(4, data=8, fsdp=1, tensor=1), str(split))
    assert sorted(int(p.name) for p in (split / "checkpoints").iterdir()) == [2]
    generator.train(config(4, data=8, fsdp=1, tensor=1), str(split))
    assert [r["start_step"] for r in records(split) if "start_step" in r] == [0, 2]
    assert [r["steps_run"] for r in records(split) if "steps_run" in r] == [2]
    assert losses(split) == reference  # steps 1, 2 before the crash; 3, 4 after
    # Going on to 6 steps would stretch the schedule the first 4 steps followed: refused.
    with pytest.raises(UserError, match="num_steps=4, but this run has num_steps=6"):
        generator.train(config(6, data=8, fsdp=1, tensor=1), str(split))
    _, _, whole_params, _ = generator_stage.load_workdir(str(whole))
    _, _, split_params, text_tokenizer = generator_stage.load_workdir(str(split))
    for a, b in zip(jax.tree.leaves(whole_params), jax.tree.leaves(split_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert text_tokenizer.word_slots == 8  # the saved config's text_group

    # An earlier step by number; a step that was never saved names the saved ones.
    _, _, step2_params, _ = generator_stage.load_workdir(str(split), step=2)
    pairs = zip(jax.tree.leaves(step2_params), jax.tree.leaves(split_params))
    assert any((np.asarray(a) != np.asarray(b)).any() for a, b in pairs)
    with pytest.raises(UserError, match=r"no checkpoint at step 3 \(saved steps: 2, 4\)"):
        generator_stage.load_workdir(str(split), step=3)
