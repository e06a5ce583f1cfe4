"""One rule for unknown keys in every typed config block (omni_img/fields.py)."""

import pytest

from omni_img.errors import UserError
from omni_img.models.bands import rolling_decoder_config
from omni_img.models.generator import as_generator_config
from omni_img.models.tokenizer import tokenizer_config_from_mapping


@pytest.mark.parametrize(
    "build, typo, meant",
    [
        (tokenizer_config_from_mapping, "patch_sise", "patch_size"),
        (as_generator_config, "dec_layer", "dec_layers"),
        (rolling_decoder_config, "num_bandz", "num_bands"),
    ],
)
def test_a_misspelt_key_names_itself_and_the_closest_field(build, typo, meant):
    with pytest.raises(UserError) as raised:
        build({typo: 1})
    assert str(raised.value) == (
        f"unknown config key config.model.{typo} ({typo!r} is not a key under config.model); "
        f"did you mean config.model.{meant}?"
    )


def test_a_block_that_is_not_a_group_of_keys_is_refused():
    with pytest.raises(UserError, match="config.model must be a group of keys, got int"):
        tokenizer_config_from_mapping(3)
