"""FNO and SpectralConv2d: size, param tree, exact spectral behaviour, equivariance, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fno_jax.model import FNO
from fno_jax.model.fno import LAYER_IMPLS
from fno_jax.model.spectral_conv import SpectralConv2d


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


# --- The fused (channels-first, hand-differentiated) layer and the tiled head: same function as autodiff. ---


def _tree_allclose(got, want, rtol):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        scale = float(np.abs(np.asarray(b)).max())
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("activate", [False, True])
def test_fused_layer_gradient_is_autodiffs(x64, monkeypatch, activate):
    from fno_jax.model import fourier_layer as fl

    # 17 full tiles of 7 points and a rest of 1 (2 x 6 x 10 = 120 points) in the pointwise weight gradient.
    monkeypatch.setattr(fl, "WEIGHT_GRAD_TILE", 7)
    rng = np.random.default_rng(0)
    z_prev = jnp.asarray(rng.normal(size=(3, 2, 6, 10)))
    weights = jnp.asarray(rng.normal(size=(3, 4, 6, 3, 2)))
    kernel, bias = jnp.asarray(rng.normal(size=(3, 4))), jnp.asarray(rng.normal(size=(4,)))
    args = (z_prev, weights, kernel, bias)
    cotangent = jnp.asarray(rng.normal(size=(4, 2, 6, 10)))
    out, vjp = jax.vjp(lambda *a: fl.fourier_layer(*a, activate), *args)
    want_out, want_vjp = jax.vjp(lambda *a: fl._fourier_layer_fwd(*a, activate)[0], *args)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(want_out))
    # Same sums in another order: agreement to a few float64 ulps of the largest entry.
    _tree_allclose(vjp(cotangent), want_vjp(cotangent), rtol=1e-12)


def test_tiled_head_is_the_plain_head(x64):
    from fno_jax.model.head import projection_head

    rng = np.random.default_rng(1)
    v = jnp.asarray(rng.normal(size=(5, 30)))  # 30 points: 4 tiles of 8, the last one padded
    params = tuple(jnp.asarray(rng.normal(size=s)) for s in ((5, 9), (9,), (9, 2), (2,)))
    g = jnp.asarray(rng.normal(size=(2, 30)))
    plain, plain_vjp = jax.vjp(lambda *a: projection_head(*a, tile=0), v, *params)
    tiled, tiled_vjp = jax.vjp(lambda *a: projection_head(*a, tile=8), v, *params)
    np.testing.assert_allclose(np.asarray(tiled), np.asarray(plain), rtol=0, atol=1e-13)
    _tree_allclose(tiled_vjp(g), plain_vjp(g), rtol=1e-12)
    with pytest.raises(ValueError, match="tile must be >= 0"):
        projection_head(v, *params, tile=-1)


@pytest.mark.parametrize("head_tile", [0, 7])
def test_fused_and_autodiff_models_agree(x64, head_tile):
    kwargs = dict(width=5, modes=3, depth=3, fc_dim=7, out_dim=2, dtype=jnp.float64, param_dtype=jnp.float64)
    fused = FNO(**kwargs, layer_impl="fused", head_tile=head_tile)
    autodiff = FNO(**kwargs, layer_impl="autodiff", head_tile=0)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 8, 10, 3)))
    target = jnp.asarray(np.random.default_rng(3).normal(size=(2, 8, 10, 2)))
    params = autodiff.init(jax.random.key(0), x)["params"]
    assert jax.tree.structure(fused.init(jax.random.key(0), x)["params"]) == jax.tree.structure(params)

    def loss(model, p):
        return jnp.sum((model.apply({"params": p}, x) - target) ** 2)

    value, grads = jax.jit(jax.value_and_grad(lambda p: loss(autodiff, p)))(params)
    value_f, grads_f = jax.jit(jax.value_and_grad(lambda p: loss(fused, p)))(params)
    np.testing.assert_allclose(value_f, value, rtol=1e-12)
    _tree_allclose(grads_f, grads, rtol=1e-10)


def test_fused_bfloat16_keeps_float32_params_and_spectral_path():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16, 3)), jnp.float32)
    f32 = FNO(width=8, modes=4, depth=2, fc_dim=16, layer_impl="fused")
    bf16 = FNO(width=8, modes=4, depth=2, fc_dim=16, dtype=jnp.bfloat16, layer_impl="fused")
    variables = f32.init(jax.random.key(1), x)
    out = jax.jit(bf16.apply)(variables, x)
    assert out.dtype == jnp.bfloat16
    grads = jax.grad(lambda v: jnp.sum(bf16.apply(v, x).astype(jnp.float32) ** 2))(variables)
    assert {leaf.dtype for leaf in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}
    ref = jax.jit(f32.apply)(variables, x)
    # bfloat16 keeps 8 significant bits: relative error ~ a few 2^-8 over a few layers.
    assert float(jnp.linalg.norm(out.astype(jnp.float32) - ref) / jnp.linalg.norm(ref)) < 5e-2


def test_gelu_is_the_exact_erf_form(x64):
    from scipy.special import erf

    from fno_jax.model.head import gelu, gelu_and_derivative

    x = np.linspace(-9.0, 9.0, 1001)
    np.testing.assert_allclose(
        np.asarray(gelu(jnp.asarray(x))), 0.5 * x * (1 + erf(x / np.sqrt(2))), rtol=0, atol=1e-15
    )
    value, slope = gelu_and_derivative(jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(value), np.asarray(gelu(jnp.asarray(x))))
    # The slope is O(1) (it lies in [-0.17, 1.13]): agreement to a few float64 ulps of that.
    np.testing.assert_allclose(
        np.asarray(slope), np.asarray(jax.vmap(jax.grad(gelu))(jnp.asarray(x))), rtol=0, atol=1e-14
    )


def test_layer_impl_choice_and_errors():
    from fno_jax.model import default_layer_impl

    assert default_layer_impl("dft") == "fused" and default_layer_impl("fft") == "autodiff"  # tests run on the CPU
    with pytest.raises(ValueError, match="needs spectral_impl='dft'"):
        FNO(width=4, modes=2, layer_impl="fused", spectral_impl="fft")
    with pytest.raises(ValueError, match="layer_impl must be None"):
        FNO(width=4, modes=2, layer_impl="fast")
    for bad in (-1, True, 2.5):
        with pytest.raises(ValueError, match="head_tile must be None or an integer"):
            FNO(width=4, modes=2, head_tile=bad)


# --- Initialisation: the paper's (PyTorch's) by default, Flax's as an option. ---


def _dense_layers(params):
    """(name, kernel, bias) of every Dense layer; fan_in is the kernel's first axis."""
    return [(name, np.asarray(p["kernel"]), np.asarray(p["bias"])) for name, p in params.items() if "kernel" in p]


def _init_params(param_init):
    model = FNO(width=64, modes=2, depth=4, fc_dim=256, param_init=param_init)
    return jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 4)))["params"]


def test_default_init_is_pytorchs_uniform():
    assert FNO(width=4, modes=2).param_init == "torch"
    params = _init_params("torch")
    kernels, biases = [], []
    for name, kernel, bias in _dense_layers(params):
        bound = 1 / np.sqrt(kernel.shape[0])
        assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound, name
        kernels.append(kernel.ravel() / bound)
        biases.append(bias.ravel() / bound)
    kernels, biases = np.concatenate(kernels), np.concatenate(biases)
    # U(-1, 1) after scaling by 1/bound: variance 1/3. The sample variance of n such draws has a relative
    # standard deviation sqrt(0.8 / n): 0.5% for the 33,280 kernel entries, 3.7% for the 577 biases; the
    # tolerances are 4 of those. The mean is 0 to 4 standard errors.
    assert kernels.size == 4 * 64 + 4 * 64 * 64 + 64 * 256 + 256 and biases.size == 64 + 4 * 64 + 256 + 1
    np.testing.assert_allclose(kernels.var(), 1 / 3, rtol=0.02)
    np.testing.assert_allclose(biases.var(), 1 / 3, rtol=0.15)
    assert abs(kernels.mean()) < 4 * np.sqrt(1 / 3 / kernels.size)
    # Spectral weights keep the scale * U[0, 1) of the reference under either init.
    w = np.asarray(params["spectral_0"]["weights1"])
    assert w.min() >= 0 and w.max() < 1 / 64**2


def test_flax_init_is_lecun_normal_with_zero_biases():
    params = _init_params("flax")
    kernels = []
    for name, kernel, bias in _dense_layers(params):
        assert not bias.any(), name
        kernels.append(kernel.ravel() * np.sqrt(kernel.shape[0]))
    kernels = np.concatenate(kernels)
    # LeCun normal: variance 1 / fan_in, so 1 after scaling; 33,280 draws, relative standard deviation of the
    # sample variance sqrt(2 / n) = 0.8%, tolerance 5 of those.
    np.testing.assert_allclose(kernels.var(), 1.0, rtol=0.04)
    with pytest.raises(ValueError, match="param_init must be one of"):
        FNO(width=4, modes=2, param_init="xavier")


def test_domain_padding_crops_back_agrees_across_impls_and_keeps_params(x64):
    kwargs = dict(width=4, modes=5, depth=2, fc_dim=6, dtype=jnp.float64, param_dtype=jnp.float64)
    x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 8, 8, 3)))
    with pytest.raises(ValueError, match="too many"):
        FNO(**kwargs).init(jax.random.key(0), x)  # 5 modes do not fit 8 x 8 ...
    padded = {impl: FNO(**kwargs, padding=2, layer_impl=impl, head_tile=0) for impl in LAYER_IMPLS}
    params = padded["autodiff"].init(jax.random.key(0), x)["params"]  # ... but fit the padded 10 x 10
    plain = FNO(**{**kwargs, "modes": 4}, padding=0)
    assert jax.tree.structure(params) == jax.tree.structure(plain.init(jax.random.key(0), x)["params"])
    out = {impl: padded[impl].apply({"params": params}, x) for impl in LAYER_IMPLS}
    assert out["autodiff"].shape == (2, 8, 8, 1)
    np.testing.assert_allclose(out["fused"], out["autodiff"], rtol=1e-12, atol=1e-12)
    # The padded layers see a non-periodic domain: shifting the input circularly no longer shifts the output.
    shifted = padded["autodiff"].apply({"params": params}, jnp.roll(x, 3, axis=2))
    assert not np.allclose(shifted, jnp.roll(out["autodiff"], 3, axis=2), atol=1e-6)
    four = plain.init(jax.random.key(1), x)
    np.testing.assert_array_equal(plain.apply(four, x), FNO(**{**kwargs, "modes": 4}).apply(four, x))
    with pytest.raises(ValueError, match="padding must be an integer >= 0"):
        FNO(**kwargs, padding=-1)
