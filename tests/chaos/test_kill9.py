"""kill -9 at 10 random moments of a short run (during steps, during an async save,
during the final evaluation), each followed by a restart: the final params are bitwise
those of an uninterrupted run."""

import random
import signal
import time

import numpy as np
import pytest

from tests.training.test_tokenizer_training import _logged_loss_steps, _run_worker

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
STEPS, EVERY, KILLS = 12, 2, 10


def test_ten_random_kills_end_bitwise_equal(tmp_path):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    _run_worker(whole, STEPS, 8, "--checkpoint_every", EVERY, "--dump", tmp_path / "whole.npz")
    rng = random.Random(0)
    landed = 0
    for _ in range(KILLS):
        process = _run_worker(broken, STEPS, 8, "--delay", "0.02", "--checkpoint_every", EVERY,
                              background=True)  # fmt: skip
        deadline = time.monotonic() + 300
        before = len(_logged_loss_steps(broken))
        while len(_logged_loss_steps(broken)) == before and process.poll() is None:
            assert time.monotonic() < deadline, "the worker logged no step in 300 s"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))  # into steps, a save, or the evaluation
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            landed += 1
        process.wait()
    assert landed >= KILLS // 2, f"only {landed} of {KILLS} kills landed before the run ended"
    _run_worker(broken, STEPS, 8, "--checkpoint_every", EVERY, "--dump", tmp_path / "broken.npz")
    whole_params, broken_params = np.load(tmp_path / "whole.npz"), np.load(tmp_path / "broken.npz")
    assert sorted(whole_params) == sorted(broken_params)
    for name in whole_params:
        np.testing.assert_array_equal(whole_params[name], broken_params[name], err_msg=name)
