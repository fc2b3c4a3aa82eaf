"""The default "dft" spectral convolution is the same linear map as the "fft" one; remat changes no number (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fno_jax.model import FNO
from fno_jax.model.spectral_conv import dft_matrices, spectral_conv


@pytest.mark.parametrize(("ny", "nx", "modes"), [(8, 8, 4), (6, 10, 3), (9, 7, 2), (16, 12, 5)])
def test_dft_equals_fft(x64, ny, nx, modes):
    # Even/odd sizes, non-square grids and modes at the Nyquist limit (rows tile all ky).
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, ny, nx, 3)))
    weights = jnp.asarray(rng.normal(size=(3, 4, 2 * modes, modes, 2)))
    fft = np.asarray(spectral_conv(x, weights, "fft"))
    dft = np.asarray(spectral_conv(x, weights, "dft"))
    # Orthonormal transforms of O(1) data: both are within ~1e-15 * sqrt(n) per entry of the exact map.
    np.testing.assert_allclose(dft, fft, rtol=0, atol=1e-12)


def test_dft_matrices_are_the_ortho_dft(x64):
    ny, nx, m = 8, 6, 3
    x = np.random.default_rng(1).normal(size=(ny, nx))
    fx, fy, _, _ = dft_matrices(m, ny, nx, np.float64)
    cols = np.einsum("yx,xpk->ypk", x, fx)
    rows = np.einsum("ypk,qzpy->zqk", cols, fy)
    want = np.fft.rfft2(x, norm="ortho")[np.r_[0:m, ny - m : ny], :m]
    np.testing.assert_allclose(rows[:, 0] + 1j * rows[:, 1], want, rtol=0, atol=1e-13)


def test_models_agree_and_share_params(x64):
    kwargs = dict(width=5, modes=3, depth=2, fc_dim=7, dtype=jnp.float64, param_dtype=jnp.float64)
    fft, dft = FNO(**kwargs, spectral_impl="fft"), FNO(**kwargs, spectral_impl="dft")
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 8, 10, 3)))
    variables = fft.init(jax.random.key(0), x)
    assert jax.tree.structure(dft.init(jax.random.key(0), x)) == jax.tree.structure(variables)
    out_fft, grad_fft = jax.value_and_grad(lambda v: jnp.sum(fft.apply(v, x) ** 2))(variables)
    out_dft, grad_dft = jax.value_and_grad(lambda v: jnp.sum(dft.apply(v, x) ** 2))(variables)
    np.testing.assert_allclose(out_dft, out_fft, rtol=1e-12)
    for a, b in zip(jax.tree.leaves(grad_dft), jax.tree.leaves(grad_fft), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12 * float(np.abs(b).max()))


def test_unknown_impl_rejected():
    with pytest.raises(ValueError, match="spectral_impl must be one of"):
        FNO(width=4, modes=2, spectral_impl="fast")


def test_dft_is_the_default():
    assert FNO(width=4, modes=2).spectral_impl == "dft"
    assert not FNO(width=4, modes=2).remat


@pytest.mark.parametrize("impl", ["dft", "fft"])
def test_remat_same_loss_and_gradients(x64, impl):
    # Remat recomputes the same operations on the same inputs: equal to rounding, params tree unchanged.
    # remat acts on the autodiff layers (the fused ones keep only their input whatever remat says).
    kwargs = dict(width=5, modes=3, depth=3, fc_dim=7, dtype=jnp.float64, param_dtype=jnp.float64, spectral_impl=impl)
    plain, remat = FNO(**kwargs, layer_impl="autodiff"), FNO(**kwargs, layer_impl="autodiff", remat=True)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 8, 8, 3)))
    target = jnp.asarray(np.random.default_rng(4).normal(size=(2, 8, 8, 1)))
    params = plain.init(jax.random.key(0), x)["params"]
    assert jax.tree.structure(remat.init(jax.random.key(0), x)["params"]) == jax.tree.structure(params)

    def loss(model, p):
        return jnp.sum((model.apply({"params": p}, x) - target) ** 2)

    value, grads = jax.jit(jax.value_and_grad(lambda p: loss(plain, p)))(params)
    value_r, grads_r = jax.jit(jax.value_and_grad(lambda p: loss(remat, p)))(params)
    np.testing.assert_allclose(value_r, value, rtol=1e-13)
    for a, b in zip(jax.tree.leaves(grads_r), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13 * float(np.abs(b).max()))


def test_remat_must_be_bool():
    with pytest.raises(ValueError, match="remat must be True or False"):
        FNO(width=4, modes=2, remat="yes")
