"""Random Darcy permeability fields a(x) > 0, from a Gaussian random field g (`solvers.random_fields`).

* "threshold" (Li et al., "Fourier Neural Operator for Parametric PDEs", ICLR 2021, the FNO Darcy benchmark):
  g with covariance (-Laplacian + 9 I)^-2 (tau = 3, alpha = 2), a = 12 where g >= 0 and 3 where g < 0.
* "lognormal": a smooth log-normal field a = exp(LOGNORMAL_STD * g / sigma_g), g with covariance
  (-Laplacian + 9 I)^-3 (tau = 3, alpha = 3: smoother than the threshold's field), sigma_g its pointwise standard
  deviation averaged over the square (`random_fields.mean_std`).  So log a is a zero-mean Gaussian field whose
  variance averages LOGNORMAL_STD^2 = 1 over the square: a's median is 1.  The contrast max a / min a of a sample
  at 128 x 128 ranged over 10-1300 (Dirichlet: the cosine basis doubles the variance along the edges) and 16-530
  (periodic) in 16 draws; `solvers.darcy`'s "local" preconditioner solves these in a few iterations.

Both use the KL basis of the problem's boundary mode (Neumann cosines for Dirichlet problems, as Li et al.;
Fourier modes for periodic ones), so a is periodic when the problem is.

The high-value fraction of a sample is the fraction of its grid nodes where g >= 0: the share of cells at a = 12
for "threshold", of nodes where a >= 1 (a's median) for "lognormal".

Precision: the coefficients xi are drawn in float32 (`coefficients.DRAW_DTYPE`) and g is evaluated in float32 for
every decision (the threshold, the fraction), so one key gives the same two-valued field in float32 and float64;
the log-normal a is evaluated in the output dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from solvers import random_fields
from solvers.coefficients import DRAW_DTYPE
from solvers.finite_volume import BoundaryCondition

__all__ = ["DISTRIBUTIONS", "THRESHOLD_VALUES", "LOGNORMAL_STD", "draw_xi", "permeability"]

DISTRIBUTIONS = ("threshold", "lognormal")
# (value where g < 0, value where g >= 0) of the threshold field.
THRESHOLD_VALUES = (3.0, 12.0)
# (tau, alpha) of g's covariance (-Laplacian + tau^2 I)^-alpha, per distribution.
GRF_PARAMETERS = {"threshold": (3.0, 2.0), "lognormal": (3.0, 3.0)}
LOGNORMAL_STD = 1.0


def draw_xi(key: jax.Array, bc: BoundaryCondition) -> Float[Array, "K K"]:
    """One sample's KL coefficients, standard normal [K, K] in float32 (K = `random_fields.num_modes(bc)`)."""
    k = random_fields.num_modes(bc)
    return jax.random.normal(key, (k, k), DRAW_DTYPE)


def permeability(
    xi: Float[Array, "b K K"],
    n: int,
    bc: BoundaryCondition,
    distribution: str,
    *,
    length: float = 1.0,
    dtype=None,
    values: tuple[float, float] = THRESHOLD_VALUES,
) -> tuple[Float[Array, "b n n"], Float[Array, " b"]]:
    """(a [b, n, n] in `dtype`, high-value fraction [b] in `dtype`) at the nodes of the grid of `bc`.

    `values` (low, high): the threshold field's two values; the log-normal field's median is their geometric mean.
    """
    dtype = dtype or jnp.asarray(0.0).dtype
    tau, alpha = GRF_PARAMETERS[distribution]
    g32 = random_fields.gaussian_random_field(xi.astype(DRAW_DTYPE), n, bc, length=length, tau=tau, alpha=alpha)
    high = g32 >= 0
    fraction = jnp.mean(high, axis=(-2, -1), dtype=DRAW_DTYPE).astype(dtype)
    low_value, high_value = values
    if distribution == "threshold":
        return jnp.where(high, jnp.asarray(high_value, dtype), jnp.asarray(low_value, dtype)), fraction
    g = (
        g32
        if jnp.dtype(dtype) == DRAW_DTYPE
        else random_fields.gaussian_random_field(xi.astype(dtype), n, bc, length=length, tau=tau, alpha=alpha)
    )
    scale = LOGNORMAL_STD / random_fields.mean_std(bc, length, tau, alpha)
    return (low_value * high_value) ** 0.5 * jnp.exp(scale * g), fraction
