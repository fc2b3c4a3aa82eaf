"""Gaussian-bump sources (Subramanian et al., NeurIPS 2023): 144 bumps, built separably.

A source is f(x, y) = sum_{i, j} a_ij g_i(y) g_j(x) / M with
  * centres on a 12 x 12 lattice spaced L / 16 around the middle of [0, L)^2,
    c_i = L * (1/2 + (i - 5.5) / 16), so every centre is >= 0.156 L from the boundary;
  * g_i(s) = sum_{m in {-1, 0, 1}} exp(-(s - c_i - m L)^2 / (2 sigma^2)), sigma = L / 32.  The
    periodic images m = +-1 are included because the wrap-around of the m = 0 term alone is
    exp(-0.156^2 / (2 / 32^2)) ~ 4e-6 at the boundary, not negligible in float64; the next images
    (distance >= 1.15 L) are below 1e-290;
  * a_ij = U(1e-3, 1) if bump ij is switched on (probability 1 - vf, vf drawn from
    {0.2, 0.4, 0.6, 0.8}), else 0; at least one bump is on;
  * M = max of sum a_ij g_i g_j over the fixed lattice of spacing L / 64 (64 x 64 points), so the
    normalisation, like the random draws, does not depend on the output resolution: the same
    amplitudes at resolution 64 and 128 give identical values at the shared grid points.
f = G A G^T as two matmuls per sample (G = [n, 12] profiles), not one exp per bump per point.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = [
    "BUMPS_PER_AXIS",
    "VOLUME_FRACTIONS",
    "bump_centres",
    "bump_profiles",
    "draw_bump_amplitudes",
    "gaussian_source",
    "lattice_maximum",
]

BUMPS_PER_AXIS = 12
CENTRE_SPACING = 1.0 / 16
SIGMA = 1.0 / 32
VOLUME_FRACTIONS = (0.2, 0.4, 0.6, 0.8)
AMPLITUDE_RANGE = (1e-3, 1.0)
MAX_LATTICE_POINTS = 64  # points per axis of the resolution-independent lattice for M


def bump_centres(length: float = 1.0) -> np.ndarray:
    """The 12 centre coordinates along one axis (same for x and y), float64 numpy."""
    i = np.arange(BUMPS_PER_AXIS)
    return length * (0.5 + (i - (BUMPS_PER_AXIS - 1) / 2) * CENTRE_SPACING)


def bump_profiles(n: int, length: float = 1.0, dtype=None) -> Float[Array, "n 12"]:
    """g_i(x_j) for the n grid points x_j = j L / n, periodic images m = -1, 0, 1 included."""
    return jnp.asarray(_profiles(n, length), dtype=dtype)


def _profiles(n: int, length: float) -> np.ndarray:
    x = np.arange(n)[:, None] / n * length
    c = bump_centres(length)[None, :]
    sigma = SIGMA * length
    # Computed in float64 numpy once per (n, length) and baked in as constants.  x = (j / n) * L
    # as in solvers.grid.grid_points makes the shared points of resolutions n and 2n bitwise equal.
    return sum(np.exp(-((x - c - m * length) ** 2) / (2 * sigma**2)) for m in (-1, 0, 1))


def draw_bump_amplitudes(key: jax.Array, dtype=None) -> tuple[Float[Array, "12 12"], jax.Array]:
    """One sample's amplitudes a [12, 12] (zeros for switched-off bumps) and its vf.

    All of a sample's random numbers come from one `uniform` call (one threefry evaluation, which
    keeps compile times short): u[0] picks vf, u[1] the bump forced on when none is, the next 144
    switch bumps on (u < 1 - vf), the last 144 are the amplitudes.
    """
    dtype = dtype or jnp.asarray(0.0).dtype
    count = BUMPS_PER_AXIS**2
    u = jax.random.uniform(key, (2 + 2 * count,), dtype)
    fractions = jnp.asarray(VOLUME_FRACTIONS, dtype)
    vf = fractions[jnp.minimum((u[0] * len(VOLUME_FRACTIONS)).astype(jnp.int32), 3)]
    forced = jnp.minimum((u[1] * count).astype(jnp.int32), count - 1)
    on = u[2 : 2 + count] < 1 - vf
    on = jnp.where(jnp.any(on), on, jnp.arange(count) == forced)
    lo, hi = AMPLITUDE_RANGE
    amplitude = lo + (hi - lo) * u[2 + count :]
    shape = (BUMPS_PER_AXIS, BUMPS_PER_AXIS)
    return jnp.where(on, amplitude, 0).reshape(shape), vf


def _superpose(amplitudes: jax.Array, profiles_y: jax.Array, profiles_x=None) -> jax.Array:
    # f[b, y, x] = sum_ij G[y, i] a[b, i, j] G[x, j]: small matmuls, no per-bump full-grid exp.
    profiles_x = profiles_y if profiles_x is None else profiles_x
    return jnp.einsum("yi,bij,xj->byx", profiles_y, amplitudes, profiles_x)


def lattice_maximum(amplitudes: Float[Array, "b 12 12"], length: float = 1.0) -> jax.Array:
    """M: the maximum of the unnormalised source over the fixed 64 x 64 lattice, shape [b]."""
    g = bump_profiles(MAX_LATTICE_POINTS, length, amplitudes.dtype)
    return jnp.max(_superpose(amplitudes, g), axis=(-2, -1))


def gaussian_source(
    amplitudes: Float[Array, "b 12 12"],
    resolution: int,
    *,
    length: float = 1.0,
    remove_mean: bool = False,
) -> Float[Array, "b n n"]:
    """Sources [b, n, n] for amplitudes [b, 12, 12], divided by their lattice maximum M.

    With remove_mean the grid mean is subtracted (Poisson, advection-diffusion).
    """
    g = bump_profiles(resolution, length, amplitudes.dtype)
    f = _superpose(amplitudes, g) / lattice_maximum(amplitudes, length)[:, None, None]
    if remove_mean:
        f = f - jnp.mean(f, axis=(-2, -1), keepdims=True)
    return f
