"""The optimizer: the paper's cosine schedule (stepped per epoch or per step), the run's rate as state, frozen leaves,
and non-finite updates skipped."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fno_jax.training.optim import current_learning_rate, learning_rate_schedule, make_optimizer


def test_cosine_stepped_once_per_epoch_is_the_papers():
    # CosineAnnealingLR(T_max=E) stepped per epoch: epoch e runs at lr (1 + cos(pi e / E)) / 2 for all its steps.
    lr, epochs, per_epoch = 1e-3, 5, 4
    schedule = learning_rate_schedule(lr, epochs * per_epoch, steps_per_decay=per_epoch)
    for step in range(epochs * per_epoch):
        e = step // per_epoch
        np.testing.assert_allclose(schedule(step), lr * (1 + np.cos(np.pi * e / epochs)) / 2, rtol=1e-6)
    per_step = learning_rate_schedule(lr, epochs * per_epoch)
    assert float(per_step(1)) < float(per_step(0)) and float(schedule(1)) == float(schedule(0))


@pytest.mark.parametrize("weight_decay", [0.0, 1e-4])
def test_updates_are_bitwise_optax_adam_with_the_schedule(weight_decay):
    # The rate lives in the state, yet every update is the one optax's own adam(w) with the schedule gives (both
    # compiled, as in training: op-by-op execution may round a fused expression differently).
    params = {"w": jnp.linspace(-1.0, 1.0, 7), "b": jnp.ones((3,))}
    grads = [jax.tree_util.tree_map(lambda x, k=k: jnp.sin(x * (k + 1)), params) for k in range(6)]
    schedule = learning_rate_schedule(3e-3, 6)
    reference = optax.adamw(schedule, weight_decay=weight_decay) if weight_decay else optax.adam(schedule)
    ours = make_optimizer(3e-3, 6, weight_decay=weight_decay)
    p_ref, s_ref, p_ours, s_ours = params, reference.init(params), params, ours.init(params)
    update_ref, update_ours = jax.jit(reference.update), jax.jit(ours.update)
    for g in grads:
        u_ref, s_ref = update_ref(g, s_ref, p_ref)
        u_ours, s_ours = update_ours(g, s_ours, p_ours)
        p_ref, p_ours = optax.apply_updates(p_ref, u_ref), optax.apply_updates(p_ours, u_ours)
        for a, b in zip(jax.tree_util.tree_leaves(p_ref), jax.tree_util.tree_leaves(p_ours), strict=True):
            np.testing.assert_array_equal(a, b)
    assert float(current_learning_rate(s_ours)) == pytest.approx(float(schedule(5)), rel=1e-6)


def test_the_rate_is_state_so_one_update_serves_runs_of_other_rates():
    params = {"w": jnp.ones((4,))}
    grad = {"w": jnp.full((4,), 0.5)}
    fast, slow = make_optimizer(1e-2, 10), make_optimizer(1e-4, 10)
    states = jax.tree_util.tree_map(lambda *x: jnp.stack(x), fast.init(params), slow.init(params))
    updates, _ = jax.vmap(fast.update, in_axes=(None, 0, None))(grad, states, params)
    single, _ = slow.update(grad, slow.init(params), params)
    np.testing.assert_array_equal(updates["w"][1], single["w"])
    np.testing.assert_allclose(updates["w"][0], 100 * single["w"], rtol=1e-6)


def test_non_finite_gradient_leaves_params_and_state_unchanged():
    optimizer = make_optimizer(1e-3, 10)
    params = {"w": jnp.ones((3,))}
    state = optimizer.init(params)
    updates, new_state = optimizer.update({"w": jnp.array([1.0, jnp.nan, 1.0])}, state, params)
    assert not bool(new_state.last_finite)
    np.testing.assert_array_equal(optax.apply_updates(params, updates)["w"], params["w"])


def test_freezing_every_parameter_is_refused():
    # (Frozen leaves staying bitwise fixed through a run: tests/test_finetune.py.)
    params = {"lift": {"kernel": jnp.ones((2, 2))}, "fc2": {"kernel": jnp.ones((2, 1))}}
    with pytest.raises(ValueError, match="matches every parameter"):
        make_optimizer(1e-3, 10, freeze=(".*",), params=params)


@pytest.mark.parametrize(("setting", "expected"), [("highest", "highest"), ("high", "high"), ("default", None)])
def test_runs_trace_their_programs_at_the_configured_matmul_precision(setting, expected):
    from conftest import tiny_config

    from fno_jax.config import matmul_precision

    with matmul_precision(tiny_config(**{"train.matmul_precision": setting})):
        assert jax.config.jax_default_matmul_precision == expected
