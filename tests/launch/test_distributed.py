"""Where a run's process group comes from: flags > OMNI_IMG_* > SLURM / TPU > single."""

import os

import pytest

from omni_img.errors import UserError
from omni_img.sharding.distributed import ProcessGroup, detect


def test_single_process_by_default():
    assert detect(environ={}) == ProcessGroup()
    assert not detect(environ={"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}).is_distributed


def test_flags_win_over_the_environment():
    env = {"OMNI_IMG_COORDINATOR": "other:1", "OMNI_IMG_NUM_PROCESSES": "4",
           "OMNI_IMG_PROCESS_ID": "3", "SLURM_JOB_ID": "7", "SLURM_NTASKS": "8"}  # fmt: skip
    group = detect("10.0.0.1:1234", 2, 1, environ=env)
    assert group == ProcessGroup("flags", "10.0.0.1:1234", 2, 1)


def test_environment_then_clusters():
    env = {"OMNI_IMG_COORDINATOR": "127.0.0.1:5", "OMNI_IMG_NUM_PROCESSES": "2",
           "OMNI_IMG_PROCESS_ID": "0"}  # fmt: skip
    assert detect(environ=env) == ProcessGroup("environment", "127.0.0.1:5", 2, 0)
    slurm = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "4"}
    assert detect(environ=slurm).source == "slurm"
    assert detect(environ={"TPU_WORKER_HOSTNAMES": "a,b,c,d"}).source == "tpu"
    assert detect(environ={"TPU_WORKER_HOSTNAMES": "a"}) == ProcessGroup()
    assert detect(environ={"OMNI_IMG_DISTRIBUTED": "auto"}).source == "tpu"


def test_one_process_given_explicitly_is_single():
    assert detect("127.0.0.1:5", 1, 0, environ={}) == ProcessGroup()


@pytest.mark.parametrize(
    "args, message",
    [
        (("127.0.0.1:5", 2, None), "process_id missing"),
        (("127.0.0.1", 2, 0), "HOST:PORT"),
        (("127.0.0.1:5", 2, 2), r"not in \[0, 2\)"),
        (("127.0.0.1:5", 0, 0), "num_processes must be"),
    ],
)
def test_bad_flags_are_one_line_errors(args, message):
    with pytest.raises(UserError, match=message):
        detect(*args, environ={})


def test_bad_environment_names_the_variable():
    with pytest.raises(UserError, match="OMNI_IMG_NUM_PROCESSES must be an integer"):
        detect(environ={"OMNI_IMG_COORDINATOR": "h:1", "OMNI_IMG_NUM_PROCESSES": "two",
                        "OMNI_IMG_PROCESS_ID": "0"})  # fmt: skip


def test_split_cpu_sets_the_device_count_once(monkeypatch):
    from omni_img.sharding.distributed import split_cpu

    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    split_cpu(8)
    assert "--xla_force_host_platform_device_count=8" in os.environ["XLA_FLAGS"]
    assert "--xla_cpu_enable_fast_math=false" in os.environ["XLA_FLAGS"]
    split_cpu(4)  # a count already set wins
    assert "device_count=4" not in os.environ["XLA_FLAGS"]
    monkeypatch.setenv("XLA_FLAGS", "")
    split_cpu(1)
    assert os.environ["XLA_FLAGS"] == ""
