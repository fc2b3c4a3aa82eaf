"""Specifications of the spectral solvers: manufactured solutions, residuals, grads, batching, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import solvers
from solvers import rotated_diffusion

# Low modes (my, mx) with amplitudes and phases: none reaches the Nyquist mode for n >= 8.
MODES = [((1, 0), 0.7, 0.3), ((0, 2), -0.4, 1.1), ((2, -1), 0.5, -0.6), ((3, 3), 0.2, 2.0)]
K = np.array([[0.013, 0.004], [0.004, 0.031]])
V = np.array([0.3, -0.2])


def _manufactured(n, length, dtype, pde, omega=3.0, diffusivity=0.01):
    """(u, f) with u = c0 + sum c cos(k . x + phi) and f = A u computed analytically."""
    x = np.arange(n) / n * length
    yy, xx = np.meshgrid(x, x, indexing="ij")
    c0 = 0.25 if pde == "helmholtz" else 0.0
    u = np.full((n, n), c0)
    f = np.full((n, n), -omega * c0 if pde == "helmholtz" else 0.0)
    for (my, mx), c, phi in MODES:
        ky, kx = 2 * np.pi * my / length, 2 * np.pi * mx / length
        phase = kx * xx + ky * yy + phi
        u += c * np.cos(phase)
        if pde == "helmholtz":
            f += c * (diffusivity * (kx**2 + ky**2) - omega) * np.cos(phase)
        else:
            kk = K[0, 0] * kx**2 + 2 * K[0, 1] * kx * ky + K[1, 1] * ky**2
            f += c * kk * np.cos(phase)
            if pde == "advection_diffusion":
                f -= c * (V[0] * kx + V[1] * ky) * np.sin(phase)
    return u.astype(dtype), f.astype(dtype)


def _solve(pde, f, length, dtype, omega=3.0):
    if pde == "poisson":
        return solvers.poisson(f, K.astype(dtype), length=length)
    if pde == "advection_diffusion":
        return solvers.advection_diffusion(f, K.astype(dtype), V.astype(dtype), length=length)
    return solvers.helmholtz(f, jnp.asarray(omega, dtype), length=length)


PDES = ["poisson", "advection_diffusion", "helmholtz"]


@pytest.mark.parametrize("pde", PDES)
@pytest.mark.parametrize("n,length", [(8, 1.0), (32, 2.5), (64, 0.7)])
def test_manufactured_float64(x64, pde, n, length):
    u, f = _manufactured(n, length, np.float64, pde)
    got = _solve(pde, f, length, np.float64)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, u, atol=1e-10, rtol=0)


@pytest.mark.parametrize("pde", PDES)
@pytest.mark.parametrize("n,length", [(16, 1.0), (64, 3.0)])
def test_manufactured_float32(pde, n, length):
    u, f = _manufactured(n, length, np.float32, pde)
    got = _solve(pde, f, length, np.float32)
    assert got.dtype == jnp.float32
    err = np.max(np.abs(np.asarray(got, np.float64) - u)) / np.max(np.abs(u))
    assert err <= 1e-5


def test_mean_of_source_is_dropped(x64):
    u, f = _manufactured(16, 1.0, np.float64, "poisson")
    got = solvers.poisson(f + 3.0, K)
    np.testing.assert_allclose(got, u, atol=1e-12, rtol=0)
    assert abs(float(jnp.mean(got))) < 1e-14


def test_helmholtz_resonant_mode_zeroed(x64):
    # D (2 pi)^2 |m|^2 = omega exactly for D = 1 / (2 pi)^2, omega = 1: modes |m| = 1 resonate.
    n, d = 16, 1 / (2 * np.pi) ** 2
    x = np.arange(n) / n
    resonant = np.cos(2 * np.pi * x)[None, :] * np.ones((n, 1))
    u, f = _manufactured(n, 1.0, np.float64, "helmholtz", omega=1.0, diffusivity=d)
    u_res = u - 0.7 * np.cos(2 * np.pi * x[:, None] + 0.3)  # drop MODES[0], which has |m| = 1
    got = solvers.helmholtz(f + resonant, 1.0, diffusivity=d)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, u_res, atol=1e-10, rtol=0)
    r = solvers.helmholtz_residual(got, f + resonant, 1.0, diffusivity=d)
    assert float(jnp.max(jnp.abs(r))) < 1e-10


def test_residuals_vanish_on_random_fields(x64):
    f = jax.random.normal(jax.random.key(0), (3, 32, 32))
    k = rotated_diffusion(jnp.array([1.0, 2.0, 5.0]), jnp.array([0.1, 1.0, 4.0]))
    v = jnp.array([[0.1, 0.2], [-0.5, 0.0], [0.0, 1.0]])
    om = jnp.array([1.0, 4.0, 9.0])
    scale = float(jnp.max(jnp.abs(f)))
    for r in (
        solvers.poisson_residual(solvers.poisson(f, k, length=2.0), f, k, length=2.0),
        solvers.advection_diffusion_residual(solvers.advection_diffusion(f, k, v), f, k, v),
        solvers.helmholtz_residual(solvers.helmholtz(f, om), f, om),
    ):
        assert float(jnp.max(jnp.abs(r))) < 1e-10 * scale


def test_solution_is_real_consistent_at_nyquist(x64):
    # A real field with Nyquist content: the solve must be exactly invertible by the residual.
    f = jax.random.normal(jax.random.key(1), (8, 8))
    k, v = jnp.asarray(K), jnp.asarray(V)
    u = solvers.advection_diffusion(f, k, v)
    r = solvers.advection_diffusion_residual(u, f, k, v)
    assert float(jnp.max(jnp.abs(r))) < 1e-12


def test_grad_matches_finite_differences(x64):
    f = jax.random.normal(jax.random.key(2), (16, 16))
    w = jax.random.normal(jax.random.key(3), (16, 16))

    def loss_k(t):
        return jnp.sum(w * solvers.poisson(f, rotated_diffusion(2.0 + t, 0.4 + t)))

    def loss_v(t):
        return jnp.sum(w * solvers.advection_diffusion(f, jnp.asarray(K), jnp.stack([t, -t])))

    def loss_omega(t):
        return jnp.sum(w * solvers.helmholtz(f, 3.0 + t))

    for loss, t0 in ((loss_k, 0.0), (loss_v, 0.2), (loss_omega, 0.0)):
        eps = 1e-5
        fd = (loss(t0 + eps) - loss(t0 - eps)) / (2 * eps)
        g = jax.grad(loss)(t0)
        # Central differences: error O(eps^2 * f''') ~ 1e-10 relative for these smooth maps.
        np.testing.assert_allclose(g, fd, rtol=1e-6)
        assert np.isfinite(g)
    assert np.isfinite(jax.jit(jax.grad(loss_k))(0.0))


def test_batching_and_vmap_equal_per_sample(x64):
    b, n = 4, 16
    f = jax.random.normal(jax.random.key(4), (b, n, n))
    k = rotated_diffusion(jnp.linspace(1, 5, b), jnp.linspace(0, 3, b))
    v = jax.random.normal(jax.random.key(5), (b, 2))
    om = jnp.arange(1.0, b + 1)
    batched = [
        solvers.poisson(f, k),
        solvers.advection_diffusion(f, k, v),
        solvers.helmholtz(f, om),
    ]
    mapped = [
        jax.vmap(solvers.poisson)(f, k),
        jax.vmap(solvers.advection_diffusion)(f, k, v),
        jax.vmap(solvers.helmholtz)(f, om),
    ]
    for i in range(b):
        single = [
            solvers.poisson(f[i], k[i]),
            solvers.advection_diffusion(f[i], k[i], v[i]),
            solvers.helmholtz(f[i], om[i]),
        ]
        for s, bt, mp in zip(single, batched, mapped):
            np.testing.assert_allclose(bt[i], s, atol=1e-14, rtol=0)
            np.testing.assert_allclose(mp[i], s, atol=1e-14, rtol=0)
    # One coefficient broadcast over a batch of sources.
    np.testing.assert_allclose(solvers.poisson(f, k[0])[2], solvers.poisson(f[2], k[0]), atol=1e-14)
    jitted = jax.jit(solvers.poisson)(f, k)
    np.testing.assert_allclose(jitted, batched[0], atol=1e-14, rtol=0)


def _good():
    return jnp.zeros((8, 8)), jnp.asarray(K)


def _rank_one(dtype):
    """K = 0.01 R(-t) diag(1, 0) R(t): singular before rounding (e = 0), rounded to `dtype`."""
    return np.asarray(rotated_diffusion(0.0, 0.7), dtype)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: solvers.poisson(jnp.zeros(8), K), "source must have shape"),
        (lambda: solvers.poisson(jnp.zeros((8, 6)), K), "must be square"),
        (lambda: solvers.poisson(jnp.zeros((7, 7)), K), "even resolution"),
        (lambda: solvers.poisson(jnp.zeros((2, 2)), K), "even resolution"),
        (lambda: solvers.poisson(jnp.zeros((8, 8), jnp.complex64), K), "real-valued"),
        (lambda: solvers.poisson(_good()[0], jnp.ones(3)), r"diffusion must have shape \[\.\.\., 2, 2\]"),
        # Strict batching: a coefficient has the source's batch shape or none.
        (lambda: solvers.poisson(jnp.zeros((3, 8, 8)), jnp.stack([K, K])), r"batch shape \(3,\).*jax.vmap"),
        (lambda: solvers.poisson(jnp.zeros((8, 8)), jnp.stack([K, K])), "broadcast the source"),
        (lambda: solvers.poisson(jnp.zeros((2, 3, 8, 8)), jnp.stack([K] * 3)), r"batch shape \(2, 3\)"),
        (lambda: solvers.poisson(jnp.zeros((5, 8, 8)), np.stack([K] * 5, -1)), r"batch axes come first.*moveaxis"),
        (lambda: solvers.helmholtz(jnp.zeros((4, 8, 8)), jnp.ones((4, 1))), r"reshape it.*omega.reshape\(\(4,\)\)"),
        (lambda: solvers.helmholtz(jnp.zeros((4, 8, 8)), 1.0, diffusivity=jnp.ones((2, 2))), "diffusivity must have"),
        (lambda: solvers.helmholtz(jnp.zeros((3, 8, 8)), jnp.ones((2,))), "jax.vmap"),
        (lambda: solvers.advection_diffusion(jnp.zeros((3, 8, 8)), K, jnp.ones((5, 2))), "jax.vmap"),
        (lambda: solvers.poisson(jnp.zeros((8, 8, 8)), K), "3-D field"),
        (lambda: solvers.helmholtz(jnp.zeros((8, 8, 8)), 2.0), "3-D field"),
        # Values.
        (lambda: solvers.poisson(_good()[0], np.array([[1.0, 0.5], [0.0, 1.0]])), "symmetric"),
        (lambda: solvers.poisson(_good()[0], np.array([[1.0, 2.0], [2.0, 1.0]])), "positive definite"),
        (lambda: solvers.poisson(_good()[0], -K), "positive definite"),
        (lambda: solvers.poisson(_good()[0], _rank_one(np.float32)), "positive definite"),
        (lambda: solvers.poisson(_good()[0], K * np.nan), "NaN"),
        (lambda: solvers.poisson(*_good(), length=-1.0), "length must be a positive"),
        (lambda: solvers.poisson(*_good(), length=jnp.ones(2)), "length must be a scalar"),
        (lambda: solvers.advection_diffusion(*_good(), jnp.ones(3)), "velocity must have shape"),
        (lambda: solvers.advection_diffusion(*_good(), jnp.array([0.0, np.inf])), "velocity contains NaN"),
        (lambda: solvers.helmholtz(_good()[0], 2.0, diffusivity=-1.0), "diffusivity must be > 0"),
        (lambda: solvers.helmholtz(_good()[0], 2.0, resonance="ignore"), "resonance must be"),
        # Residuals: the same checks.
        (lambda: solvers.poisson_residual(jnp.zeros((8, 8)), jnp.zeros((16, 16)), K), "share the grid"),
        (lambda: solvers.poisson_residual(jnp.zeros((2, 8, 8)), jnp.zeros((8, 8)), K), "share the grid"),
        (lambda: solvers.poisson_residual(*[jnp.zeros((3, 8, 8))] * 2, jnp.stack([K, K])), "jax.vmap"),
        (lambda: solvers.poisson_residual(*[jnp.zeros((8, 8))] * 2, -K), "positive definite"),
        (lambda: solvers.helmholtz_residual(*[jnp.zeros((4, 8, 8))] * 2, jnp.ones((4, 1))), "omega.reshape"),
        (lambda: solvers.advection_diffusion_residual(*[jnp.zeros((8, 8))] * 2, K, jnp.ones((2, 2))), "broadcast"),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_definiteness_is_relative_to_scale_and_dtype(x64):
    # lambda_min / lambda_max is compared with 64 eps of K's dtype: tiny but well-conditioned tensors pass, a
    # condition number of 1e6 passes in float64 (64 eps = 1.4e-14) and fails in float32 (64 eps = 7.6e-6).
    f = jnp.zeros((8, 8))
    for scale in (1e-12, 1.0, 1e12):
        solvers.poisson(f, scale * np.asarray(K))
    solvers.poisson(f, rotated_diffusion(1e-6, 0.3))
    solvers.poisson(f.astype(jnp.float32), np.asarray(rotated_diffusion(1e-4, 0.3), np.float32))
    with pytest.raises(ValueError, match=r"positive definite.*float32"):
        solvers.poisson(f.astype(jnp.float32), np.asarray(rotated_diffusion(1e-6, 0.3), np.float32))
    with pytest.raises(ValueError, match=r"positive definite.*float64"):
        solvers.poisson(f, _rank_one(np.float64))


def test_rotated_diffusion_convention(x64):
    # K = 0.01 R(-t) diag(1, e) R(t): eigenvalue 0.01 e along (vx, vy) = (sin t, cos t), 0.01 along (cos t, -sin t).
    e, t = 4.0, 0.3
    k = np.asarray(solvers.rotated_diffusion(e, t))
    strong, weak = np.array([np.sin(t), np.cos(t)]), np.array([np.cos(t), -np.sin(t)])
    np.testing.assert_allclose(k @ strong, 0.01 * e * strong, atol=1e-16, rtol=0)
    np.testing.assert_allclose(k @ weak, 0.01 * weak, atol=1e-16, rtol=0)
    np.testing.assert_allclose(solvers.rotated_diffusion(e, 0.0), np.diag([0.01, 0.01 * e]), atol=1e-18, rtol=0)
    # What the solver does with it: a plane wave cos(2 pi (mx x + my y)) along the strong axis (x = last array
    # axis) decays with 0.01 e |k|^2, across it with 0.01 |k|^2.
    n = 16
    x = np.arange(n) / n
    for (mx, my), rate in (((1, 0), 0.01), ((0, 1), 0.01 * e)):
        wave = np.cos(2 * np.pi * (mx * x[None, :] + my * x[:, None]))
        u = solvers.poisson(wave, solvers.rotated_diffusion(e, 0.0))
        np.testing.assert_allclose(u, wave / (rate * (2 * np.pi) ** 2), atol=1e-12, rtol=0)
    wave = np.cos(2 * np.pi * (x[None, :] + x[:, None]))  # along (1, 1) / sqrt 2 = the strong axis at t = pi / 4
    u = solvers.poisson(wave, solvers.rotated_diffusion(e, np.pi / 4))
    np.testing.assert_allclose(u, wave / (0.01 * e * 2 * (2 * np.pi) ** 2), atol=1e-12, rtol=0)
