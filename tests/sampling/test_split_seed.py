"""A seed's two keys come from one stored program, and are the keys eager JAX gives."""

import jax
import numpy as np
import pytest

from omni_img.errors import UserError
from omni_img.sampling.pipeline import split_seed


@pytest.mark.parametrize("seed", [0, 11, 2**31 - 1, 2**31, 2**32 - 1])
def test_keys_are_those_of_split_of_prngkey(seed):
    expected = jax.random.split(jax.random.PRNGKey(seed))
    ar_key, decoder_key = split_seed(seed)
    np.testing.assert_array_equal(np.asarray(ar_key), np.asarray(expected[0]))
    np.testing.assert_array_equal(np.asarray(decoder_key), np.asarray(expected[1]))


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "3"])
def test_a_seed_out_of_range_is_refused(seed):
    with pytest.raises(UserError, match="seed must be an integer"):
        split_seed(seed)
