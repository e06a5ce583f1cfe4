"""The framework, exercised through the tokenizer stage on 8 fake CPU devices."""

import json
import pathlib
import signal
import time

import jax
import numpy as np
import pytest

from omni_img.stages import tokenizer as tokenizer_stage
from omni_img.trainers import tokenizer
from tests.support.synthetic import SyntheticSource
from tests.support.tiny_configs import tiny_tokenizer_config
from tests.support.workers import finished_checkpoints, run_worker

ROOT = pathlib.Path(__file__).resolve().parents[2]


def losses_of(workdir) -> list[float]:
    lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return [r["loss"] for r in records if "loss" in r]


def train_tiny(workdir, num_steps=3, **overrides):
    config = tiny_tokenizer_config(num_steps=num_steps, **overrides)
    return tokenizer.train(
        config, str(workdir), train_source=SyntheticSource(), eval_source=SyntheticSource(16)
    )


@pytest.mark.slow  # minutes on 2 cores: .ci/slow
def test_same_loss_on_every_mesh(tmp_path):
    meshes = {
        "data8": {"mesh.data": 8, "mesh.fsdp": 1, "mesh.tensor": 1},
        "data2_fsdp4": {"mesh.data": 2, "mesh.fsdp": 4, "mesh.tensor": 1},
        "data2_fsdp2_tensor2": {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2},
    }
    losses = {}
    for name, mesh in meshes.items():
        train_tiny(tmp_path / name, num_steps=3, **mesh)
        losses[name] = losses_of(tmp_path / name)
    reference = losses["data8"]
    assert len(reference) == 3
    assert reference[0] != reference[-1]  # it trained
    for name, values in losses.items():
        np.testing.assert_allclose(values, reference, rtol=2e-5, err_msg=name)


def test_fsdp_shards_parameters():
    from omni_img.config.defaults import rules_from_config
    from omni_img.sharding import make_mesh
    from omni_img.training.optim import make_optimizer
    from omni_img.training.state import create_sharded_state

    config = tiny_tokenizer_config(**{"mesh.data": 2, "mesh.fsdp": 4})
    mesh = make_mesh(config.mesh)
    model = tokenizer_stage.build_model(config)
    tx = make_optimizer(config.optim, config.num_steps)
    state = create_sharded_state(
        tokenizer_stage.init_fn(model, config), tx, mesh, rules_from_config(config), seed=0
    )
    sharded = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]:
        shard_shape = leaf.addressable_shards[0].data.shape
        if shard_shape != leaf.shape:
            sharded += 1
            # conv_out (the last axis of a kernel) is split 4 ways over fsdp.
            assert shard_shape[-1] * 4 == leaf.shape[-1], jax.tree_util.keystr(path)
    kernels = [
        p
        for p, _ in jax.tree_util.tree_flatten_with_path(state.params)[0]
        if "kernel" in jax.tree_util.keystr(p)
    ]
    assert sharded >= len(kernels) - 2  # all but edge layers whose width 4 does not divide


@pytest.mark.slow  # minutes on 2 cores: .ci/slow
def test_gradient_accumulation_matches_large_batch(tmp_path):
    train_tiny(tmp_path / "big", num_steps=2, grad_accum=1, batch_size=32)
    train_tiny(tmp_path / "accum", num_steps=2, grad_accum=4, batch_size=32)
    np.testing.assert_allclose(
        losses_of(tmp_path / "accum"), losses_of(tmp_path / "big"), rtol=1e-5
    )
    big = tokenizer_stage.restore_params(tiny_tokenizer_config(2), str(tmp_path / "big"))
    accum = tokenizer_stage.restore_params(tiny_tokenizer_config(2), str(tmp_path / "accum"))
    for a, b in zip(jax.tree.leaves(big), jax.tree.leaves(accum)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-4)


def _records(workdir: pathlib.Path) -> list[dict]:
    return [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]


def _wait_until(condition, process, what: str, timeout=300):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"worker exited before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout}s"
        time.sleep(0.05)


def _logged_loss_steps(workdir: pathlib.Path) -> list[int]:
    metrics = workdir / "metrics.jsonl"
    if not metrics.exists():
        return []
    return [r["step"] for r in _records(workdir) if "loss" in r]


def test_exact_resume_after_sigkill_and_restore_on_fewer_devices(tmp_path):
    steps, every, warmup = 10, 4, 2  # saves at 4 and 8; tiny_tokenizer_config warms up 2
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    run_worker(whole, steps, 8, "--checkpoint_every", every, "--dump", tmp_path / "whole.npz")

    # Kill between two saves, past warmup: once the save at 4 is finished and step 6's
    # loss is logged (steps 5 and 6 ran); the save at 8 is more than a slow batch away.
    process = run_worker(broken, steps, 8, "--delay", "0.03", "--checkpoint_every", every,
                          background=True)  # fmt: skip

    def between_saves() -> bool:
        return finished_checkpoints(broken) == [4] and 6 in _logged_loss_steps(broken)

    _wait_until(between_saves, process, "save 4 finished and step 6 logged")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert finished_checkpoints(broken) == [4], "the kill did not land between saves 4 and 8"
    lost = [s for s in _logged_loss_steps(broken) if s > 4]
    assert lost and min(lost) > warmup  # steps run past the last save, and lost with the kill

    resumed = run_worker(broken, steps, 8, "--checkpoint_every", every,
                          "--dump", tmp_path / "broken.npz")  # fmt: skip
    assert "resumed from this workdir at step 4" in resumed.stdout, resumed.stdout
    starts = [r for r in _records(broken) if "start_step" in r]
    assert [r["start_step"] for r in starts] == [0, 4]  # a restart from scratch logs 0 twice
    second_run = _records(broken)[_records(broken).index(starts[-1]) :]
    assert [r["step"] for r in second_run if "loss" in r] == list(range(5, steps + 1))
    assert [r["steps_run"] for r in second_run if "steps_run" in r] == [steps - 4]

    whole_params, broken_params = np.load(tmp_path / "whole.npz"), np.load(tmp_path / "broken.npz")
    assert sorted(whole_params) == sorted(broken_params)
    for name in whole_params:
        np.testing.assert_array_equal(whole_params[name], broken_params[name], err_msg=name)

    # The same batches, in the same order: per-step input fingerprints and losses agree
    # (also those of the steps the kill lost, logged twice).
    def per_step(workdir, key):
        return [(r["step"], r[key]) for r in _records(workdir) if key in r]

    for key in ("input_checksum", "loss"):
        reference = dict(per_step(whole, key))
        assert all(reference[step] == value for step, value in per_step(broken, key)), key
    assert len(per_step(whole, "input_checksum")) == steps

    # A checkpoint written on 8 devices restores onto 4 and onto 1.
    for devices in (4, 1):
        dump = tmp_path / f"restored{devices}.npz"
        run_worker(whole, steps, devices, "--restore_only", "--dump", dump)
        restored = np.load(dump)
        for name in whole_params:
            np.testing.assert_array_equal(whole_params[name], restored[name], err_msg=name)


def test_sigterm_writes_a_final_checkpoint_at_the_step_it_stopped(tmp_path):
    workdir = tmp_path / "run"
    process = run_worker(workdir, 1000, 8, "--delay", "0.05", "--checkpoint_every", 10_000,
                          background=True)  # fmt: skip
    metrics = workdir / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and '"loss"' in metrics.read_text()):
        assert process.poll() is None, "worker exited before training"
        assert time.monotonic() < deadline, "no training step logged in 300 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0
    saved = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    logged = [json.loads(x)["step"] for x in metrics.read_text().splitlines() if '"loss"' in x]
    # No step-based save was due: the one checkpoint is the stop's, at the last step run.
    assert saved == [max(logged)] and 0 < saved[0] < 1000
    # A preempted run exits without its final evaluation (the resumed run does it), and
    # leaves no evaluation file that would mark the stage finished.
    assert not (workdir / "tokenizer_eval.json").exists()


@pytest.mark.parametrize("steps", ["1,2", "2,50"])  # the second ends inside the range
def test_profile_steps_write_a_trace(tmp_path, steps):
    train_tiny(tmp_path / "run", num_steps=3, profile_steps=steps)
    traces = list((tmp_path / "run" / "profile").rglob("*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.optim.lrr=1", "did you mean config.optim.lr"),
        ("--config.batch_size=12", "not divisible by the data-parallel size 8"),
        ("--config.mesh.fsdp=3", "does not divide the 8 devices"),
        ("--config.num_steps=ten", "config.num_steps expects an int"),
    ],
)
def test_bad_config_is_one_line_error(tmp_path, capsys, override, message):
    from omni_img.cli import main

    code = main(
        [
            "train",
            "--config",
            str(ROOT / "experiments/tokenizer_tiny.py"),
            "--workdir",
            str(tmp_path / "run"),
            override,
        ]
    )
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert message in error
    assert len(error.splitlines()) == 1


def test_missing_workdir_parent_is_one_line_error(tmp_path, capsys):
    from omni_img.cli import main

    code = main(
        [
            "train",
            "--config",
            str(ROOT / "experiments/tokenizer_tiny.py"),
            "--workdir",
            str(tmp_path / "no" / "such" / "run"),
        ]
    )
    error = capsys.readouterr().err.strip()
    assert code == 2 and "parent directory" in error and len(error.splitlines()) == 1


@pytest.mark.slow  # minutes on 2 cores: .ci/slow
def test_adversarial_option_trains_a_discriminator(tmp_path):
    train_tiny(tmp_path / "gan", num_steps=2, **{"loss.adversarial": 0.5})
    lines = (tmp_path / "gan" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines if '"adversarial_d"' in x]
    assert len(records) == 2 and all(np.isfinite(r["adversarial_d"]) for r in records)
    config = tiny_tokenizer_config(2, **{"loss.adversarial": 0.5})
    params = tokenizer_stage.restore_params(config, str(tmp_path / "gan"))
    assert set(params) == {"tokenizer", "discriminator"}
    initial = tokenizer_stage.init_fn(tokenizer_stage.build_model(config), config)(
        jax.random.split(jax.random.PRNGKey(config.seed))[0]
    )
    moved = [
        not np.allclose(np.asarray(a), np.asarray(b))
        for a, b in zip(
            jax.tree.leaves(params["discriminator"]), jax.tree.leaves(initial["discriminator"])
        )
    ]
    assert any(moved)  # the discriminator's own loss updates it
    _, _, tokenizer_only = tokenizer_stage.load_workdir(str(tmp_path / "gan"))
    assert "discriminator" not in tokenizer_only


def test_a_run_with_mesh_devices_lays_its_mesh_over_the_first_devices(tmp_path):
    from omni_img.training.preamble import start_run

    mesh, _, _ = start_run(tiny_tokenizer_config(mesh_devices=2), str(tmp_path / "two"))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 1, "tensor": 1}
    assert list(mesh.devices.flat) == jax.devices()[:2]


@pytest.mark.parametrize(
    ("devices", "processes", "message"),
    [(9, 1, r"mesh_devices=9: choose 0 \(all\) or 1\.\.8"), (2, 2, "with 2 processes")],
)
def test_a_mesh_over_devices_that_are_not_there_is_refused(devices, processes, message):
    from omni_img.config import validate_config
    from omni_img.errors import UserError

    config = tiny_tokenizer_config(mesh_devices=devices)
    with pytest.raises(UserError, match=message):
        validate_config(config, num_devices=8, num_processes=processes)
