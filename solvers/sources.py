"""Gaussian-bump sources (Subramanian et al., NeurIPS 2023): 144 bumps, built separably, with their spectrum.

A source is f(x, y) = sum_{i, j} a_ij g_i(y) g_j(x) / M with
  * centres on a 12 x 12 lattice spaced L / 16 around the middle of [0, L)^2,
    c_i = L * (1/2 + (i - 5.5) / 16) = L (20 + 8 i) / 128, so every centre is >= 0.156 L from the boundary;
  * g_i(s) = sum_{m in {-1, 0, 1}} exp(-(s - c_i - m L)^2 / (2 sigma^2)), sigma = L / 32.  The
    periodic images m = +-1 are included because the wrap-around of the m = 0 term alone is
    exp(-0.156^2 / (2 / 32^2)) ~ 4e-6 at the boundary, not negligible in float64; the next images
    (distance >= 1.15 L) are below 1e-290;
  * a_ij = U(1e-3, 1) if bump ij is switched on (probability 1 - vf, vf drawn from
    {0.2, 0.4, 0.6, 0.8}), else 0; at least one bump is on;
  * M = the maximum of sum a_ij g_i g_j over the fixed 128 x 128 lattice x_j = j L / 128.

Why M is taken on a fixed lattice, and why that lattice.  The paper's generator (`utils/gen_data_poisson.py`
and its siblings in the public repository ShashankSubramanian/neuraloperators-TL-scaling) divides by the maximum
over its output grid, always 128 x 128.  Taking the maximum over whatever grid is requested would make the
continuum source depend on the resolution (a 64-point grid misses the peaks by up to a few percent), so the
same key at resolutions 64 and 128 would no longer give the same problem.  A fixed lattice keeps the source
resolution-independent; choosing the paper's 128 x 128 grid as that lattice makes it identical to the paper's
normalisation at the paper's resolution.  The lattice maximum lies in the box of lattice points spanning the
centres (indices 20..108): one lattice step outside it every primary Gaussian factor drops by at least
exp(-(1/128)^2 / (2 sigma^2)) = 0.969, more than the periodic images (< 4e-6 of an amplitude each) can add back,
so only that box (89 x 89 points) is evaluated.

The field is f = G A G^T (G = [n, 12] profiles), two matmuls per sample.  Its rfft2 is built analytically: for
n divisible by 16 the centres sit on the grid, L / 16 = n / 16 points apart, so the DFT of g_i is the DFT of g_0
times exp(-2 pi i m i / 16), and

    rfft2(f)[my, mx] = G0(my) G0(mx) * S[my mod 16, mx mod 16],   S = the 16 x 16 DFT of A (zero-padded),

with G0 the DFT of g_0's samples (computed once in float64).  It equals rfft2 of the field up to rounding, so a
solve needs only its one inverse FFT.  Other n fall back to rfft2.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float

from solvers.coefficients import DRAW_DTYPE

__all__ = [
    "BUMPS_PER_AXIS",
    "VOLUME_FRACTIONS",
    "LATTICE_POINTS",
    "bump_centres",
    "bump_profiles",
    "draw_bump_amplitudes",
    "bump_field",
    "lattice_maximum",
    "gaussian_source",
    "gaussian_source_and_spectrum",
]

BUMPS_PER_AXIS = 12
CENTRE_SPACING = 1.0 / 16
SIGMA = 1.0 / 32
VOLUME_FRACTIONS = (0.2, 0.4, 0.6, 0.8)
AMPLITUDE_RANGE = (1e-3, 1.0)
LATTICE_POINTS = 128  # points per axis of the resolution-independent lattice for M (the paper's grid)
_LATTICE_BOX = slice(20, 109)  # lattice indices from the first to the last centre
_PERIOD = 16  # L / CENTRE_SPACING: the centre lattice's period in modes


def bump_centres(length: float = 1.0) -> np.ndarray:
    """The 12 centre coordinates along one axis (same for x and y), float64 numpy."""
    i = np.arange(BUMPS_PER_AXIS)
    return length * (0.5 + (i - (BUMPS_PER_AXIS - 1) / 2) * CENTRE_SPACING)


def bump_profiles(n: int, length: float = 1.0, dtype=None) -> Float[Array, "n 12"]:
    """g_i(x_j) for the n grid points x_j = j L / n, periodic images m = -1, 0, 1 included."""
    return jnp.asarray(_profiles(n, length), dtype=dtype)


@functools.lru_cache(maxsize=32)
def _profiles(n: int, length: float) -> np.ndarray:
    x = np.arange(n)[:, None] / n * length
    c = bump_centres(length)[None, :]
    sigma = SIGMA * length
    # Computed in float64 numpy once per (n, length) and baked in as constants.  x = (j / n) * L
    # as in solvers.grid.grid_points makes the shared points of resolutions n and 2n bitwise equal.
    g = sum(np.exp(-((x - c - m * length) ** 2) / (2 * sigma**2)) for m in (-1, 0, 1))
    g.flags.writeable = False
    return g


@functools.lru_cache(maxsize=32)
def _spectral_factors(n: int, length: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(G0(my) G0(mx) [n, n // 2 + 1] complex, E [16, 12] complex, column sums of G [12]), float64 numpy."""
    g = _profiles(n, length)
    g0_hat = np.fft.fft(g[:, 0])
    outer = g0_hat[:, None] * g0_hat[None, : n // 2 + 1]
    phase = np.exp(-2j * np.pi * np.outer(np.arange(_PERIOD), np.arange(BUMPS_PER_AXIS)) / _PERIOD)
    return outer, phase, g.sum(axis=0)


def draw_bump_amplitudes(
    key: jax.Array, fraction_index=None, dtype=DRAW_DTYPE
) -> tuple[Float[Array, "12 12"], jax.Array]:
    """One sample's amplitudes a [12, 12] in `dtype` (zeros for switched-off bumps) and its vf's index (int32).

    vf = VOLUME_FRACTIONS[index].  All of a sample's random numbers come from one float32 `uniform` call
    (`DRAW_DTYPE`, whatever the output precision; one threefry evaluation, which keeps compile times short): u[0]
    picks vf (unless `fraction_index` is given, as for a redraw with the same vf), u[1] the bump forced on when
    none is, the next 144 switch bumps on (u < 1 - vf, decided in float32), the last 144 are the amplitudes
    lo + (hi - lo) u, computed in `dtype`.
    """
    count = BUMPS_PER_AXIS**2
    u = jax.random.uniform(key, (2 + 2 * count,), DRAW_DTYPE)
    if fraction_index is None:
        fraction_index = jnp.minimum((u[0] * len(VOLUME_FRACTIONS)).astype(jnp.int32), len(VOLUME_FRACTIONS) - 1)
    volume_fraction = jnp.asarray(VOLUME_FRACTIONS, DRAW_DTYPE)[fraction_index]
    forced = jnp.minimum((u[1] * count).astype(jnp.int32), count - 1)
    on = u[2 : 2 + count] < 1 - volume_fraction
    on = jnp.where(jnp.any(on), on, jnp.arange(count) == forced)
    lo, hi = AMPLITUDE_RANGE
    amplitude = lo + (hi - lo) * u[2 + count :].astype(dtype)
    shape = (BUMPS_PER_AXIS, BUMPS_PER_AXIS)
    return jnp.where(on, amplitude, 0).reshape(shape), fraction_index


def bump_field(amplitudes: Float[Array, "b 12 12"], n: int, length: float = 1.0) -> Float[Array, "b n n"]:
    """The unnormalised field sum a_ij g_i(y) g_j(x) on the n x n grid, in the amplitudes' dtype."""
    g = bump_profiles(n, length, amplitudes.dtype)
    return _superpose(amplitudes, g, g)


def _superpose(amplitudes: jax.Array, profiles_y: jax.Array, profiles_x: jax.Array) -> jax.Array:
    # f[b, y, x] = sum_ij G[y, i] a[b, i, j] G[x, j]: small matmuls, no per-bump full-grid exp.
    rows = jnp.einsum("yi,bij->byj", profiles_y, amplitudes)
    return jnp.einsum("byj,xj->byx", rows, profiles_x)


def lattice_maximum(amplitudes: Float[Array, "b 12 12"], length: float = 1.0) -> Float[Array, " b"]:
    """M: the maximum of the unnormalised source over the fixed 128 x 128 lattice, shape [b].

    Evaluated on the box of lattice points spanning the centres, which holds the maximum (module docstring).
    """
    g = bump_profiles(LATTICE_POINTS, length, amplitudes.dtype)[_LATTICE_BOX]
    return jnp.max(_superpose(amplitudes, g, g), axis=(-2, -1))


def _field(scaled: jax.Array, n: int, length: float, remove_mean: bool) -> jax.Array:
    """sum a_ij g_i g_j (minus its grid mean) for amplitudes already divided by M, as one matmul per sample."""
    g = bump_profiles(n, length, scaled.dtype)
    rows = jnp.einsum("yi,bij->byj", g, scaled)
    if not remove_mean:
        return jnp.einsum("byj,xj->byx", rows, g)
    # The mean is s^T A s / n^2 (s = column sums of G); subtracting it inside the matmul, as a 13th column of
    # ones, saves a pass over the field.
    _, _, column_sums = _spectral_factors(n, length)
    s = jnp.asarray(column_sums, scaled.dtype)
    mean = jnp.einsum("i,bij,j->b", s, scaled, s) / n**2
    rows = jnp.concatenate([rows, jnp.broadcast_to(-mean[:, None, None], rows.shape[:-1] + (1,))], axis=-1)
    return jnp.einsum("byj,xj->byx", rows, jnp.concatenate([g, jnp.ones((n, 1), g.dtype)], axis=-1))


def _spectrum(scaled: jax.Array, n: int, length: float, remove_mean: bool) -> jax.Array:
    """rfft2 of `_field`, [b, n, n // 2 + 1], for n divisible by 16, from the 16 x 16 DFT S of the amplitudes."""
    dtype = scaled.dtype
    outer, phase, _ = _spectral_factors(n, length)
    er, ei = jnp.asarray(phase.real, dtype), jnp.asarray(phase.imag, dtype)
    # S = E A E^T with E = er + i ei, as real matmuls.
    ar, ai = jnp.einsum("pi,bij->bpj", er, scaled), jnp.einsum("pi,bij->bpj", ei, scaled)
    sr = jnp.einsum("bpj,qj->bpq", ar, er) - jnp.einsum("bpj,qj->bpq", ai, ei)
    si = jnp.einsum("bpj,qj->bpq", ar, ei) + jnp.einsum("bpj,qj->bpq", ai, er)
    # Periodic in my with period 16: index the x modes once ([b, 16, m]), then broadcast over the n / 16 periods
    # of my (no gather over the whole spectrum).
    ix = np.arange(n // 2 + 1) % _PERIOD
    periods, m = n // _PERIOD, n // 2 + 1
    sr, si = sr[:, None, :, ix], si[:, None, :, ix]
    if remove_mean:
        outer = outer.copy()
        outer[0, 0] = 0
    # Elementwise from here, so that under jit it fuses into the solver's division (no array in between).
    cr = jnp.asarray(outer.real.reshape(periods, _PERIOD, m), dtype)
    ci = jnp.asarray(outer.imag.reshape(periods, _PERIOD, m), dtype)
    shape = (scaled.shape[0], n, m)
    return jax.lax.complex((cr * sr - ci * si).reshape(shape), (cr * si + ci * sr).reshape(shape))


def gaussian_source_and_spectrum(
    amplitudes: Float[Array, "b 12 12"],
    resolution: int,
    *,
    length: float = 1.0,
    remove_mean: bool = False,
) -> tuple[Float[Array, "b n n"], Complex[Array, "b n m"]]:
    """Sources f [b, n, n] for amplitudes [b, 12, 12] (divided by the lattice maximum M) and their rfft2.

    With remove_mean the mean is subtracted (Poisson, advection-diffusion) and the spectrum's k = 0 entry is 0.
    The spectrum is analytic for n divisible by 16 (module docstring), else rfft2(f); both in the amplitudes'
    dtype.
    """
    scaled = amplitudes / lattice_maximum(amplitudes, length)[:, None, None]
    f = _field(scaled, resolution, length, remove_mean)
    if resolution % _PERIOD:
        return f, jnp.fft.rfft2(f)
    return f, _spectrum(scaled, resolution, length, remove_mean)


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
    scaled = amplitudes / lattice_maximum(amplitudes, length)[:, None, None]
    return _field(scaled, resolution, length, remove_mean)
