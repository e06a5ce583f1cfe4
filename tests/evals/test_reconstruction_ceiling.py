"""The ceiling beside the generator's figures: the judge on the tokenizer's reconstructions."""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from omni_img.evals.samples import reconstruction_ceiling
from omni_img.stages.run import TrainedRun
from omni_img.world.examples import example


class _Exact(nn.Module):
    """A stand-in tokenizer whose "tokens" are the image itself: a lossless round trip."""

    def encode(self, images):
        return images

    def decode(self, ids):
        return ids


class _Flat(_Exact):
    """A stand-in that loses everything: every reconstruction is one flat colour."""

    def decode(self, ids):
        return jnp.zeros_like(ids)


def _stages(tokenizer) -> TrainedRun:
    return TrainedRun(tokenizer, {}, generator=None, generator_params=None, text_tokenizer=None)


def test_the_ceiling_judges_what_the_tokenizer_gives_back():
    records = [example(0, "test", index) for index in range(12)]  # compose, write, edit
    exact = reconstruction_ceiling(_stages(_Exact()), records, batch_size=5)
    flat = reconstruction_ceiling(_stages(_Flat()), records, batch_size=5)
    assert sorted(exact["tasks"]) == ["compose", "edit", "write"]
    assert sum(entry["n"] for entry in exact["tasks"].values()) == len(records)
    # A lossless tokenizer leaves the ground truth, which the judge passes; a tokenizer
    # that returns a flat image leaves nothing to pass.
    assert all(entry["accuracy"] == 1.0 for entry in exact["tasks"].values()), exact["tasks"]
    assert all(entry["accuracy"] == 0.0 for entry in flat["tasks"].values()), flat["tasks"]
    assert np.isclose(exact["accuracy"], 1.0) and flat["accuracy"] == 0.0
