"""`omni-img compile` on the 8 fake CPU devices: every stage's tiny config, the presets."""

import json
import pathlib

import numpy as np
import pytest

from omni_img.cli import main
from omni_img.config import load_config
from omni_img.config.saved import save_config
from omni_img.errors import UserError
from omni_img.trainers.compile import collective_summary, compile_report

ROOT = pathlib.Path(__file__).resolve().parents[2]
HLO = """
  %all-gather.1 = f32[8,128]{1,0} all-gather(f32[1,128]{1,0} %p), dimensions={0}
  %ars = (f32[256]{0}, f32[256]{0}) all-reduce-start(f32[256]{0} %g), to_apply=%add
  %ard = f32[256]{0} all-reduce-done((f32[256]{0}, f32[256]{0}) %ars)
  %reduce-scatter.2 = bf16[4,64]{1,0} reduce-scatter(bf16[32,64]{1,0} %x), dimensions={0}
"""


def test_collectives_are_counted_with_their_bytes():
    summary = collective_summary(HLO)
    assert summary["all-gather"] == {"count": 1, "bytes": 8 * 128 * 4}
    assert summary["all-reduce"] == {"count": 1, "bytes": 256 * 4}
    assert summary["reduce-scatter"] == {"count": 1, "bytes": 4 * 64 * 2}


def _report(capsys, tmp_path, *args):
    out = tmp_path / "report.json"
    assert main(["compile", "--topology", "cpu:8", "--json", str(out), *args]) == 0
    printed = capsys.readouterr().out
    for heading in ("parameters", "memory / device", "FLOPs / step", "collectives"):
        assert heading in printed
    return json.loads(out.read_text())


def test_tiny_tokenizer_and_generator(capsys, tmp_path):
    tokenizer = _report(capsys, tmp_path, "--config", "experiments/tokenizer_tiny.py")
    assert tokenizer["mesh"] == {"data": 8, "fsdp": 1, "tensor": 1}
    assert tokenizer["flops_per_device"] > 0
    assert tokenizer["memory_bytes_per_device"]["argument"] > tokenizer["parameter_bytes"]
    # Pure data parallelism: gradients are all-reduced and nothing is gathered.
    assert "all-reduce" in tokenizer["collectives"] and "all-gather" not in tokenizer["collectives"]

    generator = _report(
        capsys, tmp_path, "--config", "experiments/generator_tiny.py",
        "--config.model.grid_h=16", "--config.model.grid_w=16",
        "--config.model.image_vocab_size=1000", "--config.data.tokenized_dir=",
    )  # fmt: skip
    assert generator["stage"] == "generator" and generator["parameters"] > 1e5


def test_tiny_rolling_decoder_reads_the_generator_config(capsys, tmp_path):
    generator = load_config(str(ROOT / "experiments/generator_tiny.py"))
    generator.model.grid_h = generator.model.grid_w = 16
    generator.model.image_vocab_size = 1000
    generator.data.tokenized_dir = ""
    (tmp_path / "generator").mkdir()
    save_config(generator, tmp_path / "generator")
    (tmp_path / "tokenizer").mkdir()
    save_config(load_config(str(ROOT / "experiments/tokenizer_tiny.py")), tmp_path / "tokenizer")
    report = _report(
        capsys, tmp_path, "--config", "experiments/rolling_tiny.py",
        f"--config.generator_workdir={tmp_path / 'generator'}", "--config.data.tokenized_dir=",
        f"--config.tokenizer_workdir={tmp_path / 'tokenizer'}",
    )  # fmt: skip
    assert report["stage"] == "rolling" and report["flops_per_device"] > 0


def test_rolling_decoder_without_a_generator_config_is_a_clear_error(tmp_path):
    config = load_config(
        str(ROOT / "experiments/rolling_tiny.py"),
        [f"--config.generator_workdir={tmp_path / 'missing'}"],
    )
    import jax

    with pytest.raises(UserError, match="missing"):
        compile_report(config, jax.devices())


@pytest.mark.parametrize(
    "preset, shards",
    [("t2i_256.py:gpu8,fsdp", 8), ("t2i_256.py:gpu8,fsdp_tp", 8),
     ("c2i_imagenet256.py:B,gpu8,fsdp", 8), ("c2i_imagenet256.py:B,gpu8,pure_dp", 1)],
)  # fmt: skip
def test_large_presets_shard_their_parameters(capsys, tmp_path, preset, shards):
    # The preset at full width and mesh, two layers deep so it compiles in seconds:
    # the per-device share of the parameters does not depend on the depth.
    report = _report(
        capsys, tmp_path, "--config", f"experiments/{preset}",
        "--config.model.dec_layers=2", "--config.model.enc_layers=1", "--config.batch_size=16",
    )  # fmt: skip
    per_device, total = report["parameter_bytes_per_device"], report["parameter_bytes"]
    assert per_device == pytest.approx(total / shards, rel=0.15), (per_device, total)
    if shards > 1:
        assert "all-gather" in report["collectives"]  # fsdp gathers weights before use
    else:
        assert "all-gather" not in report["collectives"]


def test_wrong_device_count_is_a_clear_error(capsys):
    args = ["compile", "--config", "experiments/tokenizer_tiny.py", "--topology", "cpu:4"]
    assert main(args) == 2
    assert "already has 8 CPU devices" in capsys.readouterr().err


def test_mesh_presets_name_their_devices_and_reject_unknown_names():
    from omni_img.config.meshes import LAYOUTS, TARGET_DEVICES, mesh_preset

    for target, layouts in LAYOUTS.items():
        for layout, axes in layouts.items():
            assert np.prod(list(axes.values())) == TARGET_DEVICES[target], (target, layout)
    assert mesh_preset("gpu32")[1:] == ("fsdp", {"data": 4, "fsdp": 8, "tensor": 1})
    with pytest.raises(UserError, match="unknown target 'gpu9'"):
        load_config(str(ROOT / "experiments/t2i_256.py:gpu9"))
    with pytest.raises(UserError, match="unknown mesh layout 'zero3'"):
        load_config(str(ROOT / "experiments/c2i_imagenet256.py:L,gpu8,zero3"))
