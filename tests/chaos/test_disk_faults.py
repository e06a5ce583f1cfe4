"""A full disk during a save and a read-only workdir: a one-line error naming the path
and the last good step; the checkpoints saved before stay intact and restorable."""

import pytest

from omni_img.errors import UserError
from omni_img.stages import tokenizer as tokenizer_stage
from omni_img.trainers import tokenizer
from omni_img.training.checkpoint_digest import digest_problem
from tests.chaos.filesystems import fill_when_present, read_only_view, small_tmpfs
from tests.support.synthetic import SyntheticSource
from tests.support.tiny_configs import tiny_tokenizer_config

pytestmark = pytest.mark.chaos

FREE_AFTER_FILL = 24 * 1024  # room for metrics lines and a digest, not for a checkpoint


def _train(workdir, source, num_steps=6):
    config = tiny_tokenizer_config(num_steps=num_steps)
    return tokenizer.train(config, str(workdir), train_source=source,
                           eval_source=SyntheticSource(16))  # fmt: skip


def test_full_disk_then_read_only_workdir(tmp_path):
    with small_tmpfs(tmp_path / "disk", 6 * 1024 * 1024) as disk:
        workdir = disk / "run"
        workdir.mkdir()
        # The disk fills the moment step 2 is committed; reading slowly keeps the next
        # save (step 4) well after that.
        filling = fill_when_present(workdir / "checkpoints" / "2", disk, FREE_AFTER_FILL)
        with pytest.raises(UserError) as error:
            _train(workdir, SyntheticSource(delay=0.01))
        filling.stop.set()
        message = str(error.value)
        assert "\n" not in message and filling.filler is not None
        assert f"{workdir / 'checkpoints'}" in message and "step 4" in message, message
        assert "the last good checkpoint is step 2" in message, message
        step_2 = workdir / "checkpoints" / "2"
        assert digest_problem(step_2) is None and (step_2 / "omni_img_digest.json").exists()
        filling.filler.unlink()

        with read_only_view(workdir, tmp_path / "read_only") as view:
            with pytest.raises(UserError) as error:
                _train(view, SyntheticSource())
            message = str(error.value)
            assert "\n" not in message and str(view) in message and "not writable" in message
            assert "last checkpoint is step 2" in message, message

        state = tokenizer_stage.restore_state(tiny_tokenizer_config(num_steps=6), str(workdir))
        assert int(state.step) == 2  # the earlier checkpoint restores
        assert digest_problem(step_2) is None
