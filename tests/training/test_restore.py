"""What a checkpoint restores onto: other meshes, other process counts, and which
changes of the config a resume refuses."""

import json
import pathlib

import jax
import numpy as np
import pytest

from omni_img.config import load_config
from omni_img.config.defaults import rules_from_config
from omni_img.errors import UserError
from omni_img.sharding import make_mesh
from omni_img.sharding.mesh import MESH_AXES
from omni_img.stages import generator
from omni_img.trainers import tokenizer
from omni_img.training.checkpoint import Checkpointer
from omni_img.training.checkpoint_digest import write_digest
from omni_img.training.data import make_train_iterator
from omni_img.training.fit import abstract_train_state, restore_latest
from omni_img.training.state import TrainState, create_sharded_state
from tests.support.synthetic import SyntheticSource
from tests.support.tiny_configs import tiny_tokenizer_config

ROOT = pathlib.Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ meshes


def tiny_generator_config(mesh: dict[str, int]):
    """The generator at test size; its attention and MLP weights carry tensor axes."""
    model = {"dim": 32, "mlp_dim": 64, "num_heads": 2, "enc_layers": 1, "dec_layers": 1,
             "max_text_len": 64, "max_history_len": 32, "grid_h": 4, "grid_w": 4,
             "image_vocab_size": 64}  # fmt: skip
    overrides = [f"--config.model.{key}={value}" for key, value in model.items()]
    overrides += [f"--config.mesh.{axis}={mesh.get(axis, 1)}" for axis in MESH_AXES]
    overrides += ["--config.batch_size=8"]
    return load_config(str(ROOT / "experiments/generator_tiny.py"), overrides)


def mesh_axes_used(state: TrainState) -> set[str]:
    """Every mesh axis that splits some leaf of `state` (over more than one device)."""
    used = set()
    for leaf in jax.tree.leaves(state):
        for axes in leaf.sharding.spec:
            for name in (axes if isinstance(axes, tuple) else (axes,)):
                if name is not None and leaf.sharding.mesh.shape[name] > 1:
                    used.add(name)
    return used


FSDP8 = {"fsdp": 8}
DATA8 = {"data": 8}
D2F2T2 = {"data": 2, "fsdp": 2, "tensor": 2}
F2T2_ON_4 = {"fsdp": 2, "tensor": 2}  # restored onto 4 of the 8 devices


@pytest.mark.parametrize(
    "saved_on, restored_on",
    [(FSDP8, DATA8), (DATA8, FSDP8), (D2F2T2, DATA8), (DATA8, D2F2T2), (D2F2T2, F2T2_ON_4)],
    ids=["fsdp8-to-data8", "data8-to-fsdp8", "d2f2t2-to-data8", "data8-to-d2f2t2",
         "d2f2t2-to-f2t2-on-4-devices"],  # fmt: skip
)
def test_sharded_checkpoint_restores_onto_another_mesh(tmp_path, saved_on, restored_on):
    config = tiny_generator_config(saved_on)
    init_params = generator.train_step_parts(config).init_params
    rules = rules_from_config(config)
    _, _, tx, _ = abstract_train_state(config, init_params, make_mesh(config.mesh), rules)
    saved = create_sharded_state(init_params, tx, make_mesh(config.mesh), rules, seed=3)
    assert {"fsdp", "tensor"} & set(saved_on) <= mesh_axes_used(saved)  # truly sharded
    checkpointer = Checkpointer(tmp_path, config.checkpoint)
    checkpointer.save(7, saved)
    checkpointer.close()

    devices = jax.devices()[:4] if restored_on is F2T2_ON_4 else None
    mesh = make_mesh({axis: restored_on.get(axis, 1) for axis in MESH_AXES}, devices)
    restored = restore_latest(config, tmp_path, init_params, mesh, rules)
    wanted, _, _, _ = abstract_train_state(config, init_params, mesh, rules)
    assert {"fsdp", "tensor"} & set(restored_on) <= mesh_axes_used(restored)
    triples = zip(jax.tree.leaves(restored), jax.tree.leaves(saved), jax.tree.leaves(wanted),
                  strict=True)  # fmt: skip
    for got, original, want in triples:
        np.testing.assert_array_equal(np.asarray(got), np.asarray(original))
        assert got.sharding.is_equivalent_to(want.sharding, got.ndim)
        assert got.sharding.mesh.shape == mesh.shape


# ------------------------------------------------------------------ process counts


def iterator(process_index: int = 0, process_count: int = 1):
    return make_train_iterator(
        range(100),
        global_batch_size=8,
        seed=0,
        transform=lambda i: {"x": np.asarray(i)},
        process_index=process_index,
        process_count=process_count,
    )


def advanced(it, batches: int):
    for _ in range(batches):
        next(it)
    return it


def write_positions(directory: pathlib.Path, states: list[dict]) -> None:
    """A data item as grain writes it when `len(states)` processes save."""
    for name in directory.glob("process_*"):
        name.unlink()
    for index, state in enumerate(states):
        path = directory / f"process_{index}-of-{len(states)}.json"
        path.write_text(json.dumps(state))


def test_data_position_saved_by_two_processes_restores_onto_one(tmp_path):
    state = TrainState(step=jax.numpy.int32(3), params={}, opt_state=(), ema_params={},
                       rng=jax.random.PRNGKey(0))  # fmt: skip
    options = tiny_tokenizer_config().checkpoint
    checkpointer = Checkpointer(tmp_path, options)
    checkpointer.save(3, state, advanced(iterator(), 3))
    checkpointer.wait()
    # Rewrite the saved position as two processes, 3 batches in, would have left it.
    two = [advanced(iterator(p, 2), 3).get_state() for p in range(2)]
    write_positions(tmp_path / "checkpoints" / "3" / "data", two)
    write_digest(tmp_path / "checkpoints" / "3")  # the files as two processes wrote them
    assert not (tmp_path / "checkpoints" / "3" / "data" / "process_0-of-1.json").exists()

    resumed = iterator()
    checkpointer.restore(jax.tree.map(lambda x: x, state), resumed)
    checkpointer.close()
    global_batch_3 = np.concatenate([next(advanced(iterator(p, 2), 3))["x"] for p in range(2)])
    np.testing.assert_array_equal(next(resumed)["x"], global_batch_3)


def test_data_position_saved_by_one_process_restores_onto_two(tmp_path):
    from omni_img.training.data_position import restore_position

    write_positions(tmp_path, [advanced(iterator(), 5).get_state()])
    halves = []
    for index in range(2):
        it = iterator(index, 2)
        restore_position(tmp_path, it, process_index=index, process_count=2)
        halves.append(next(it)["x"])
    np.testing.assert_array_equal(np.concatenate(halves), next(advanced(iterator(), 5))["x"])


def test_data_positions_that_disagree_are_refused(tmp_path):
    from omni_img.training.data_position import restore_position

    write_positions(tmp_path, [advanced(iterator(0, 2), 3).get_state(),
                               advanced(iterator(1, 2), 4).get_state()])  # fmt: skip
    with pytest.raises(UserError, match="saved by 2 processes at different positions") as error:
        restore_position(tmp_path, iterator(), process_index=0, process_count=1)
    assert "onto 1 process" in str(error.value) and "\n" not in str(error.value)


# ------------------------------------------------------------------ the schedule


def train_tiny(workdir, num_steps):
    config = tiny_tokenizer_config(num_steps=num_steps)
    return tokenizer.train(
        config, str(workdir), train_source=SyntheticSource(), eval_source=SyntheticSource(16)
    )


def test_resuming_with_another_num_steps_is_refused(tmp_path):
    train_tiny(tmp_path / "run", num_steps=2)
    with pytest.raises(UserError) as error:
        train_tiny(tmp_path / "run", num_steps=4)
    message = str(error.value)
    assert "num_steps=2" in message and "num_steps=4" in message and "\n" not in message
    assert sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir()) == [2]
