"""A pretrained operator in research code (`fno_jax.pretrained.operator`): the same predictions as the model's own
path, under jit, vmap and grad; shipped bundles that load by name and verify against their cards
(`python -m fno_jax.verify`); an inverse problem solved by gradient descent through the operator."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_python

from fno_jax import export, pretrained, verify
from fno_jax.model import channels, predict
from fno_jax.storage import integrity
from solvers import tasks


@pytest.fixture(scope="module")
def bundle(tiny_run, tmp_path_factory):
    workdir, _ = tiny_run
    path = tmp_path_factory.mktemp("operator") / "tiny"
    export.export_bundle(workdir, path)
    return str(path)


def _batch(n=16, count=3, seed=0):
    return tasks.Poisson(eigenvalue_range=(1.0, 5.0)).sample(jax.random.key(seed), count, n)


def test_the_operator_is_the_model_on_a_task_batch_or_physical_inputs(bundle):
    op = pretrained.operator(bundle)
    model, params, card = pretrained.load(bundle)
    batch = _batch()
    inputs = {"source": batch["source"], "coeffs": channels.coefficients(batch, card["layout"])}
    expected = predict(params, inputs, model=model, norm=pretrained.norm_stats(card), length=card["length"])
    np.testing.assert_array_equal(op(batch), expected)
    np.testing.assert_array_equal(op(batch["source"], diffusion=batch["diffusion"]), expected)
    assert op.card["layout"] == "poisson" and op.model.width == 8 and "poisson" in repr(op)


def test_the_operator_goes_through_jit_vmap_and_grad(bundle):
    op = pretrained.operator(bundle)
    batch = _batch()
    u = op(batch)
    np.testing.assert_allclose(jax.jit(lambda op, b: op(b))(op, batch), u, rtol=1e-5, atol=1e-7)
    per_sample = jax.vmap(lambda f, k: op(f[None], diffusion=k[None])[0])(batch["source"], batch["diffusion"])
    np.testing.assert_allclose(per_sample, u, rtol=1e-5, atol=1e-7)
    loss = lambda f, k: jnp.sum(op(f, diffusion=k) ** 2)
    g_source, g_diffusion = jax.grad(loss, argnums=(0, 1))(batch["source"], batch["diffusion"])
    assert g_source.shape == batch["source"].shape and g_diffusion.shape == (3, 2, 2)
    assert np.all(np.isfinite(g_source)) and float(jnp.abs(g_diffusion).max()) > 0
    # The gradient is the derivative: a step along it changes the loss as it predicts.
    eps, direction = 1e-3, jax.random.normal(jax.random.key(1), (3, 2, 2))
    direction = direction + jnp.swapaxes(direction, -1, -2)  # K stays symmetric
    k = batch["diffusion"]
    numeric = (loss(batch["source"], k + eps * direction) - loss(batch["source"], k - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(jnp.vdot(g_diffusion, direction), numeric, rtol=2e-2)


def test_the_operator_runs_at_another_resolution(bundle):
    op = pretrained.operator(bundle)  # trained at 16 x 16
    batch = _batch(n=32)
    u = op(batch)
    assert u.shape == (3, 32, 32) and np.all(np.isfinite(u))


def test_a_name_that_is_no_bundle_says_which_are_shipped(tmp_path):
    with pytest.raises(pretrained.BundleError, match="available\\(\\) lists"):
        pretrained.bundle_path("no-such-bundle")
    with pytest.raises(pretrained.BundleError, match="neither a bundle directory"):
        pretrained.operator(str(tmp_path / "nothing"))


def test_verify_passes_a_true_card_and_fails_a_card_claiming_ten_times_less(bundle, tmp_path):
    ok, lines = verify.verify(bundle)
    assert ok and any(line.startswith("test_rel_l2:") for line in lines)
    ok, _ = verify.verify(bundle, num=8)  # half the test set: within its standard errors
    assert ok
    # The same weights under a card whose test error is 10x lower than they give.
    liar = tmp_path / "liar"
    shutil.copytree(bundle, liar)
    card = json.loads((liar / "card.json").read_text())
    card.pop("checksum")
    card["test_metrics"]["test_rel_l2"] /= 10
    (liar / "card.json").write_text(json.dumps(integrity.seal(card)))
    result = run_python(["-m", "fno_jax.verify", str(liar)], check=False)
    assert result.returncode == 1 and "test_rel_l2" in result.stderr and "DIFFERS" in result.stderr
    result = run_python(["-m", "fno_jax.verify", bundle], check=False)
    assert result.returncode == 0 and "verified" in result.stdout


@pytest.mark.parametrize("name", pretrained.available())
def test_every_shipped_bundle_loads_by_name_and_verifies(name):
    ok, lines = verify.verify(name, num=64)
    assert ok, lines
    assert os.path.isdir(pretrained.bundle_path(name))


def test_shipped_bundles_exist_and_keep_the_package_small():
    names = pretrained.available()
    assert names, "no shipped bundle"
    size = sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(pretrained.SHIPPED_DIR) for f in files
    )
    assert size < 12 * 2**20, size


def test_the_inverse_problem_recovers_the_eigenvalue_through_the_shipped_operator():
    """Gradient descent on (e, t) through the shipped Poisson operator recovers e within 5% and t within 0.05 rad;
    through the spectral solver, to 1e-3."""
    from experiments import inverse_problem as inv

    true_e, true_t = 3.0, 0.7
    source, observed = inv.observe(true_e, true_t, num=2, resolution=32)
    exact = inv.recover(inv.solver_forward, source, observed, steps=200)
    surrogate = inv.recover(inv.operator_forward(pretrained.operator("poisson-e1_5-32")), source, observed, steps=200)
    e_err, t_err = exact.errors(true_e, true_t)
    assert e_err < 1e-3 and t_err < 1e-3, exact
    e_err, t_err = surrogate.errors(true_e, true_t)
    assert e_err < 0.05 and t_err < 0.05, surrogate
