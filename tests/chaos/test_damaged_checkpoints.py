"""A damaged latest checkpoint falls back to the step before, saying which and why in
one line, and moves the damaged step aside; a workdir where every step is damaged is
a one-line error naming it and every step tried.

The fast tests (default suite) restore through `restore_initial_state`, as a resuming
run does, on copies of one tiny run; the slow ones restart the trainer itself."""

import contextlib
import io
import shutil

import jax
import numpy as np
import pytest

from omni_img.config.defaults import rules_from_config
from omni_img.errors import UserError
from omni_img.sharding import make_mesh
from omni_img.stages import tokenizer as tokenizer_stage
from omni_img.trainers import tokenizer
from omni_img.training.checkpoint import Checkpointer, restore_initial_state
from omni_img.training.data import make_train_iterator
from omni_img.training.fit import abstract_train_state
from omni_img.training.restore import DAMAGED_FOLDER
from tests.chaos.compile_cache import cached_compiles
from tests.chaos.damage import DAMAGES, FILE_KINDS, damaged_copy
from tests.support.synthetic import SyntheticSource
from tests.support.tiny_configs import tiny_tokenizer_config

pytestmark = pytest.mark.chaos
STEPS = 4  # saves at 2 and 4


def _train(workdir):
    config = tiny_tokenizer_config(num_steps=STEPS)
    return tokenizer.train(config, str(workdir), train_source=SyntheticSource(),
                           eval_source=SyntheticSource(16))  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("trained") / "run"
    _train(workdir)
    return workdir


def _resume(workdir):
    """What a resuming run does first: (state, origin sentence, what it printed)."""
    config = tiny_tokenizer_config(num_steps=STEPS)
    init = tokenizer_stage.init_fn(tokenizer_stage.build_model(config), config)
    abstract, *_ = abstract_train_state(config, init, make_mesh(config.mesh),
                                        rules_from_config(config))  # fmt: skip
    iterator = make_train_iterator(SyntheticSource(), global_batch_size=config.batch_size,
                                   seed=config.seed,
                                   transform=tokenizer_stage.image_example)  # fmt: skip
    printed = io.StringIO()
    checkpointer = Checkpointer(workdir, config.checkpoint, num_steps=STEPS)
    try:
        with contextlib.redirect_stdout(printed):
            state, origin = restore_initial_state(checkpointer, config, abstract, None, iterator)
    finally:
        checkpointer.close()
    return state, origin, printed.getvalue()


def _assert_fell_back(workdir, damaged_file, state, origin, printed):
    assert origin == "resumed from this workdir at step 2"
    assert int(jax.device_get(state.step)) == 2
    lines = printed.strip().splitlines()
    failure = next(line for line in lines if "does not restore" in line)
    assert failure.startswith("checkpoint step 4 in ") and "trying step 2" in failure
    moved = workdir / DAMAGED_FOLDER / "4"
    assert moved.is_dir() and not (workdir / "checkpoints" / "4").exists()  # kept, not deleted
    assert str(moved) in printed
    assert (moved / damaged_file.relative_to(workdir / "checkpoints" / "4")).exists() or (
        "missing" in failure
    )


FAST_KINDS = ("array_data", "tree_metadata", "data_iterator")
FAST_DAMAGES = ("truncate", "zero_fill", "flip_bytes")


@pytest.mark.parametrize("damage", FAST_DAMAGES)
@pytest.mark.parametrize("kind", FAST_KINDS)
def test_damaged_latest_step_falls_back(trained, step_2, tmp_path, kind, damage):
    workdir = tmp_path / "run"
    damaged = damaged_copy(trained, workdir, 4, kind, damage)
    state, origin, printed = _resume(workdir)
    _assert_fell_back(workdir, damaged, state, origin, printed)
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(step_2), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.fixture(scope="module")
def step_2(trained, tmp_path_factory):
    """The state at step 2, restored from an undamaged copy without step 4."""
    into = tmp_path_factory.mktemp("reference") / "run"
    shutil.copytree(trained, into)
    shutil.rmtree(into / "checkpoints" / "4")
    return _resume(into)[0]


def test_every_step_damaged_is_one_line_error_naming_each(trained, tmp_path):
    workdir = tmp_path / "run"
    damaged_copy(trained, workdir, 4, "array_data", "truncate")
    DAMAGES["zero_fill"](FILE_KINDS["data_iterator"](workdir / "checkpoints" / "2"))
    with pytest.raises(UserError) as error:
        _resume(workdir)
    message = str(error.value)
    assert "\n" not in message and str(workdir / "checkpoints") in message
    assert "step 4:" in message and "truncated" in message
    assert "step 2:" in message and "data/process_0-of-1.json" in message
    assert {p.name for p in (workdir / "checkpoints").iterdir()} >= {"2", "4"}  # left in place


def test_shape_mismatch_is_named(trained, tmp_path):
    shutil.copytree(trained, tmp_path / "run")
    config = tiny_tokenizer_config(num_steps=STEPS)
    config.model.widths = (8, 24)
    with pytest.raises(UserError) as error:
        tokenizer_stage.restore_state(config, str(tmp_path / "run"))
    message = str(error.value)
    assert "\n" not in message and "step 4:" in message and "step 2:" in message
    assert "was saved as float32[" in message and "this run expects float32[" in message


@pytest.fixture(scope="module")
def compiled_once(tmp_path_factory):
    """The restarts below compile the same programs: once is enough."""
    with cached_compiles(tmp_path_factory.mktemp("jax_cache")):
        yield


@pytest.mark.slow
@pytest.mark.parametrize("damage", sorted(DAMAGES))
@pytest.mark.parametrize("kind", sorted(FILE_KINDS))
def test_restart_after_damage_falls_back_and_finishes(
    compiled_once, trained, tmp_path, capsys, kind, damage
):
    """Every kind of file, every damage, through a real restart of the trainer."""
    workdir = tmp_path / "run"
    damaged_copy(trained, workdir, 4, kind, damage)
    report = _train(workdir)
    printed = capsys.readouterr().out
    assert report["steps"] == STEPS
    assert "checkpoint step 4 in" in printed and "trying step 2" in printed, printed
    assert "resumed from this workdir at step 2" in printed
    assert (workdir / DAMAGED_FOLDER / "4").is_dir()
    assert (workdir / "checkpoints" / "4" / "omni_img_digest.json").exists()  # saved anew
