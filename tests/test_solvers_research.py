"""The solvers inside research code: checks under jit/vmap/grad, Helmholtz resonance, a traced domain, precision.

Checks reach traced code through `jax.experimental.checkify` with the eager messages; the resonance rule gives
the same outcome in float32 and float64; a length traced under vmap equals static calls; one key gives the same
problems in float32 and float64.
"""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import solvers
from solvers import tasks

N = 8
F = np.cos(2 * np.pi * np.arange(N) / N)[None, :] * np.ones((N, 1))
GOOD_K = np.asarray([[0.013, 0.004], [0.004, 0.031]])
BAD_INPUTS = {
    # name: (function of one scalar t, which is traced by jit/vmap/grad, value of t, message of the eager error)
    "indefinite K": (lambda t: solvers.poisson(F, t * np.array([[1.0, 2.0], [2.0, 1.0]])), 1.0, "positive definite"),
    "non-symmetric K": (lambda t: solvers.poisson(F, t * np.array([[1.0, 0.5], [0.0, 1.0]])), 1.0, "symmetric"),
    "negative D": (lambda t: solvers.helmholtz(F, 3.0, diffusivity=t), -0.01, "diffusivity must be > 0"),
    "resonant omega": (
        lambda t: solvers.helmholtz(F, t, diffusivity=1 / (2 * np.pi) ** 2, resonance="error"),
        1.0,
        "omega = 1 is resonant",
    ),
    # float32 K with e = 0: singular before rounding.
    "semidefinite K": (lambda t: solvers.poisson(F, solvers.rotated_diffusion(t, 0.3)), 0.0, "positive definite"),
    "NaN velocity": (lambda t: solvers.advection_diffusion(F, GOOD_K, jnp.stack([t, t])), np.nan, "NaN"),
    "negative length": (lambda t: solvers.poisson(F, GOOD_K, length=t), -1.0, "length must be a positive"),
}
TRANSFORMS = {
    "jit": lambda g: jax.jit(g),
    "vmap": lambda g: jax.vmap(g),
    "grad": lambda g: jax.jit(jax.grad(lambda t: jnp.sum(g(t)))),
}
# The first four under every transform; the others (same channel) under jit.
CASES = [(name, t) for name in list(BAD_INPUTS)[:4] for t in TRANSFORMS] + [(name, "jit") for name in
                                                                            list(BAD_INPUTS)[4:]]  # fmt: skip


def _eager_message(fn, t) -> str:
    with pytest.raises(ValueError) as info:
        fn(np.float32(t))
    return str(info.value)


@pytest.mark.parametrize("name,transform", CASES)
def test_value_checks_raise_through_checkify_with_the_eager_message(name, transform):
    fn, t, match = BAD_INPUTS[name]
    message = _eager_message(fn, t)
    assert re.search(match, message)
    arg = jnp.full((2,), t, jnp.float32) if transform == "vmap" else jnp.float32(t)
    traced = TRANSFORMS[transform](fn)
    err, _ = checkify.checkify(traced, errors=checkify.user_checks)(arg)
    with pytest.raises(checkify.JaxRuntimeError) as info:
        err.throw()
    got = str(info.value)
    # Under vmap the reported numbers are one problem's, eagerly the batch's worst: compare the words.
    words = lambda s: re.sub(r"-?[0-9][0-9.e+-]*", "#", s)
    assert words(message) in words(got), (message, got)
    if transform == "jit":  # without checkify the traced check is dropped: the call itself does not raise
        traced(arg)


def test_good_inputs_pass_checkify():
    def solve_all(t):
        k = solvers.rotated_diffusion(2.0 + t, t)
        u = (
            solvers.poisson(F, k, length=1.0 + t),
            solvers.advection_diffusion(F, k, jnp.stack([t, -t])),
            solvers.helmholtz(F, 3.0 + t, resonance="error"),
            solvers.helmholtz_residual(F, F, 3.0 + t, projected=False),
        )
        return sum(jnp.sum(x**2) for x in u)

    err, out = checkify.checkify(jax.jit(jax.vmap(jax.grad(solve_all))), errors=checkify.user_checks)(
        jnp.array([0.1, 0.2])
    )
    assert err.get() is None
    assert np.all(np.isfinite(out))


def test_sampler_failure_reaches_checkify():
    impossible = tasks.Helmholtz(max_amplitude=1e-9)
    with pytest.raises(ValueError, match="no admissible sample"):
        impossible.sample(jax.random.key(0), 2, 8)
    err, batch = checkify.checkify(jax.jit(lambda k: impossible.sample(k, 2, 8)), errors=checkify.user_checks)(
        jax.random.key(0)
    )
    with pytest.raises(checkify.JaxRuntimeError, match="no admissible sample"):
        err.throw()
    assert np.all(np.isnan(batch["solution"]))
    err, _ = checkify.checkify(lambda s: tasks.Poisson().sample(jax.random.key(0), 2, 8, start=s))(jnp.int32(-1))
    with pytest.raises(checkify.JaxRuntimeError, match="start must be >= 0"):
        err.throw()


@pytest.mark.parametrize(
    "key,match",
    [
        (0, "key must be a JAX PRNG key, got int"),
        (np.zeros(3, np.uint32), "dtype uint32 and shape"),
        (jax.random.split(jax.random.key(0), 2), "single PRNG key"),
    ],
)
def test_sampler_refuses_a_wrong_key(key, match):
    with pytest.raises(ValueError, match=match):
        tasks.Poisson().sample(key, 2, 8)


# ---- Helmholtz resonance ----------------------------------------------------------------------------------------


def test_resonant_omegas_are_documented_values():
    # D (2 pi / L)^2 q for q = 0, 1, 2, 4, 5, 8, 9, 10, 13 (sums of two squares).
    q = np.array([0, 1, 2, 4, 5, 8, 9, 10, 13])
    np.testing.assert_allclose(solvers.resonant_omegas(9), 0.01 * (2 * np.pi) ** 2 * q, rtol=1e-15)
    np.testing.assert_allclose(solvers.resonant_omegas(3, diffusivity=1.0, length=2.0), np.pi**2 * q[:3], rtol=1e-15)


@pytest.mark.parametrize("offset", [1e-6, -3e-5, 1e-3])
def test_resonance_outcome_is_the_same_in_float32_and_float64(x64, offset):
    # omega near D (2 pi)^2 * 5 (modes |m|^2 = 5) at D = 0.01: inside the 1e-4 band for offsets <= 3e-5 relative,
    # outside for 1e-3, whatever the precision.
    n = 16
    source = jax.random.uniform(jax.random.key(0), (n, n), jnp.float64)
    omega = solvers.resonant_omegas(5)[4] * (1 + offset)
    inside = abs(offset) < solvers.RESONANCE_RTOL
    fractions, outcomes = [], []
    for dtype in (jnp.float32, jnp.float64):
        f, w = source.astype(dtype), jnp.asarray(omega, dtype)
        fractions.append(float(solvers.helmholtz_dropped_fraction(f, w)))
        try:
            solvers.helmholtz(f, w, resonance="error")
            outcomes.append("solved")
        except ValueError as err:
            assert "is resonant" in str(err)
            outcomes.append("refused")
    assert outcomes[0] == outcomes[1] == ("refused" if inside else "solved")
    assert (fractions[0] > 0) == (fractions[1] > 0) == inside
    np.testing.assert_allclose(fractions[0], fractions[1], rtol=1e-5)


def test_unprojected_residual_is_the_dropped_source(x64):
    # At exact resonance the solver drops the resonant part P f: the projected residual vanishes, the unprojected
    # one is -P f, whose norm is the dropped fraction of ||f||.
    n, d = 16, 1 / (2 * np.pi) ** 2
    f = jax.random.normal(jax.random.key(1), (n, n))
    u = solvers.helmholtz(f, 1.0, diffusivity=d)
    projected = solvers.helmholtz_residual(u, f, 1.0, diffusivity=d)
    full = solvers.helmholtz_residual(u, f, 1.0, diffusivity=d, projected=False)
    fraction = solvers.helmholtz_dropped_fraction(f, 1.0, diffusivity=d)
    assert float(jnp.max(jnp.abs(projected))) < 1e-12
    np.testing.assert_allclose(jnp.linalg.norm(full), fraction * jnp.linalg.norm(f), rtol=1e-12)
    assert 0.05 < float(fraction) < 1  # four of the 256 modes (|m| = 1) hold a few percent of white noise


# ---- the domain as a value ---------------------------------------------------------------------------------------


def test_traced_length_equals_static_calls(x64):
    n = 8
    f = jax.random.normal(jax.random.key(2), (2, n, n))
    k = solvers.rotated_diffusion(jnp.array([1.0, 4.0]), jnp.array([0.1, 2.0]))
    v = jnp.array([[0.1, 0.2], [0.0, 0.5]])
    om = jnp.array([1.0, 7.0])
    lengths = [0.5, 2.5]
    domains = solvers.Domain(n, jnp.array(lengths))

    def solve_all(d, f, k, v, om):
        return (
            solvers.poisson(f, k, length=d.length),
            solvers.advection_diffusion(f, k, v, length=d.length),
            solvers.helmholtz(f, om, length=d.length),
        )

    traced = jax.jit(jax.vmap(solve_all))(domains, f, k, v, om)
    for i, length in enumerate(lengths):
        static = solve_all(solvers.Domain(n, length), f[i], k[i], v[i], om[i])
        for t, s in zip(traced, static):
            np.testing.assert_allclose(t[i], s, rtol=0, atol=1e-13 * float(jnp.max(jnp.abs(s))))
    # d u / d L: u(L) = L^2 u(1) for Poisson (the symbol scales as 1 / L^2), so du/dL = 2 L u(1).
    du = jax.jacfwd(lambda length: solvers.poisson(f[0], k[0], length=length))(1.5)
    np.testing.assert_allclose(du, 2 * 1.5 * solvers.poisson(f[0], k[0]), rtol=1e-12, atol=1e-14)


def test_domain_wavenumbers_follow_the_grid_convention():
    d = solvers.Domain(8, 2.0)
    ky, kx = d.wavenumbers()
    np.testing.assert_allclose(kx[0], np.pi * np.arange(5))
    np.testing.assert_allclose(ky[:, 0], np.pi * np.array([0, 1, 2, 3, -4, -3, -2, -1]))
    leaves, tree = jax.tree.flatten(d)
    assert leaves == [2.0] and jax.tree.unflatten(tree, [3.0]) == solvers.Domain(8, 3.0)
    traced = jax.jit(lambda length: solvers.Domain(8, length).odd_wavenumbers()[1])(2.0)
    np.testing.assert_allclose(traced, d.odd_wavenumbers()[1], rtol=1e-6)


# ---- precision -----------------------------------------------------------------------------------------------------


# Poisson's draws are covered by test_draws_do_not_depend_on_the_x64_flag.
@pytest.mark.parametrize("task", [tasks.AdvectionDiffusion(), tasks.Helmholtz()], ids=lambda t: t.name)
def test_same_key_same_problems_in_float32_and_float64(x64, task):
    key = jax.random.key(11)
    single = task.sample(key, 6, 16, dtype=jnp.float32)
    double = task.sample(key, 6, 16, dtype="float64")
    assert single["source"].dtype == jnp.float32 and double["source"].dtype == jnp.float64
    for name in ("pde", "volume_fraction", "omega"):
        np.testing.assert_array_equal(single[name], np.asarray(double[name], np.float32), err_msg=name)
    # The float32 problem is the float64 one rounded: a few float32 ulps of the values' scale.
    for name in ("source", "diffusion", "velocity", "solution"):
        d = np.asarray(double[name])
        np.testing.assert_allclose(single[name], d, rtol=0, atol=1e-5 * max(np.max(np.abs(d)), 1e-30), err_msg=name)


@jax.jit
def _draws(key):
    """Every random decision of the samplers for one key."""
    helmholtz = tasks.Helmholtz(omega_range=(1, 1000))
    amplitudes, fraction = solvers.sources.draw_bump_amplitudes(key)
    draws = {
        "amplitudes": amplitudes,
        "fraction": fraction,
        "omega": helmholtz._draw(key, 3)[2],
        "ratio": tasks.draw_advection_diffusion(key, (1.0, 5.0), (0.2, 1.0), jnp.float32)[4],
        "lam": solvers.coefficients.table_strength(jnp.linspace(0.0, 2.0, 101, dtype=jnp.float32), dtype=jnp.float32),
        "order": jax.random.permutation(key, 3),
    }
    return draws


def test_draws_do_not_depend_on_the_x64_flag():
    # Without and with jax_enable_x64 the same key makes the same decisions (the values are then built in the
    # output dtype, see test_same_key_same_problems_in_float32_and_float64).
    key = jax.random.key(3)
    draws = _draws(key)
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", not previous)
    try:
        other = _draws(jax.random.key(3))
    finally:
        jax.config.update("jax_enable_x64", previous)
    for name in draws:
        np.testing.assert_array_equal(draws[name], other[name], err_msg=name)


def test_float64_output_needs_x64():
    if jax.config.jax_enable_x64:
        pytest.skip("64-bit JAX is on")
    with pytest.raises(ValueError, match="jax_enable_x64"):
        tasks.Poisson().sample(jax.random.key(0), 2, 8, dtype=jnp.float64)


# ---- the README section ------------------------------------------------------------------------------------------


def test_readme_research_section_shows_each_use():
    # tests/test_readme.py runs every ```python block of the README, these included.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(root, "README.md")).read()
    section = text.split("## Using the solvers in your research code", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    for topic in ("jax.value_and_grad", "jax.vmap", "checkify", "resonance="):
        assert any(topic in block for block in blocks), topic
