"""Every key of an experiment file is checked before anything compiles, in every stage."""

import pathlib

import pytest

from omni_img import cli
from omni_img.config import load_config, validate_config
from omni_img.errors import UserError
from omni_img.training import preamble

ROOT = pathlib.Path(__file__).resolve().parents[2]
STAGE_EXPERIMENTS = [
    "tokenizer_tiny.py", "tokenizer_tiny.py:vq", "tokenizer_imagenet256.py",
    "generator_tiny.py", "t2i_256.py:gpu8,fsdp", "c2i_imagenet256.py:B,gpu8,fsdp",
    "rolling_tiny.py",
]  # fmt: skip
JOB_EXPERIMENTS = ["omni_tiny.py", "omni_quality.py"]  # `omni-img demo --config`


def test_every_experiment_file_is_covered():
    named = {spec.partition(":")[0] for spec in STAGE_EXPERIMENTS} | set(JOB_EXPERIMENTS)
    assert named == {path.name for path in (ROOT / "experiments").glob("*.py")}


@pytest.mark.parametrize("spec", STAGE_EXPERIMENTS)
def test_every_stage_experiment_validates(spec):
    config = load_config(str(ROOT / "experiments" / spec))
    validate_config(config, 8)


@pytest.mark.parametrize("name", JOB_EXPERIMENTS)
def test_the_job_configs_validate(name):
    from omni_img.demo import check_job_config

    check_job_config(load_config(str(ROOT / "experiments" / name)))


def test_every_stage_of_a_job_reads_the_jobs_dataset():
    from omni_img.demo import STAGES, point_stages_at_dataset

    config = load_config(str(ROOT / "experiments/omni_quality.py"))
    config.data_dir = "/data/tfds"
    point_stages_at_dataset(config)
    for stage in STAGES:
        data = config[stage].data
        found = (data.name, data.builder_config, data.data_dir)
        assert found == ("omni_shapes", "64px_200k", "/data/tfds"), stage


def _experiment_with(tmp_path, base: str, line: str) -> pathlib.Path:
    """A temporary experiment file: `base`'s config with one more line run on it."""
    path = tmp_path / "misspelt.py"
    base_path = str(ROOT / "experiments" / base)
    path.write_text(
        "import importlib.util\n\n"
        f"_spec = importlib.util.spec_from_file_location('base', {base_path!r})\n"
        "_base = importlib.util.module_from_spec(_spec)\n"
        "_spec.loader.exec_module(_base)\n\n\n"
        "def get_config(arg=None):\n"
        "    config = _base.get_config(arg)\n"
        f"    {line}\n"
        "    return config\n"
    )
    return path


@pytest.fixture
def no_training(monkeypatch):
    """Every trainer stops where its first step after validation (the mesh) begins:
    all three start through omni_img.training.preamble.start_run."""

    def past_validation(*args, **kwargs):
        raise AssertionError("the trainer went past config validation")

    monkeypatch.setattr(preamble, "make_mesh", past_validation)


MISSPELT = [
    # (experiment, the line that adds the misspelt key, the key, the key meant)
    ("tokenizer_tiny.py", "config.model.num_res_block = 3", "model.num_res_block",
     "model.num_res_blocks"),
    ("tokenizer_tiny.py", "config.loss.adversarail = 0.1", "loss.adversarail", "loss.adversarial"),
    ("generator_tiny.py", "config.sampling.cfg_scal = 2.0", "sampling.cfg_scal",
     "sampling.cfg_scale"),
    ("generator_tiny.py", "config.data.task_weights.compse = 1.0", "data.task_weights.compse",
     "data.task_weights.compose"),
    ("generator_tiny.py", "config.caption_dropuot = 0.2", "caption_dropuot", "caption_dropout"),
    ("rolling_tiny.py", "config.eval.num_exampels = 8", "eval.num_exampels", "eval.num_examples"),
    ("rolling_tiny.py", "config.optim.warmup_step = 5", "optim.warmup_step", "optim.warmup_steps"),
]  # fmt: skip


@pytest.mark.parametrize("base, line, key, meant", MISSPELT)
def test_misspelt_key_in_an_experiment_file_is_one_line_before_training(
    tmp_path, capsys, no_training, base, line, key, meant
):
    path = _experiment_with(tmp_path, base, line)
    workdir = tmp_path / "run"
    assert cli.main(["train", "--config", str(path), "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"unknown config key config.{key} " in err and f"did you mean config.{meant}?" in err
    assert not workdir.exists()


def test_a_value_where_a_group_belongs_is_refused():
    config = load_config(str(ROOT / "experiments/tokenizer_tiny.py"))
    del config["eval"]
    config.eval = 5
    with pytest.raises(UserError, match=r"config\.eval must be a group of keys"):
        validate_config(config, 8)


def test_a_failing_get_config_is_one_line(tmp_path, capsys, no_training):
    # ml_collections refuses to replace a group with a number: a TypeError in get_config.
    path = _experiment_with(tmp_path, "tokenizer_tiny.py", "config.eval = 5")
    assert cli.main(["train", "--config", str(path), "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "get_config failed: TypeError" in err, err


def test_every_trainer_has_stage_defaults():
    from omni_img.config.defaults import STAGE_DEFAULTS
    from omni_img.trainers.commands import TRAINERS

    assert set(STAGE_DEFAULTS) == set(TRAINERS)
    for stage, defaults in STAGE_DEFAULTS.items():
        assert defaults().stage == stage


def test_misspelt_key_in_a_stage_of_the_main_job_is_refused_before_any_stage(tmp_path):
    from omni_img.demo import check_job_config

    config = load_config(str(ROOT / "experiments/omni_tiny.py"))
    config.rolling.model.windwo = 2
    meant = r"config\.rolling\.model\.windwo .*did you mean config\.rolling\.model\.window\?"
    with pytest.raises(UserError, match=meant):
        check_job_config(config)
    config = load_config(str(ROOT / "experiments/omni_tiny.py"))
    config.report.per_tsak = 8
    with pytest.raises(UserError, match=r"did you mean config\.report\.per_task\?"):
        check_job_config(config)


# `omni-img compile` builds the generator from `config.model`: its own checks must reach the
# command line as one-line errors, not as a ValueError's traceback.
GENERATOR_FLAGS = [
    "--config", "experiments/generator_tiny.py", "--topology", "cpu:8",
    "--config.model.grid_h=16", "--config.model.grid_w=16",
    "--config.model.image_vocab_size=1000", "--config.data.tokenized_dir=",
    "--config.model.dec_layers=1", "--config.model.enc_layers=1",
]  # fmt: skip


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.model.block_head=sequentail", "model.block_head='sequentail'"),
        ("--config.model.text_group=3", "model.dim=128 does not split into model.text_group=3"),
        ("--config.model.group=3", "model.group=3 does not divide the token grid 16x16"),
        ("--config.model.mlp_kind=relu", "model.mlp_kind='relu'"),
    ],
)
def test_bad_generator_value_is_one_line_not_a_traceback(capsys, override, message):
    assert cli.main(["compile", *GENERATOR_FLAGS, override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_unknown_generator_model_key_is_one_line_not_a_traceback(tmp_path, capsys):
    path = _experiment_with(tmp_path, "generator_tiny.py", "config.model.num_head = 4")
    flags = [f if f != "experiments/generator_tiny.py" else str(path) for f in GENERATOR_FLAGS]
    assert cli.main(["compile", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean config.model.num_heads?" in err, err


def test_make_generator_refuses_unknown_keys_with_a_user_error():
    from omni_img.models.generator import make_generator

    with pytest.raises(UserError, match=r"config\.model\.num_head .*config\.model\.num_heads\?"):
        make_generator({"num_head": 4})


def test_a_key_missing_from_the_main_jobs_config_is_named():
    from omni_img.demo import check_job_config

    config = load_config(str(ROOT / "experiments/omni_tiny.py"))
    del config.report["episodes"]
    with pytest.raises(UserError, match=r"no config\.report\.episodes$"):
        check_job_config(config)
