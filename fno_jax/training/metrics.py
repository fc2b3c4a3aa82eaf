"""Per-sample error metrics of a predicted solution, beside the paper's relative L2
(`fno_jax.training.losses.relative_l2`).

Fields are ``[B, n, n]`` on the periodic square ``[0, L)^2``; every metric returns one value per sample, and a
split's metric is the mean over its samples (as for the paper's metric). With ``e = u_pred - u``, ``f`` the source
and hats the `jnp.fft.rfft2` coefficients on the grid and wavenumber convention of `solvers.grid`
(``k = 2 pi m / L`` for the integer mode ``m``):

    relative H1          ||e||_H1 / ||u||_H1,     ||v||_H1^2 = sum_k (1 + |k|^2) |v_hat(k)|^2 = int v^2 + |grad v|^2
    relative L-infinity  max |e| / max |u|        over the grid points
    relative residual    ||A u_pred - P f|| / ||P f||,   A u = -div(K grad u) + v . grad u - omega u
    relative L2, band b  ||P_b e|| / ||u||        b = low, mid, high

The residual applies the solvers' spectral operator, one form for every family: Poisson has v = 0, omega = 0;
advection-diffusion omega = 0; Helmholtz K = D I, v = 0. ``P`` drops the modes where the symbol of ``A`` vanishes
(the mean for Poisson and advection-diffusion), as `solvers.residual` does; the task samplers' sources have none
there, so ``||P f|| = ||f||``. The true solution has residual 0 up to rounding.

Frequency bands are PDEBench's (Takamoto et al. 2022, ``iLow = 4``, ``iHigh = 12``), counted in integer modes of the
domain so that a band holds the same continuum scales at every resolution: a mode ``m = (mx, my)`` is in

    low   |m| < 4         (wavelengths longer than L / 4)
    mid   4 <= |m| < 12
    high  |m| >= 12       (up to the grid's corners; empty on grids coarser than 18 x 18, where it is 0)

with ``|m| = sqrt(mx^2 + my^2)``. Each band's error is relative to the whole target norm ``||u||``, so the bands
split the paper's metric exactly: ``low^2 + mid^2 + high^2 = (||e|| / ||u||)^2`` per sample. (Relative to the
target's own energy in a band, the high band would divide by the tiny high-frequency content of smooth solutions.)

Norms are computed from rfft2 coefficients with the Parseval weights of `solvers.grid.rfft_weights`; the common
factor ``L^2 / n^4`` cancels in every ratio.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float

from fno_jax.training.losses import relative_l2
from solvers.grid import Domain, rfft_weights, wavenumbers
from solvers.symbols import RESONANCE_RTOL, advection_diffusion_symbol

__all__ = [
    "BANDS",
    "BAND_EDGES",
    "band_index",
    "operator_symbol",
    "per_sample_metrics",
    "relative_h1",
    "relative_l2_bands",
    "relative_linf",
    "relative_residual",
]

BANDS = ("low", "mid", "high")
# Edges of the bands in |m| (integer modes of the domain): low < 4 <= mid < 12 <= high.
BAND_EDGES = (4, 12)


def _check_fields(**fields: Array) -> int:
    shapes = {name: jnp.shape(x) for name, x in fields.items()}
    first = next(iter(shapes.values()))
    if len(first) != 3 or first[1] != first[2] or any(s != first for s in shapes.values()):
        raise ValueError(
            f"fields must share one shape [B, n, n] (a batch of square grids), got {shapes}; add a batch axis with "
            "x[None] and drop a trailing channel axis with x[..., 0]."
        )
    return first[-1]


def _ratio(num: Array, den: Array) -> Array:
    return num / jnp.maximum(den, jnp.finfo(den.dtype).tiny)


def _norm(field_hat: Complex[Array, "b n m"], weight: Float[Array, "n m"]) -> Float[Array, " b"]:
    """sqrt(sum_k weight(k) |field_hat(k)|^2) over the rfft grid (Parseval weights included in `weight`)."""
    return jnp.sqrt(jnp.sum(weight * jnp.abs(field_hat) ** 2, axis=(-2, -1)))


def relative_h1(
    prediction: Float[Array, "b n n"], target: Float[Array, "b n n"], *, length: float = 1.0
) -> Float[Array, " b"]:
    """||u_pred - u||_H1 / ||u||_H1 per sample, with ||v||_H1^2 = sum_k (1 + |k|^2) |v_hat(k)|^2 (spectral).

    |k|^2 = kx^2 + ky^2 is even in each component, so the Nyquist modes keep their full wavenumber (`solvers.grid`).
    """
    n = _check_fields(prediction=prediction, target=target)
    ky, kx = wavenumbers(n, length, prediction.dtype)
    weight = rfft_weights(n, prediction.dtype) * (1 + kx**2 + ky**2)
    error = _norm(jnp.fft.rfft2(prediction - target), weight)
    return _ratio(error, _norm(jnp.fft.rfft2(target), weight))


def relative_linf(prediction: Float[Array, "b n n"], target: Float[Array, "b n n"]) -> Float[Array, " b"]:
    """max |u_pred - u| / max |u| over the grid points, per sample."""
    _check_fields(prediction=prediction, target=target)
    error = jnp.max(jnp.abs(prediction - target), axis=(-2, -1))
    return _ratio(error, jnp.max(jnp.abs(target), axis=(-2, -1)))


def band_index(n: int) -> np.ndarray:
    """[n, n // 2 + 1] int: the band (0 low, 1 mid, 2 high) of each mode of the rfft2 grid of an n x n field."""
    my = np.fft.fftfreq(n, 1.0 / n).round().astype(np.int64)[:, None]
    mx = np.arange(n // 2 + 1, dtype=np.int64)[None, :]
    radius2 = mx**2 + my**2  # integer: the band edges are exact
    return np.searchsorted(np.square(BAND_EDGES), radius2, side="right")


def relative_l2_bands(prediction: Float[Array, "b n n"], target: Float[Array, "b n n"]) -> Float[Array, "b 3"]:
    """[B, 3]: ||P_b (u_pred - u)|| / ||u|| for the bands b = low, mid, high (`BANDS`); their squares sum to the
    squared relative L2 error."""
    n = _check_fields(prediction=prediction, target=target)
    weight = rfft_weights(n, prediction.dtype)
    error_hat = jnp.fft.rfft2(prediction - target)
    reference = _norm(jnp.fft.rfft2(target), weight)
    index = band_index(n)
    bands = [_norm(error_hat, jnp.where(index == b, weight, 0)) for b in range(len(BANDS))]
    return _ratio(jnp.stack(bands, axis=-1), reference[:, None])


def operator_symbol(
    diffusion: Float[Array, "b 2 2"], velocity: Float[Array, "b 2"], omega: Float[Array, " b"], n: int, length: float
) -> Complex[Array, "b n m"]:
    """Symbol of A u = -div(K grad u) + v . grad u - omega u on the rfft2 grid of an n x n field:
    K11 kx^2 + (K12 + K21) kx ky + K22 ky^2 + i (vx kx + vy ky) - omega (`solvers.symbols`)."""
    return advection_diffusion_symbol(diffusion, velocity, Domain(n, length)) - omega[:, None, None]


def relative_residual(
    prediction: Float[Array, "b n n"],
    source: Float[Array, "b n n"],
    diffusion: Float[Array, "b 2 2"],
    velocity: Float[Array, "b 2"],
    omega: Float[Array, " b"],
    *,
    length: float = 1.0,
) -> Float[Array, " b"]:
    """||A u_pred - P f|| / ||P f|| per sample (module docstring); the coefficients as returned by
    `fno_jax.model.channels.physical_coefficients`.

    A mode is in the null space of A when |symbol| <= RESONANCE_RTOL (|diffusion term| + |advection term| +
    |omega|): the solvers' own resonance rule (`solvers.symbols`), the same in float32 and float64, and exact for
    the mean.
    """
    n = _check_fields(prediction=prediction, source=source)
    dtype = prediction.dtype
    diffusion, velocity, omega = (jnp.asarray(c, dtype) for c in (diffusion, velocity, omega))
    symbol = operator_symbol(diffusion, velocity, omega, n, length)
    omega = omega[:, None, None]
    size = jnp.abs(symbol.real + omega) + jnp.abs(symbol.imag) + jnp.abs(omega)
    reachable = jnp.abs(symbol) > RESONANCE_RTOL * size
    source_hat = jnp.where(reachable, jnp.fft.rfft2(source), 0)
    weight = rfft_weights(n, dtype)
    residual = _norm(symbol * jnp.fft.rfft2(prediction) - source_hat, weight)
    return _ratio(residual, _norm(source_hat, weight))


def per_sample_metrics(
    prediction: Float[Array, "b n n"],
    target: Float[Array, "b n n"],
    source: Float[Array, "b n n"],
    coefficients: tuple[Array, Array, Array] | None,
    *,
    length: float = 1.0,
) -> dict[str, jax.Array]:
    """Every metric per sample: rel_l2, rel_h1, rel_linf, rel_residual [B] and rel_l2_bands [B, 3].

    `coefficients` is (diffusion [B, 2, 2], velocity [B, 2], omega [B])
    (`fno_jax.model.channels.physical_coefficients`);
    None leaves out the residual.
    """
    out = {
        "rel_l2": relative_l2(prediction, target),
        "rel_h1": relative_h1(prediction, target, length=length),
        "rel_linf": relative_linf(prediction, target),
        "rel_l2_bands": relative_l2_bands(prediction, target),
    }
    if coefficients is not None:
        out["rel_residual"] = relative_residual(prediction, source, *coefficients, length=length)
    return out
