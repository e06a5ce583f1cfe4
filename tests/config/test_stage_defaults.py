"""Stage defaults: every key a stage reads has one, saved runs read back over them."""

import dataclasses
import json

import pytest

from omni_img.config.defaults import STAGE_DEFAULTS, generator_defaults
from omni_img.config.saved import CONFIG_FILE, load_saved_config, save_config
from omni_img.config.schema import check_stage_keys
from omni_img.models.bands import RollingDecoderConfig
from omni_img.models.generator import GeneratorConfig
from omni_img.models.tokenizer import TokenizerConfig

MODEL_CLASSES = {
    "tokenizer": TokenizerConfig,
    "generator": GeneratorConfig,
    "rolling": RollingDecoderConfig,
}


@pytest.mark.parametrize("stage", sorted(STAGE_DEFAULTS))
def test_defaults_pass_their_own_key_check(stage):
    check_stage_keys(STAGE_DEFAULTS[stage]())


@pytest.mark.parametrize("stage", sorted(STAGE_DEFAULTS))
def test_a_model_blocks_defaults_are_its_dataclasses(stage):
    # The token space of the generator is the exception: 0 reads it from the data.
    from_data = {"grid_h", "grid_w", "image_vocab_size"} if stage == "generator" else set()
    block = STAGE_DEFAULTS[stage]().model
    fields = {field.name: field.default for field in dataclasses.fields(MODEL_CLASSES[stage])}
    for key, value in block.items():
        if key in fields and key not in from_data:
            assert value == fields[key], key
    assert all(block[key] == 0 for key in from_data)


def as_json(config) -> dict:
    return json.loads(json.dumps(config.to_dict()))


def test_a_run_saved_before_a_key_existed_reads_its_default(tmp_path):
    config = generator_defaults()
    config.input_masking = 0.25
    save_config(config, tmp_path)
    saved = json.loads((tmp_path / CONFIG_FILE).read_text())
    del saved["foreground_weight"], saved["eval"]["curve_per_task"], saved["model"]["group"]
    (tmp_path / CONFIG_FILE).write_text(json.dumps(saved))

    loaded = load_saved_config(tmp_path)
    assert loaded.input_masking == 0.25  # what the run saved wins
    assert loaded.foreground_weight == 1.0
    assert loaded.eval.curve_per_task == 0
    assert loaded.model.group == 1
    assert as_json(loaded) == as_json(generator_defaults()) | {"input_masking": 0.25}


def test_a_saved_group_of_weights_is_not_mixed_with_defaults(tmp_path):
    config = generator_defaults()
    config.data.task_weights = {"write": 1.0}
    save_config(config, tmp_path)
    assert dict(load_saved_config(tmp_path).data.task_weights) == {"write": 1.0}


def test_a_saved_value_of_the_wrong_kind_is_one_line(tmp_path):
    from omni_img.errors import UserError

    save_config(generator_defaults(), tmp_path)
    saved = json.loads((tmp_path / CONFIG_FILE).read_text())
    saved["eval"] = 5  # a number where a group of keys belongs
    (tmp_path / CONFIG_FILE).write_text(json.dumps(saved))
    with pytest.raises(UserError, match="does not fit its stage's keys") as error:
        load_saved_config(tmp_path)
    assert "\n" not in str(error.value)
