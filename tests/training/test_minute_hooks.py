"""Minute hooks: learning-curve marks at equal *training* minutes, hook time excluded."""

import flax
import jax
import jax.numpy as jnp
import numpy as np

from omni_img.training import loop


@flax.struct.dataclass
class _State:
    step: jax.Array


class _FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_marks_fire_at_training_minutes_and_hook_time_does_not_count(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(loop.time, "perf_counter", clock)

    def batches():
        while True:
            clock.now += 60.0  # every batch costs one minute of training
            yield {"x": np.zeros(2, np.float32)}

    calls = []

    def hook(state, *, train_minutes):
        calls.append((int(state.step), round(train_minutes, 3)))
        clock.now += 600.0  # a 10-minute evaluation: not training time
        return {"curve_mark": float(len(calls))}

    step_fn = jax.jit(lambda state, batch: (_State(state.step + 1), {"loss": jnp.sum(batch["x"])}))
    result = loop.run_loop(
        state=_State(jnp.int32(0)),
        step_fn=step_fn,
        batches=batches(),
        to_device=lambda b: b,
        num_steps=10,
        checkpointer=None,
        log_every=1,
        minute_hooks=((3.0, hook),),
    )
    # Batch k+1 is drawn after step k, so step k ends k - 1 training minutes in; the
    # hooks' 10 minutes each never push the next mark forward.
    assert calls == [(4, 3.0), (7, 6.0), (10, 9.0)]
    assert result.train_minutes == 9.0
    assert result.train_seconds > 9 * 60 + 3 * 600 - 1  # the wall clock counts them


def test_no_minute_hooks_leaves_the_loop_as_it_was(monkeypatch):
    step_fn = jax.jit(lambda state, batch: (_State(state.step + 1), {"loss": jnp.sum(batch["x"])}))
    batches = iter([{"x": np.zeros(2, np.float32)}] * 5)
    result = loop.run_loop(
        state=_State(jnp.int32(0)),
        step_fn=step_fn,
        batches=batches,
        to_device=lambda b: b,
        num_steps=4,
        checkpointer=None,
    )
    assert result.steps_run == 4 and int(result.state.step) == 4
