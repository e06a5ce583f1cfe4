"""Two processes (launch/local_multiprocess.sh, 2 x 2 CPU devices) agree on the step
they fall back to, even when only one of them finds the latest step damaged.

Each process reads its own data position file (`data/process_<i>-of-2.json`) and
nothing else tells them apart, so with the digest of step 4 removed (Orbax's checks
alone, as for a step killed between its commit and its digest) and process 1's
position file zero-filled, process 0 could restore step 4 and process 1 only step 2.
Resuming at different steps would hang the first collective or mix two states; the
restore's agreement must make both fall back to step 2 and finish."""

import json

import numpy as np
import pytest

from omni_img.training.checkpoint_digest import DIGEST_FILE
from omni_img.training.restore import DAMAGED_FOLDER
from tests.chaos.damage import zero_fill
from tests.support.multiprocess import launch

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
STEPS = 4  # saves at 2 and 4


def _launch_and_wait(workdir) -> str:
    process = launch("tokenizer", workdir, STEPS)
    out, _ = process.communicate(timeout=900)
    assert process.returncode == 0, out
    return out


def _losses_by_step(records: list[dict]) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def test_damage_one_process_sees_makes_both_fall_back_to_the_same_step(tmp_path):
    workdir = tmp_path / "run"
    _launch_and_wait(workdir)
    first = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    step_4 = workdir / "checkpoints" / "4"
    (step_4 / DIGEST_FILE).unlink()
    zero_fill(step_4 / "data" / "process_1-of-2.json")

    out = _launch_and_wait(workdir)
    said = [line for line in out.splitlines() if "does not restore" in line]
    assert len(said) == 1 and said[0].startswith("[p0] checkpoint step 4 in "), out
    assert "another process could not restore it; trying step 2" in said[0], out
    assert "[p0] tokenizer: resumed from this workdir at step 2;" in out, out
    assert (workdir / DAMAGED_FOLDER / "4" / "data" / "process_1-of-2.json").exists()
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    rerun = records[len(first) :]
    assert rerun[0]["start_step"] == 2, rerun[0]
    resumed, original = _losses_by_step(rerun), _losses_by_step(first)
    assert sorted(resumed) == [3, 4]
    np.testing.assert_array_equal([resumed[3], resumed[4]], [original[3], original[4]])
    assert (workdir / "checkpoints" / "4" / DIGEST_FILE).exists()  # step 4 saved anew
