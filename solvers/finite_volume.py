"""The 5-point finite-volume operator A u = -div(a grad u) on the Darcy grids, and its constant-coefficient inverse.

Grids (`solvers.grid`): bc="dirichlet" holds the interior nodes x_i = (i + 1) h, h = L / (n + 1), with u = 0 on the
boundary; bc="periodic" holds x_i = i h, h = L / n.  Arrays are [..., y, x].

Each node owns the cell of side h around it.  The flux through the face between neighbouring nodes P and E is
a_PE (u_P - u_E) / h, and A u at P is the sum of its four outward fluxes divided by h (per cell area):

    (A u)_P = sum over the neighbours E of a_PE (u_P - u_E) / h^2.

Face coefficients a_PE (`face_coefficients`):
  * interior faces: the harmonic mean 2 a_P a_E / (a_P + a_E) of the two nodes' values.  It is exact for a
    piecewise-constant a that jumps at the face (the series conductance of two half cells) and a second-order
    value of a at the face midpoint for a smooth a;
  * Dirichlet boundary faces (between the first or last interior node and the boundary, where a is not given):
    the adjacent interior node's value a_P, i.e. a extended constantly to the boundary.  This is first order in
    the face value, but only on the boundary row, where the Dirichlet Green's function is O(h): the solution stays
    second-order accurate (checked by the manufactured-solution tests);
  * periodic: the face between the last and first node of a row or column wraps around.

A is symmetric; positive definite for Dirichlet, positive semi-definite for periodic with the constants as its
null space (the fluxes telescope, so A u has zero sum).

For constant a, A = a L5 with L5 the 5-point Laplacian of the same grid, diagonalised by the sine transform
DST-I (Dirichlet) or the FFT (periodic), with eigenvalues (4 / h^2) (sin^2(theta_x / 2) + sin^2(theta_y / 2)),
theta = pi k / (n + 1), k = 1..n (Dirichlet) or theta = 2 pi m / n (periodic); `laplacian_solve` applies L5^-1
(on zero-mean fields for periodic).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from solvers.grid import mode_numbers

__all__ = ["BOUNDARY_CONDITIONS", "spacing", "face_coefficients", "apply", "laplacian_solve"]

BoundaryCondition = Literal["dirichlet", "periodic"]
BOUNDARY_CONDITIONS: tuple[str, ...] = ("dirichlet", "periodic")
# Largest n for which the sine transform is done by matrix products (`_dst2`).
MATMUL_DST_MAX = 256


def spacing(n: int, length, bc: BoundaryCondition):
    """Grid spacing h: L / (n + 1) for Dirichlet (interior nodes), L / n for periodic."""
    return length / (n + 1) if bc == "dirichlet" else length / n


def _harmonic(p: jax.Array, q: jax.Array) -> jax.Array:
    return 2 * p * q / (p + q)


def face_coefficients(
    a: Float[Array, "... n n"], bc: BoundaryCondition
) -> tuple[Float[Array, "... n mx"], Float[Array, "... my n"]]:
    """Face values (a_x, a_y) of a (module docstring).

    Dirichlet: a_x [..., n, n + 1], a_x[..., j, i] the face between x nodes i - 1 and i (i = 0 and i = n are the
    boundary faces); a_y [..., n + 1, n] likewise along y.  Periodic: a_x [..., n, n], a_x[..., j, i] the face
    between x nodes i and i + 1 (mod n); a_y [..., n, n] likewise.
    """
    if bc == "periodic":
        return _harmonic(a, jnp.roll(a, -1, axis=-1)), _harmonic(a, jnp.roll(a, -1, axis=-2))
    inner_x = _harmonic(a[..., :, :-1], a[..., :, 1:])
    inner_y = _harmonic(a[..., :-1, :], a[..., 1:, :])
    a_x = jnp.concatenate([a[..., :, :1], inner_x, a[..., :, -1:]], axis=-1)
    a_y = jnp.concatenate([a[..., :1, :], inner_y, a[..., -1:, :]], axis=-2)
    return a_x, a_y


def apply(
    u: Float[Array, "... n n"], faces: tuple[jax.Array, jax.Array], h, bc: BoundaryCondition
) -> Float[Array, "... n n"]:
    """A u = -div(a grad u) in flux form, for face coefficients from `face_coefficients`."""
    a_x, a_y = faces
    if bc == "periodic":
        flux_x = a_x * (jnp.roll(u, -1, axis=-1) - u)  # a (u_E - u_P) / h through the east face, times h
        flux_y = a_y * (jnp.roll(u, -1, axis=-2) - u)
        div = flux_x - jnp.roll(flux_x, 1, axis=-1) + flux_y - jnp.roll(flux_y, 1, axis=-2)
        return -div / (h * h)
    pad_x = [(0, 0)] * (u.ndim - 1) + [(1, 1)]
    pad_y = [(0, 0)] * (u.ndim - 2) + [(1, 1), (0, 0)]
    flux_x = a_x * jnp.diff(jnp.pad(u, pad_x), axis=-1)  # [..., n, n + 1], u = 0 on the boundary
    flux_y = a_y * jnp.diff(jnp.pad(u, pad_y), axis=-2)  # [..., n + 1, n]
    return -(jnp.diff(flux_x, axis=-1) + jnp.diff(flux_y, axis=-2)) / (h * h)


def _dst1(x: jax.Array) -> jax.Array:
    """DST-I along the last axis, X_k = sum_j x_j sin(pi (j + 1)(k + 1) / (n + 1)), via one rfft of length 2n + 2.

    The odd extension y = (0, x, 0, -reversed x) has FFT Y_k = -2i X_{k-1} for k = 1..n.  DST-I is its own inverse
    up to the factor (n + 1) / 2.
    """
    zero = jnp.zeros(x.shape[:-1] + (1,), x.dtype)
    extended = jnp.concatenate([zero, x, zero, -x[..., ::-1]], axis=-1)
    return -0.5 * jnp.imag(jnp.fft.rfft(extended, axis=-1))[..., 1 : x.shape[-1] + 1]


def _dst2_fft(x: jax.Array) -> jax.Array:
    return jnp.swapaxes(_dst1(jnp.swapaxes(_dst1(x), -1, -2)), -1, -2)


def _dst2_matmul(x: jax.Array) -> jax.Array:
    """S x S with the symmetric DST-I matrix S: two GEMMs (HIGHEST: no reduced-precision passes on accelerators)."""
    n = x.shape[-1]
    s = jnp.asarray(np.sin(np.pi * np.outer(np.arange(1, n + 1), np.arange(1, n + 1)) / (n + 1)), x.dtype)
    hi = jax.lax.Precision.HIGHEST
    return jnp.matmul(jnp.matmul(s, x, precision=hi), s, precision=hi)


def _dst2(x: jax.Array) -> jax.Array:
    """2-D DST-I over the last two axes: dense matrix products up to MATMUL_DST_MAX points a side (the 2n + 2
    point FFT of `_dst1` has awkward sizes such as 258 = 2 * 3 * 43 and moves 4x the data: whole solves were 1.7x
    faster at n = 128 and 3.9x at n = 256 on a 2-core CPU), FFTs beyond, where n^3 products outgrow n^2 log n."""
    return _dst2_matmul(x) if x.shape[-1] <= MATMUL_DST_MAX else _dst2_fft(x)


def _sin2_half(theta: np.ndarray) -> np.ndarray:
    return np.sin(theta / 2) ** 2


def laplacian_solve(r: Float[Array, "... n n"], h, bc: BoundaryCondition) -> Float[Array, "... n n"]:
    """z = L5^-1 r for the unit-coefficient 5-point operator L5 (module docstring); the result has r's dtype.

    Periodic: the mean of r is dropped and z has zero mean (L5's pseudo-inverse).  The eigenvalues are computed
    in float64 numpy (h**2 applied in r's dtype, so a traced h works).
    """
    n = r.shape[-1]
    dtype = r.dtype
    if bc == "dirichlet":
        s = _sin2_half(np.pi * np.arange(1, n + 1) / (n + 1))
        # 4 (s_y + s_x) with the DST-I normalisation (2 / (n + 1))^2 folded in: one array, one multiply.
        inverse = (2.0 / (n + 1)) ** 2 / (4 * (s[:, None] + s[None, :]))
        return _dst2(_dst2(r) * (jnp.asarray(inverse, dtype) * (h * h)))
    my, mx = mode_numbers(n)
    eig = 4 * (_sin2_half(2 * np.pi * my / n) + _sin2_half(2 * np.pi * mx / n))
    eig[0, 0] = np.inf  # the mean: dropped
    inverse = jnp.asarray(1 / eig, dtype) * (h * h)
    r_hat = jnp.fft.rfft2(r)
    return jnp.fft.irfft2(jax.lax.complex(jnp.real(r_hat) * inverse, jnp.imag(r_hat) * inverse), s=(n, n))
