"""Property-based tests (hypothesis): solver linearity, scaling and residuals, normalization invariance, config parsing.

Solver properties run in float64 on a fixed 16x16 grid, where a spectral solve is exact up to round-off, so the
tolerances are a few hundred ulps of the data's magnitude.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import solvers
from fno_jax.config import ConfigError, validate_config
from fno_jax.model.normalization import NormStats, normalize

N = 16
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

eigenvalues = st.floats(1.0, 5.0)
angles = st.floats(0.0, 2 * math.pi)
seeds = st.integers(0, 2**31 - 1)
scales = st.floats(0.1, 10.0)
lengths = st.sampled_from([1.0, 2.0, 0.5])


def diffusion_tensor(eigenvalue: float, angle: float) -> np.ndarray:
    """K = 0.01 R(-t) diag(1, e) R(t): symmetric positive definite."""
    c, s = math.cos(angle), math.sin(angle)
    rotation = np.array([[c, -s], [s, c]])
    return 0.01 * rotation.T @ np.diag([1.0, eigenvalue]) @ rotation


def smooth_field(seed: int, kmax: int = 3) -> np.ndarray:
    """A random trigonometric polynomial with |k| <= kmax on the N x N grid (resolved exactly)."""
    rng = np.random.default_rng(seed)
    x = np.arange(N) / N
    field = np.zeros((N, N))
    for ky in range(-kmax, kmax + 1):
        for kx in range(-kmax, kmax + 1):
            a, b = rng.normal(size=2)
            phase = 2 * np.pi * (ky * x[:, None] + kx * x[None, :])
            field += a * np.cos(phase) + b * np.sin(phase)
    return field


def assert_close(actual, expected, scale, ulps=500):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=0, atol=ulps * 2.2e-16 * scale)


@SETTINGS
@given(seed=seeds, a=st.floats(-3, 3), b=st.floats(-3, 3), e=eigenvalues, t=angles)
def test_poisson_is_linear_in_the_source(x64, seed, a, b, e, t):
    f1, f2 = smooth_field(seed), smooth_field(seed + 1)
    k = jnp.asarray(diffusion_tensor(e, t))
    u1, u2 = solvers.poisson(jnp.asarray(f1), k), solvers.poisson(jnp.asarray(f2), k)
    u = solvers.poisson(jnp.asarray(a * f1 + b * f2), k)
    assert_close(u, a * u1 + b * u2, scale=np.abs(u1).max() * 6 + np.abs(u2).max() * 6)


@SETTINGS
@given(seed=seeds, c=scales, e=eigenvalues, t=angles)
def test_poisson_scales_inversely_with_diffusion(x64, seed, c, e, t):
    f = jnp.asarray(smooth_field(seed))
    k = diffusion_tensor(e, t)
    u = solvers.poisson(f, jnp.asarray(k))
    assert_close(solvers.poisson(f, jnp.asarray(c * k)), u / c, scale=np.abs(u).max() / c)


@SETTINGS
@given(seed=seeds, e=eigenvalues, t=angles, length=lengths)
def test_poisson_residual_vanishes_for_smooth_sources(x64, seed, e, t, length):
    f = jnp.asarray(smooth_field(seed))
    k = jnp.asarray(diffusion_tensor(e, t))
    u = solvers.poisson(f, k, length=length)
    residual = solvers.poisson_residual(u, f, k, length=length)
    assert_close(residual, 0.0, scale=float(jnp.abs(f).max()), ulps=5000)


@SETTINGS
@given(seed=seeds, omega=st.integers(1, 10))
def test_helmholtz_residual_vanishes_for_smooth_sources(x64, seed, omega):
    f = jnp.asarray(smooth_field(seed))
    u = solvers.helmholtz(f, jnp.asarray(float(omega)))
    residual = solvers.helmholtz_residual(u, f, jnp.asarray(float(omega)))
    assert_close(residual, 0.0, scale=float(jnp.abs(f).max()), ulps=5000)


@SETTINGS
@given(e=st.floats(0.01, 100.0), t=angles, c=st.floats(1e-6, 1e6))
def test_rotated_diffusion_has_its_stated_eigenpairs_and_is_accepted_at_any_scale(x64, e, t, c):
    # K = c R(-t) diag(1, e) R(t): eigenvalue c e along (sin t, cos t), c along (cos t, -sin t), (x, y) components.
    k = np.asarray(solvers.rotated_diffusion(e, t, scale=c))
    strong, weak = np.array([math.sin(t), math.cos(t)]), np.array([math.cos(t), -math.sin(t)])
    assert_close(k @ strong, c * e * strong, scale=c * max(e, 1.0), ulps=8)
    assert_close(k @ weak, c * weak, scale=c * max(e, 1.0), ulps=8)
    f = jnp.asarray(smooth_field(0))
    solvers.poisson(f, k)  # symmetric positive definite relative to its own scale: accepted
    with pytest.raises(ValueError, match="positive definite"):
        solvers.poisson(f, -k)


@SETTINGS
@given(seed=seeds, c=st.lists(scales, min_size=3, max_size=3), length=lengths)
def test_normalization_is_invariant_to_scaling_source_and_coefficients_together(x64, seed, c, length):
    rng = np.random.default_rng(seed)
    source = rng.normal(size=(3, N, N))
    coeffs = rng.uniform(0.01, 0.05, size=(3, 3))
    stats = NormStats(source_scale=float(rng.uniform(0.1, 2)), coeff_scale=tuple(rng.uniform(0.01, 0.1, 3)))
    factor = np.asarray(c)
    s1, c1 = normalize(source, coeffs, stats, length=length)
    s2, c2 = normalize(source * factor[:, None, None], coeffs * factor[:, None], stats, length=length)
    np.testing.assert_allclose(s2, s1, rtol=1e-13, atol=0)
    np.testing.assert_allclose(c2, c1, rtol=1e-13, atol=0)


# ---- config parsing -----------------------------------------------------------------------------------------------
def _config(**flat):
    # 32 x 32 and 256 training samples: the bounds of the bad values below.
    return tiny_config(**{"data.resolution": 32, "data.num_train": 256, **flat})


good_sizes = st.integers(2, 8).flatmap(
    lambda half: st.fixed_dictionaries(
        {
            "data.resolution": st.just(2 * half * 2),
            "model.modes": st.integers(1, 2 * half),
            "model.width": st.integers(1, 64),
            "model.depth": st.integers(1, 6),
            "data.num_train": st.integers(8, 512),
            "train.learning_rate": st.floats(1e-6, 1.0),
            "task_ranges.eigenvalue_range": st.tuples(st.floats(0.5, 3.0), st.floats(3.0, 10.0)),
            "task_ranges.omega_range": st.tuples(st.integers(1, 5), st.integers(5, 20)),
            "task": st.sampled_from(["poisson", "advection_diffusion", "helmholtz", "mixed"]),
        }
    )
)


@settings(max_examples=40, deadline=None)
@given(flat=good_sizes, batch=st.integers(1, 8))
def test_good_values_are_accepted(flat, batch):
    validate_config(_config(**flat, **{"train.batch_size": batch}))


bad_values = st.one_of(
    st.tuples(st.just("data.resolution"), st.integers(-100, 7) | st.integers(4, 200).map(lambda n: 2 * n + 1)),
    st.tuples(st.just("model.width"), st.integers(-100, 0)),
    st.tuples(st.just("model.modes"), st.integers(-5, 0) | st.integers(17, 1000)),  # resolution 32
    st.tuples(st.just("train.batch_size"), st.integers(257, 10_000)),  # num_train 256
    st.tuples(st.just("train.learning_rate"), st.floats(-1.0, 0.0)),
    st.tuples(st.just("train.num_steps"), st.integers(-1000, -2)),
    st.tuples(st.just("train.eval_every"), st.integers(-10, -1)),
    st.tuples(st.just("data.length"), st.floats(-5.0, 0.0)),
    st.tuples(st.just("task"), st.text(max_size=12).filter(lambda s: s not in ("poisson", "advection_diffusion",
                                                                              "helmholtz", "mixed"))),
    st.tuples(st.just("train.dtype"), st.text(max_size=10).filter(lambda s: s not in ("float32", "bfloat16"))),
    st.tuples(st.just("task_ranges.eigenvalue_range"), st.tuples(st.floats(2.0, 9.0), st.floats(0.1, 1.9))),
    st.tuples(st.just("task_ranges.omega_range"), st.tuples(st.floats(0.1, 0.9), st.integers(2, 9))),
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(bad=bad_values)
def test_bad_values_are_rejected_with_the_key_named(bad):
    key, value = bad
    config = _config()
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
        node = node[p]
    node.unlock()
    del node[leaf]
    node[leaf] = value
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert f"config.{key}" in str(info.value)


@settings(max_examples=30, deadline=None)
@given(key=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
def test_unknown_keys_are_rejected(key):
    config = _config()
    if key in config.train:
        return
    config.train.unlock()
    config.train[key] = 1
    with pytest.raises(ConfigError, match=rf"unknown config key config\.train\.{key}\."):
        validate_config(config)
