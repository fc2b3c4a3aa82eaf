"""Gaussian random fields on the square by a truncated Karhunen-Loeve expansion, evaluated at any grid's nodes.

A field with covariance operator (-Laplacian + tau^2 I)^-alpha on the square of side L is

    g(x, y) = sum_{p, q} s_pq xi_pq phi_p(y) phi_q(x),   s_pq = (k_p^2 + k_q^2 + tau^2)^(-alpha / 2),  xi ~ N(0, 1),

with phi_q the L^2-orthonormal eigenfunctions of -d^2/dx^2 on [0, L] and k_q^2 their eigenvalues:
  * bc="dirichlet" (the coefficient of a problem on [0, L]^2; Li et al.'s generator): the Neumann cosines
    phi_0 = 1 / sqrt(L), phi_q = sqrt(2 / L) cos(pi q x / L), k_q = pi q / L, q = 0..KL_MODES - 1;
  * bc="periodic" (a field on the periodic square): 1 / sqrt(L), sqrt(2 / L) cos(2 pi j x / L) and
    sqrt(2 / L) sin(2 pi j x / L), k = 2 pi j / L, j = 1..KL_MODES // 2, in that order (KL_MODES + 1 functions).
Every product phi_p(y) phi_q(x) is an eigenfunction of the 2-D Laplacian with eigenvalue k_p^2 + k_q^2, so the
expansion has exactly the covariance above, truncated to the KL_MODES^2 lowest separable modes.  As in Li et al.'s
generator (FNO, ICLR 2021) the constant mode is dropped (s_00 = 0): the field has zero mean over the square.

Resolution independence: the coefficients xi are a fixed [K, K] array per sample (K = KL_MODES, or KL_MODES + 1
periodic), whatever the grid, and the field is the continuum expansion evaluated at the grid's nodes
(`solvers.grid`) as two small matmuls, G_y (S * xi) G_x^T with G = [n, K] the basis at the nodes.  So one draw
gives the same continuum field at every resolution; nodes two grids share get the same values up to rounding.

Truncation: with K = 64 modes per axis the expansion keeps wavenumbers up to ~63 pi / L (Dirichlet) or 64 pi / L
(periodic); for tau = 3, alpha = 2 the modes dropped (measured against an expansion with K = 1024) hold 0.02%
(Dirichlet) and 0.05% (periodic) of the mean pointwise variance.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from solvers.finite_volume import BoundaryCondition

__all__ = ["KL_MODES", "num_modes", "kl_scales", "kl_basis", "kl_basis_values", "gaussian_random_field", "mean_std"]

KL_MODES = 64


def num_modes(bc: BoundaryCondition) -> int:
    """Basis functions per axis: KL_MODES cosines (Dirichlet), or 1 + 2 (KL_MODES // 2) (periodic)."""
    return KL_MODES if bc == "dirichlet" else 1 + 2 * (KL_MODES // 2)


def _wavenumbers(bc: BoundaryCondition, length: float) -> np.ndarray:
    if bc == "dirichlet":
        return np.pi * np.arange(KL_MODES) / length
    j = np.repeat(np.arange(1, KL_MODES // 2 + 1), 2)
    return np.concatenate([[0.0], 2 * np.pi * j / length])


@functools.lru_cache(maxsize=32)
def _scales(bc: BoundaryCondition, length: float, tau: float, alpha: float) -> np.ndarray:
    k2 = _wavenumbers(bc, length) ** 2
    s = (k2[:, None] + k2[None, :] + tau**2) ** (-alpha / 2)
    s[0, 0] = 0.0
    return s


def kl_scales(bc: BoundaryCondition, length: float, tau: float, alpha: float) -> np.ndarray:
    """s_pq [K, K] (float64 numpy): the square roots of the covariance eigenvalues, s_00 = 0."""
    return _scales(bc, float(length), float(tau), float(alpha)).copy()


def kl_basis_values(n: int, bc: BoundaryCondition, length: float = 1.0) -> np.ndarray:
    """The basis functions at the n nodes of the grid of `bc` (`solvers.grid`), [n, K], as float64 numpy."""
    if bc == "dirichlet":
        x = (np.arange(1, n + 1) / (n + 1)) * length  # `solvers.grid.dirichlet_points`
        q = np.arange(KL_MODES)
        basis = np.sqrt(2 / length) * np.cos(np.pi * np.outer(x, q) / length)
        basis[:, 0] = np.sqrt(1 / length)
        return basis
    x = (np.arange(n) / n) * length  # `solvers.grid.Domain.points`
    j = np.arange(1, KL_MODES // 2 + 1)
    phase = 2 * np.pi * np.outer(x, j) / length
    pairs = np.stack([np.cos(phase), np.sin(phase)], axis=-1).reshape(n, -1)
    return np.concatenate([np.full((n, 1), np.sqrt(1 / length)), np.sqrt(2 / length) * pairs], axis=1)


def kl_basis(n: int, bc: BoundaryCondition, length: float = 1.0, dtype=None) -> Float[Array, "n K"]:
    """The basis functions at the n nodes of the grid of `bc` (`solvers.grid`), [n, K], computed in float64."""
    return jnp.asarray(kl_basis_values(n, bc, float(length)), dtype=dtype)


def mean_std(bc: BoundaryCondition, length: float, tau: float, alpha: float) -> float:
    """The pointwise standard deviation of g averaged over the square: sqrt(sum s_pq^2) / L (each phi has unit norm)."""
    return float(np.sqrt(np.sum(kl_scales(bc, length, tau, alpha) ** 2)) / length)


def gaussian_random_field(
    xi: Float[Array, "*batch K K"],
    n: int,
    bc: BoundaryCondition,
    *,
    length: float = 1.0,
    tau: float = 3.0,
    alpha: float = 2.0,
) -> Float[Array, "*batch n n"]:
    """g at the n x n nodes of the grid of `bc` for standard normal coefficients xi [*batch, K, K], in xi's dtype.

    xi[..., p, q] multiplies phi_p(y) phi_q(x) (y the second-to-last array axis, x the last).
    """
    k = num_modes(bc)
    if xi.shape[-2:] != (k, k):
        raise ValueError(f"xi must have shape [..., {k}, {k}] for bc={bc!r}, got {xi.shape}.")
    dtype = xi.dtype
    scaled = xi * jnp.asarray(kl_scales(bc, length, tau, alpha), dtype)
    basis = kl_basis(n, bc, length, dtype)
    # HIGHEST: accelerators would otherwise round float32 matmul inputs (TF32), and the field would depend on the
    # device more than on rounding.
    rows = jnp.einsum("yp,...pq->...yq", basis, scaled, precision=jax.lax.Precision.HIGHEST)
    return jnp.einsum("...yq,xq->...yx", rows, basis, precision=jax.lax.Precision.HIGHEST)
