"""The launch scripts: shellcheck-clean, the JobSet a valid manifest, usage errors exit 2."""

import pathlib
import shutil
import subprocess

import pytest
import yaml

LAUNCH = pathlib.Path(__file__).resolve().parents[2] / "launch"
SCRIPTS = ["local.sh", "local_multiprocess.sh", "slurm.sbatch", "tpu_vm.sh", "system_tools.sh"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_passes_shellcheck(name):
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed (apt-get install shellcheck; .ci/run does it)")
    result = subprocess.run(
        ["shellcheck", "--shell=bash", str(LAUNCH / name)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("name", ["local.sh", "local_multiprocess.sh", "tpu_vm.sh"])
def test_script_without_arguments_prints_usage(name):
    result = subprocess.run(["bash", str(LAUNCH / name)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_system_tools_rejects_unknown_arguments():
    result = subprocess.run(
        ["bash", str(LAUNCH / "system_tools.sh"), "--everything"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_gke_jobset_is_a_consistent_manifest():
    manifest = yaml.safe_load((LAUNCH / "gke_jobset.yaml").read_text())
    assert manifest["kind"] == "JobSet"
    job = manifest["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert job["completionMode"] == "Indexed" and job["parallelism"] == job["completions"]
    container = job["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert int(env["OMNI_IMG_NUM_PROCESSES"]["value"]) == job["parallelism"]
    process_id = env["OMNI_IMG_PROCESS_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert "job-completion-index" in process_id
    host, port = env["OMNI_IMG_COORDINATOR"]["value"].split(":")
    assert host.startswith(manifest["metadata"]["name"]) and int(port) > 0
    assert container["command"][:2] == ["omni-img", "train"]


def test_local_script_sets_the_cpu_device_count():
    result = subprocess.run(
        ["bash", str(LAUNCH / "local.sh"), "--cpu_devices", "3", "--",
         "python3", "-c", "import os; print(os.environ['XLA_FLAGS'])"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "--xla_force_host_platform_device_count=3" in result.stdout
