"""FNO and SpectralConv2d: size, param tree, exact spectral behaviour, equivariance, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fno_jax.model import FNO
from fno_jax.spectral_conv import SpectralConv2d


def _random_variables(model, x, seed=0):
    """Variables of the right shapes filled from numpy (avoids compiling the PRNG in tests)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    return jax.tree.map(lambda s: jnp.asarray(0.3 * rng.normal(size=s.shape), s.dtype), shapes)


def _count(tree):
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def test_paper_parameter_count_without_allocating():
    model = FNO(width=64, modes=32, depth=4, fc_dim=128, out_dim=1)
    x = jax.ShapeDtypeStruct((1, 128, 128, 4), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    assert _count(shapes) == 67_134_273


def test_param_tree_names_and_shapes():
    model = FNO(width=6, modes=3, depth=2, fc_dim=10, out_dim=2)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 5)))["params"]
    flat = {"/".join(k.key for k in path): leaf.shape for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)}
    assert flat == {
        "lift/kernel": (5, 6),
        "lift/bias": (6,),
        "spectral_0/weights1": (6, 6, 3, 3, 2),
        "spectral_0/weights2": (6, 6, 3, 3, 2),
        "pointwise_0/kernel": (6, 6),
        "pointwise_0/bias": (6,),
        "spectral_1/weights1": (6, 6, 3, 3, 2),
        "spectral_1/weights2": (6, 6, 3, 3, 2),
        "pointwise_1/kernel": (6, 6),
        "pointwise_1/bias": (6,),
        "fc1/kernel": (6, 10),
        "fc1/bias": (10,),
        "fc2/kernel": (10, 2),
        "fc2/bias": (2,),
    }


def test_output_shape_and_spectral_init_range():
    model = FNO(width=4, modes=2, depth=1, fc_dim=8, out_dim=3)
    x = jnp.ones((2, 8, 12, 2))
    variables = jax.jit(model.init)(jax.random.key(0), x)
    assert jax.eval_shape(model.apply, variables, x).shape == (2, 8, 12, 3)
    w = variables["params"]["spectral_0"]["weights1"]
    assert w.dtype == jnp.float32
    assert float(w.min()) >= 0.0 and float(w.max()) < 1.0 / 16


def _conv_with(weights1, weights2, x):
    conv = SpectralConv2d(features=weights1.shape[1], modes=weights1.shape[2], dtype=x.dtype)
    return conv.apply({"params": {"weights1": weights1, "weights2": weights2}}, x)


def _identity_weights(channels, modes, dtype):
    eye = np.zeros((channels, channels, modes, modes, 2))
    eye[np.arange(channels), np.arange(channels), :, :, 0] = 1.0
    return jnp.asarray(eye, dtype)


def test_spectral_identity_is_low_pass_projection(x64):
    # With W = identity on the retained modes the layer is the orthogonal projection onto
    # |ky| < m (rows [:m] and [-m:]) and kx < m: exact low-pass filtering of the input.
    n, m, c = 16, 3, 2
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, n, n, c))
    w = _identity_weights(c, m, jnp.float64)
    out = np.asarray(_conv_with(w, w, jnp.asarray(x)))
    x_hat = np.fft.rfft2(x, axes=(1, 2))
    keep = np.zeros((n, n // 2 + 1), bool)
    keep[:m, :m] = keep[-m:, :m] = True
    want = np.fft.irfft2(np.where(keep[None, :, :, None], x_hat, 0), s=(n, n), axes=(1, 2))
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-13)
    # A field made only of retained modes passes through unchanged; one outside them vanishes.
    yy, xx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    low = np.cos(2 * np.pi * (2 * yy - 1 * xx) / n)  # ky = +-2, kx = -+1: retained
    # Rows [-m:] hold ky = -m..-1, so |ky| = m + 1 is the first row frequency dropped at both
    # signs; columns [:m] hold kx = 0..m-1, so kx = m is dropped.
    high_y = np.cos(2 * np.pi * ((m + 1) * yy) / n)
    high_x = np.sin(2 * np.pi * (m * xx + yy) / n)
    fields = jnp.asarray(np.stack([low, high_y, high_x], axis=-1)[None])
    w = _identity_weights(3, m, jnp.float64)
    out = np.asarray(_conv_with(w, w, fields))
    np.testing.assert_allclose(out[0, :, :, 0], low, rtol=0, atol=1e-13)
    np.testing.assert_allclose(out[0, :, :, 1:], 0.0, rtol=0, atol=1e-13)


def test_weights2_act_on_negative_ky_rows(x64):
    # exp(+i 2pi y/n) has only ky = +1 (row 1), exp(-i ...) only ky = -1 (row -1); a real cosine
    # has both, so zeroing weights2 keeps half of it: 0.5 * exp(i 2pi y / n) -> real part halves
    # and the result is no longer real-symmetric; irfft2 keeps the Hermitian part of column kx=0.
    n, m = 8, 2
    yy = np.arange(n)[:, None] * np.ones((1, n))
    sine = np.sin(2 * np.pi * yy / n)[None, :, :, None]
    w = _identity_weights(1, m, jnp.float64)
    zero = jnp.zeros_like(w)
    only_pos = np.asarray(_conv_with(w, zero, jnp.asarray(sine)))
    only_neg = np.asarray(_conv_with(zero, w, jnp.asarray(sine)))
    # Column kx = 0 is made Hermitian by irfft2, so each half returns half the field.
    np.testing.assert_allclose(only_pos, 0.5 * sine, rtol=0, atol=1e-13)
    np.testing.assert_allclose(only_neg, 0.5 * sine, rtol=0, atol=1e-13)
    # A wave along x with ky = +1 only reaches weights1: (ky, kx) = (1, 1).
    xx = np.arange(n)[None, :] * np.ones((n, 1))
    wave = np.cos(2 * np.pi * (yy + xx) / n)[None, :, :, None]
    np.testing.assert_allclose(np.asarray(_conv_with(w, zero, jnp.asarray(wave))), wave, rtol=0, atol=1e-13)
    np.testing.assert_allclose(np.asarray(_conv_with(zero, w, jnp.asarray(wave))), 0.0, rtol=0, atol=1e-13)


def test_translation_equivariance(x64):
    # Every FNO layer commutes with periodic shifts, so the whole model does (exactly).
    model = FNO(width=4, modes=3, depth=2, fc_dim=8, dtype=jnp.float64, param_dtype=jnp.float64)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 8, 10, 3)))
    variables = _random_variables(model, x)
    apply = jax.jit(model.apply)
    shifted = apply(variables, jnp.roll(x, (3, -4), axis=(1, 2)))
    want = jnp.roll(apply(variables, x), (3, -4), axis=(1, 2))
    np.testing.assert_allclose(np.asarray(shifted), np.asarray(want), rtol=0, atol=1e-12)


def test_bfloat16_compute_keeps_float32_params_and_spectral_path():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16, 3)), jnp.float32)
    f32 = FNO(width=8, modes=4, depth=2, fc_dim=16, spectral_impl="fft")
    bf16 = FNO(width=8, modes=4, depth=2, fc_dim=16, dtype=jnp.bfloat16, spectral_impl="fft")
    variables = f32.init(jax.random.key(1), x)
    assert {leaf.dtype for leaf in jax.tree.leaves(bf16.init(jax.random.key(1), x))} == {jnp.dtype(jnp.float32)}
    out = bf16.apply(variables, x)
    assert out.dtype == jnp.bfloat16
    jaxpr = str(jax.make_jaxpr(bf16.apply)(variables, x))
    assert "fft" in jaxpr and "complex64" in jaxpr and "bfloat16" in jaxpr
    ref = jax.jit(f32.apply)(variables, x)
    # bfloat16 keeps 8 significant bits: relative error ~ a few 2^-8 over a few layers.
    rel = jnp.linalg.norm(out.astype(jnp.float32) - ref) / jnp.linalg.norm(ref)
    assert float(rel) < 5e-2


def test_jit_and_grad():
    model = FNO(width=4, modes=2, depth=2, fc_dim=8)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 3)), jnp.float32)
    params = _random_variables(model, x)["params"]
    loss = jax.jit(lambda p: jnp.mean(model.apply({"params": p}, x) ** 2))
    grads = jax.jit(jax.grad(loss))(params)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    assert float(jnp.abs(grads["spectral_1"]["weights2"]).max()) > 0


@pytest.mark.parametrize("field", ["width", "modes", "depth", "fc_dim", "out_dim"])
@pytest.mark.parametrize("value", [0, -1, 2.5])
def test_bad_sizes_raise_at_construction(field, value):
    kwargs = dict(width=4, modes=2, depth=2, fc_dim=8, out_dim=1)
    kwargs[field] = value
    with pytest.raises(ValueError, match=f"{field} must be a positive integer"):
        FNO(**kwargs)


def test_numpy_integer_sizes_are_accepted():
    FNO(width=np.int64(4), modes=np.int32(2))


def test_too_many_modes_names_the_limit():
    model = FNO(width=4, modes=5, depth=1, fc_dim=4)
    with pytest.raises(ValueError, match=r"modes=5 .* resolution 8x8.* modes <= 4"):
        model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 2)))


def test_input_rank_checked():
    model = FNO(width=4, modes=2, depth=1, fc_dim=4)
    with pytest.raises(ValueError, match=r"\[batch, y, x, channels\]"):
        model.init(jax.random.key(0), jnp.zeros((8, 8, 2)))


def test_non_float_dtype_rejected():
    with pytest.raises(ValueError, match="floating dtype"):
        FNO(width=4, modes=2, dtype=jnp.int32)
