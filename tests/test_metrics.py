"""The test metrics against exact answers: single Fourier modes, manufactured solutions, the solvers' own solutions.

Fields are evaluated in float64, where every identity below holds to rounding (~1e-15 relative); the tolerances
(1e-12) leave three orders of magnitude for sums over a 32 x 32 grid and the FFTs.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import solvers
from fno_jax.model import channels
from fno_jax.training import metrics

LENGTH = 2.0  # not 1: the wavenumbers k = 2 pi m / L must use the domain length


def grid(n: int, length: float = LENGTH):
    x = np.arange(n) * length / n
    return np.meshgrid(x, x, indexing="xy")  # arrays [y, x]


def mode(n: int, mx: int, my: int, length: float = LENGTH) -> np.ndarray:
    """cos(2 pi (mx x + my y) / L) on the n x n grid, [1, n, n]."""
    x, y = grid(n, length)
    return np.cos(2 * np.pi * (mx * x + my * y) / length)[None]


def test_a_perfect_prediction_has_zero_error_in_every_norm(x64):
    u = jnp.asarray(np.random.default_rng(0).normal(size=(3, 16, 16)))
    assert np.all(np.asarray(metrics.relative_h1(u, u, length=LENGTH)) == 0)
    assert np.all(np.asarray(metrics.relative_linf(u, u)) == 0)
    assert np.all(np.asarray(metrics.relative_l2_bands(u, u)) == 0)


def test_single_modes_give_the_exact_h1_and_band_errors(x64):
    # Target sin(kappa x); error a, b, c times one cosine mode in each band (all modes have the same grid norm).
    n, kappa = 32, 2 * np.pi / LENGTH
    x, _ = grid(n)
    target = np.sin(kappa * x)[None]
    a, b, c = 1e-1, 2e-2, 3e-3
    error = a * mode(n, 3, 0) + b * mode(n, 5, 5) + c * mode(n, 12, -3)  # |m| = 3, 7.07, 12.4
    prediction = jnp.asarray(target + error)
    target = jnp.asarray(target)
    h1 = np.sqrt(a**2 * (1 + 9 * kappa**2) + b**2 * (1 + 50 * kappa**2) + c**2 * (1 + 153 * kappa**2))
    np.testing.assert_allclose(metrics.relative_h1(prediction, target, length=LENGTH), [h1 / np.sqrt(1 + kappa**2)],
                               rtol=1e-12)  # fmt: skip
    bands = metrics.relative_l2_bands(prediction, target)
    np.testing.assert_allclose(bands, [[a, b, c]], rtol=1e-12, atol=1e-15)
    # The bands split the paper's metric: low^2 + mid^2 + high^2 = rel_l2^2.
    from fno_jax.training.losses import relative_l2

    np.testing.assert_allclose(np.sum(np.square(bands), -1), np.square(relative_l2(prediction, target)), rtol=1e-12)


def test_band_edges():
    index = metrics.band_index(32)
    my = lambda m: m % 32  # row of the integer mode my in fftfreq order
    assert index[0, 3] == 0 and index[0, 4] == 1 and index[my(-4), 0] == 1  # |m| = 4 opens the mid band
    assert index[my(11), 0] == 1 and index[0, 12] == 2 and index[my(-12), 0] == 2
    assert index[my(8), 8] == 1 and index[my(9), 9] == 2  # |m| = 11.3 and 12.7
    # The high band starts at the corner |(9, 9)| = 12.7 of an 18 x 18 grid; a 16 x 16 grid has none.
    assert metrics.band_index(16).max() == 1 and metrics.band_index(18).max() == 2


def test_band_split_of_a_random_error(x64):
    rng = np.random.default_rng(1)
    target, prediction = (jnp.asarray(rng.normal(size=(4, 24, 24))) for _ in range(2))
    from fno_jax.training.losses import relative_l2

    squares = np.sum(np.square(metrics.relative_l2_bands(prediction, target)), -1)
    np.testing.assert_allclose(squares, np.square(relative_l2(prediction, target)), rtol=1e-12)


def test_linf_is_the_largest_pointwise_error_over_the_largest_value(x64):
    x, _ = grid(16)
    target = np.sin(2 * np.pi * x / LENGTH)[None]  # max |u| = 1 at x = L / 4, a grid point
    prediction = target.copy()
    prediction[0, 5, 7] += 0.25
    prediction[0, 2, 3] -= 0.125
    np.testing.assert_allclose(metrics.relative_linf(jnp.asarray(prediction), jnp.asarray(target)), [0.25],
                               rtol=1e-14)  # fmt: skip


def manufactured(n: int, length: float = LENGTH):
    """u = sin(k x) + cos(2 k y) + sin(k (x + y)) and f = A u in closed form for one set of coefficients."""
    k = 2 * np.pi / length
    x, y = grid(n, length)
    (k11, k12), (_, k22) = diffusion = np.array([[0.03, 0.01], [0.01, 0.05]])
    v1, v2 = velocity = np.array([0.3, -0.2])
    omega = 2.0
    u = np.sin(k * x) + np.cos(2 * k * y) + np.sin(k * (x + y))
    f = (
        k11 * k**2 * np.sin(k * x) + 4 * k22 * k**2 * np.cos(2 * k * y)
        + (k11 + 2 * k12 + k22) * k**2 * np.sin(k * (x + y))
        + v1 * k * np.cos(k * x) - 2 * v2 * k * np.sin(2 * k * y) + (v1 + v2) * k * np.cos(k * (x + y))
        - omega * u
    )  # fmt: skip
    batch = {"diffusion": diffusion[None], "velocity": velocity[None], "omega": np.array([omega])}
    return u[None], f[None], batch


def test_manufactured_solution_has_zero_residual_and_scaled_ones_the_scale(x64):
    u, f, batch = manufactured(16)
    coefficients = channels.physical_coefficients(channels.coefficients(batch, "mixed"), "mixed")
    residual = lambda pred: np.asarray(metrics.relative_residual(jnp.asarray(pred), jnp.asarray(f), *coefficients,
                                                                 length=LENGTH))  # fmt: skip
    assert residual(u)[0] < 1e-13
    np.testing.assert_allclose(residual(1.25 * u), [0.25], rtol=1e-12)  # A is linear: ||0.25 A u|| / ||f||
    np.testing.assert_allclose(residual(0 * u), [1.0], rtol=1e-14)


def _family_batch(family: str, n: int) -> dict[str, np.ndarray]:
    """Two random smooth sources and coefficients of `family`, solved by the solvers in float64."""
    rng = np.random.default_rng(2)
    source = sum(rng.normal() * mode(n, mx, my, 1.0) for mx, my in [(1, 0), (2, 3), (0, 5), (4, -1)])
    source = np.concatenate([source, 0.5 * source[:, ::-1]]) + 0.3  # a mean, which Poisson's P drops
    theta = np.array([0.3, 1.1])
    rotation = np.stack([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]).transpose(2, 0, 1)
    anisotropic = 0.01 * rotation @ np.diag([1.0, 3.0]) @ rotation.transpose(0, 2, 1)
    zeros2 = np.zeros((2, 2))
    if family == "poisson":
        diffusion, velocity, omega = anisotropic, zeros2, np.zeros(2)
        solution = solvers.poisson(source, diffusion)
    elif family == "advection_diffusion":
        diffusion, velocity, omega = anisotropic, np.array([[0.4, 0.3], [-0.2, 0.5]]), np.zeros(2)
        solution = solvers.advection_diffusion(source, diffusion, velocity)
    else:
        diffusion, velocity, omega = np.broadcast_to(0.01 * np.eye(2), (2, 2, 2)), zeros2, np.array([3.0, 7.0])
        solution = solvers.helmholtz(source, omega)
    return {"source": source, "solution": np.asarray(solution), "diffusion": diffusion, "velocity": velocity,
            "omega": omega}  # fmt: skip


@pytest.mark.parametrize("family", ["poisson", "advection_diffusion", "helmholtz"])
@pytest.mark.parametrize("mixed", [False, True])
def test_the_solvers_solutions_have_zero_residual(x64, family, mixed):
    # The metric's operator, rebuilt from the layout's channels, is the one the solvers invert.
    batch = _family_batch(family, 32)
    layout = "mixed" if mixed else family
    coefficients = channels.physical_coefficients(channels.coefficients(batch, layout), layout)
    residual = metrics.relative_residual(jnp.asarray(batch["solution"]), jnp.asarray(batch["source"]), *coefficients)
    assert np.all(np.asarray(residual) < 1e-12), residual


@pytest.mark.parametrize("layout", ["poisson", "advection_diffusion", "helmholtz", "mixed"])
def test_physical_coefficients_invert_the_channels(x64, layout):
    helmholtz = layout == "helmholtz"
    diffusion = np.array([[[0.02, 0.0], [0.0, 0.02]]]) if helmholtz else np.array([[[0.01, 0.003], [0.003, 0.04]]])
    batch = {"diffusion": diffusion, "velocity": np.array([[0.5, -0.25]]), "omega": np.array([4.0])}
    k, v, w = (np.asarray(x) for x in channels.physical_coefficients(channels.coefficients(batch, layout), layout))
    np.testing.assert_array_equal(k, diffusion)  # Helmholtz's D is K = D I
    carried = set(channels.LAYOUTS[layout])
    np.testing.assert_array_equal(v, batch["velocity"] if {"v1", "v2"} <= carried else np.zeros((1, 2)))
    np.testing.assert_array_equal(w, batch["omega"] if "omega" in carried else np.zeros(1))


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"one shape \[B, n, n\]"):
        metrics.relative_linf(jnp.zeros((2, 8, 8)), jnp.zeros((2, 8, 6)))
    with pytest.raises(ValueError, match=r"coeffs must have shape \[B, 3\]"):
        channels.physical_coefficients(jnp.zeros((2, 2)), "poisson")


def test_the_papers_loss_and_metric_on_exact_values(x64):
    # Loss: sum of squared errors over the grid, averaged over the batch; metric: per-sample relative L2.
    from fno_jax.training.losses import relative_l2, sum_squared_error

    target = np.zeros((2, 2, 2))
    target[0] = [[3.0, 0.0], [0.0, 4.0]]  # ||u_0|| = 5
    target[1] = [[1.0, 1.0], [1.0, 1.0]]  # ||u_1|| = 2
    prediction = target.copy()
    prediction[0, 0, 0] += 1.0  # error 1 -> 0.2
    prediction[1] += 1.0  # error 2 -> 1.0
    np.testing.assert_allclose(relative_l2(prediction, target), [0.2, 1.0], rtol=1e-15)
    np.testing.assert_allclose(sum_squared_error(prediction, target), (1.0 + 4.0) / 2, rtol=1e-15)
