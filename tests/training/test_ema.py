"""The EMA of the weights follows them early in a run and settles to the configured decay."""

import jax
import jax.numpy as jnp
import optax
import pytest

from omni_img.training.state import TrainState
from omni_img.training.step import ema_decay_at, train_step


def test_decay_ramps_up_to_the_configured_value():
    decays = [float(ema_decay_at(step, 0.999)) for step in (0, 10, 90, 5000, 20000)]
    assert decays[0] == pytest.approx(0.1)
    assert decays[1] == pytest.approx(11 / 20)
    assert decays[2] == pytest.approx(0.91)
    assert decays[3] < 0.999
    assert decays[4] == pytest.approx(0.999)


def test_short_run_averages_trained_weights_not_the_initialisation():
    """After 300 steps towards a target, the EMA sits near the weights, not at 0."""
    target = jnp.ones((4,))

    def loss_fn(params, batch, rng):
        loss = jnp.sum((params["w"] - target) ** 2)
        return loss, {}

    tx = optax.sgd(0.05)
    params = {"w": jnp.zeros((4,))}
    state = TrainState(
        step=jnp.int32(0),
        params=params,
        opt_state=tx.init(params),
        ema_params=params,
        rng=jax.random.key(0),
    )
    step = jax.jit(
        lambda s: train_step(
            s, {}, loss_fn=loss_fn, tx=tx, schedule=lambda _: 0.05, grad_accum=1,
            ema_decay=0.999,
        )[0]
    )
    for _ in range(300):
        state = step(state)
    assert float(jnp.min(state.params["w"])) > 0.99
    # A fixed 0.999 would leave 0.999**300 = 74 % of the zeros in the average (EMA < 0.3).
    assert float(jnp.min(state.ema_params["w"])) > 0.9
