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

The catalogue (`METRICS`) is the one list of the metrics: each entry's name is the key of its per-sample value, of
its split means (`val_<name>`, `test_<name>` in metrics.jsonl and summary.json), of its TensorBoard tag
(`val/<name>`; a banded metric `test/rel_l2_band_low`, ...), of a bundle card's test metrics, and its words are the
report's table titles and the model card's lines. Adding a metric is one function and one entry here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float

from fno_jax.training.losses import relative_l2
from solvers.grid import Domain, rfft_weights, wavenumbers
from solvers.symbols import RESONANCE_RTOL, advection_diffusion_symbol

__all__ = [
    "BANDS",
    "METRICS",
    "HEADLINE",
    "Metric",
    "band_keys",
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


@dataclasses.dataclass(frozen=True)
class Metric:
    """One per-sample metric of the catalogue.

    Properties:
      name: key of the per-sample value and suffix of its split means (`test_<name>`) and TensorBoard tags.
      title: what it is, in a few words (report tables).
      words: what it is, in a sentence (model cards).
      fn: fn(prediction, target, source, coefficients, length) -> [B] (or [B, len(BANDS)] when `banded`);
        `coefficients` is (diffusion, velocity, omega) or None.
      banded: one value per frequency band (`BANDS`); report columns `test_rel_l2_band_low`, ... (`band_keys`).
      needs_coefficients: left out when the coefficients are not known.
    """

    name: str
    title: str
    words: str
    fn: Callable[..., jax.Array]
    banded: bool = False
    needs_coefficients: bool = False


METRICS: tuple[Metric, ...] = (
    Metric(
        "rel_l2",
        "relative L2 (the paper's metric)",
        "relative L2 error ||u_pred - u|| / ||u|| (the paper's metric)",
        lambda p, t, f, c, length: relative_l2(p, t),
    ),
    Metric(
        "rel_h1",
        "relative H1",
        "relative H1 error (spectral: the error of u and of its gradient)",
        lambda p, t, f, c, length: relative_h1(p, t, length=length),
    ),
    Metric(
        "rel_linf",
        "relative L-infinity",
        "relative L-infinity error max|u_pred - u| / max|u|",
        lambda p, t, f, c, length: relative_linf(p, t),
    ),
    Metric(
        "rel_residual",
        "relative PDE residual ||A u_pred - f|| / ||f||",
        "relative PDE residual ||A u_pred - f|| / ||f||",
        lambda p, t, f, c, length: residual_of(p, f, c, length=length),
        needs_coefficients=True,
    ),
    Metric(
        "rel_l2_bands",
        "relative L2, {band} frequency band",
        "relative L2 error in the {band} frequency band ({edges}), over ||u||",
        lambda p, t, f, c, length: relative_l2_bands(p, t),
        banded=True,
    ),
)
# The paper's metric: the headline of every table and plot.
HEADLINE = "rel_l2"
# The bands in words, for titles and cards.
BAND_EDGES_WORDS = {"low": f"|m| < {BAND_EDGES[0]}", "mid": f"{BAND_EDGES[0]} <= |m| < {BAND_EDGES[1]}",
                    "high": f"|m| >= {BAND_EDGES[1]}"}  # fmt: skip


def band_keys(metric: Metric, prefix: str = "test_") -> dict[str, str]:
    """{flat key: band} of a banded metric: {"test_rel_l2_band_low": "low", ...} (report columns)."""
    return {f"{prefix}{metric.name.removesuffix('s')}_{band}": band for band in BANDS}


def relative_darcy_residual(
    prediction: Float[Array, "b n n"],
    source: Float[Array, "b n n"],
    permeability: Float[Array, "b n n"],
    *,
    length: float = 1.0,
) -> Float[Array, " b"]:
    """||A_a u_pred - f|| / ||f|| per sample, A_a the finite-volume -div(a grad .) with u = 0 on the boundary of
    Darcy's Dirichlet grid (`solvers.darcy_residual`): 0 to the solver's tolerance on its solutions."""
    from solvers import darcy_residual

    residual = darcy_residual(prediction, permeability, source, bc="dirichlet", length=length)
    norm = lambda x: jnp.sqrt(jnp.sum(x * x, axis=(-2, -1)))
    return _ratio(norm(residual), norm(source))


def residual_of(prediction, source, coefficients, *, length: float = 1.0) -> jax.Array:
    """The relative residual of a family's operator: Darcy's for {"a": permeability}, else the periodic operator's
    for (diffusion, velocity, omega) (`fno_jax.model.channels.residual_coefficients`)."""
    if isinstance(coefficients, dict):
        return relative_darcy_residual(prediction, source, coefficients["a"], length=length)
    return relative_residual(prediction, source, *coefficients, length=length)


def per_sample_metrics(
    prediction: Float[Array, "b n n"],
    target: Float[Array, "b n n"],
    source: Float[Array, "b n n"],
    coefficients: tuple[Array, Array, Array] | None,
    *,
    length: float = 1.0,
) -> dict[str, jax.Array]:
    """Every metric of the catalogue per sample: rel_l2, rel_h1, rel_linf, rel_residual [B] and rel_l2_bands [B, 3].

    `coefficients` is (diffusion [B, 2, 2], velocity [B, 2], omega [B])
    (`fno_jax.model.channels.physical_coefficients`); None leaves out the metrics that need them (the residual).
    """
    return {
        m.name: m.fn(prediction, target, source, coefficients, length)
        for m in METRICS
        if coefficients is not None or not m.needs_coefficients
    }
