"""Per-instance input normalization (Subramanian et al. 2023, Sec. 3).

With the source norm ``s(f) = ||f||_2 * dx * dy`` (``||f||_2`` the Euclidean norm of the grid
values, ``dx = length / nx``, ``dy = length / ny``), every input of one instance is divided by

    r = s(f) / source_scale,        source_scale = median over the training split of s(f),

and each coefficient channel ``j`` additionally by ``coeff_scale[j]`` (the training median of
``|coef_j|``, 1.0 where that median is 0, e.g. a coefficient the task never uses).

The target is not scaled: scaling ``f`` and all coefficients by ``c > 0`` leaves the solution ``u``
of every PDE here unchanged, and the normalized inputs share that invariance because ``r`` scales
with ``c``.

Statistics over a large split can be built chunk by chunk: concatenate `source_norms` of each
chunk (``[B]`` floats) and the coefficients (``[B, C-1]``), then call `stats_from_norms`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

__all__ = ["NormStats", "ScaleArrays", "compute_stats", "normalize", "scale_arrays", "source_norms", "stats_from_norms"]

_VERSION = 1


@dataclasses.dataclass(frozen=True)
class NormStats:
    """Training-split statistics used by `normalize`; they travel with the checkpoint.

    Properties:
        source_scale: median over the training split of ``s(f) = ||f||_2 * dx * dy``.
        coeff_scale: per coefficient channel (layout order, source excluded), the training
            median of ``|coef|``, or 1.0 where that median is 0.
    """

    source_scale: float
    coeff_scale: tuple[float, ...]

    def __post_init__(self) -> None:
        if isinstance(self.coeff_scale, str | bytes) or not hasattr(self.coeff_scale, "__iter__"):
            raise ValueError(
                f"NormStats.coeff_scale must be a sequence of numbers (one per coefficient "
                f"channel), got {self.coeff_scale!r}."
            )
        _check_positive("source_scale", [self.source_scale])
        _check_positive("coeff_scale", self.coeff_scale)
        object.__setattr__(self, "source_scale", float(self.source_scale))
        object.__setattr__(self, "coeff_scale", tuple(float(c) for c in self.coeff_scale))

    @property
    def num_coefficients(self) -> int:
        """Number of coefficient channels (model input channels minus one)."""
        return len(self.coeff_scale)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: ``{"version", "source_scale", "coeff_scale"}``."""
        return {
            "version": _VERSION,
            "source_scale": self.source_scale,
            "coeff_scale": list(self.coeff_scale),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], num_coefficients: int | None = None) -> NormStats:
        """Inverse of `to_dict`; checks the content (and the channel count, if given)."""
        missing = {"version", "source_scale", "coeff_scale"} - set(data)
        if missing:
            raise ValueError(
                f"normalization stats are missing keys {sorted(missing)}; expected a dict written "
                f"by NormStats.to_dict(), got keys {sorted(data)}."
            )
        if data["version"] != _VERSION:
            raise ValueError(
                f"normalization stats version {data['version']!r} is not supported (this code "
                f"reads version {_VERSION}); recompute them with compute_stats()."
            )
        coeff_scale = data["coeff_scale"]
        if isinstance(coeff_scale, str | bytes) or not hasattr(coeff_scale, "__len__"):
            raise ValueError(f"NormStats.coeff_scale must be a list of numbers, got {coeff_scale!r}.")
        if num_coefficients is not None and len(coeff_scale) != num_coefficients:
            raise ValueError(
                f"normalization stats have {len(coeff_scale)} coefficient channels but the model "
                f"input layout has {num_coefficients}; these stats belong to another layout."
            )
        return cls(source_scale=data["source_scale"], coeff_scale=tuple(coeff_scale))


class ScaleArrays(NamedTuple):
    """`NormStats` as arrays: the form a compiled step takes them in, as an argument rather than a constant, so runs
    with other statistics share one program (and K runs of a group stack theirs: leaves [K] and [K, C-1]).

    Properties:
        source_scale: [] (or [K]) the median source norm.
        coeff_scale: [C-1] (or [K, C-1]) the coefficient channels' median magnitudes.
    """

    source_scale: Array
    coeff_scale: Array

    @property
    def num_coefficients(self) -> int:
        return int(np.shape(self.coeff_scale)[-1])


def scale_arrays(stats: NormStats | ScaleArrays) -> ScaleArrays:
    """`stats` as `ScaleArrays` in JAX's default float dtype (float32, or float64 with x64), which is the dtype a
    Python float constant takes in the same arithmetic: a step gives the same bits either way."""
    if isinstance(stats, ScaleArrays):
        return stats
    dtype = jax.dtypes.canonicalize_dtype(np.float64)
    return ScaleArrays(np.asarray(stats.source_scale, dtype), np.asarray(stats.coeff_scale, dtype))


def _check_positive(name: str, values: Any) -> None:
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
            raise ValueError(f"NormStats.{name} must hold numbers, got {value!r}.")
        if not (math.isfinite(value) and value > 0):
            raise ValueError(
                f"NormStats.{name} must be finite and > 0, got {value!r}; was the training split "
                "empty or all-zero sources?"
            )


def _check_source(source: Any) -> Array:
    source = jnp.asarray(source)
    if source.ndim != 3:
        raise ValueError(f"source must have shape [B, ny, nx], got {source.shape}; add a batch axis with source[None].")
    return source


def _check_coeffs(coeffs: Any, batch: int) -> Array:
    coeffs = jnp.asarray(coeffs)
    if coeffs.ndim != 2 or coeffs.shape[0] != batch:
        raise ValueError(
            f"coeffs must have shape [B, C-1] with B = {batch}, got {coeffs.shape}; build it with "
            "fno_jax.model.channels.coefficients(batch, layout)."
        )
    return coeffs


def source_norms(source: Float[ArrayLike, "b ny nx"], length: float = 1.0, *, xp=jnp) -> Float[Array, " b"]:
    """``s(f) = ||f||_2 * dx * dy`` per instance ``[B]`` on a periodic square of side ``length``.

    `xp` is the array module (`jax.numpy` inside the model's step, `numpy` for statistics on the host).
    """
    if xp is jnp:
        source = _check_source(source)
    elif np.ndim(source) != 3:
        raise ValueError(f"source must have shape [B, ny, nx], got {np.shape(source)}.")
    if not length > 0:
        raise ValueError(f"length must be > 0 (the domain side), got {length!r}.")
    dy = length / source.shape[1]
    dx = length / source.shape[2]
    return xp.sqrt(xp.sum(xp.square(source), axis=(1, 2))) * (dx * dy)


def stats_from_norms(
    norms: Float[ArrayLike, " b"], coeffs: Float[ArrayLike, "b c"], present: ArrayLike | None = None
) -> NormStats:
    """Statistics from precomputed `source_norms` ``[B]`` and coefficients ``[B, C-1]``.

    `present` ``[B, C-1]`` (bool, default all true) marks the samples that have each coefficient
    (`fno_jax.model.channels.presence`): a coefficient's median is taken over those samples only, so in a
    mixture of PDEs the zeros of the families without it do not pull its scale to 0.
    Use this to accumulate a large split chunk by chunk (both inputs are small per instance).
    """
    norms = np.asarray(norms, dtype=np.float64)
    if norms.ndim != 1 or norms.size == 0:
        raise ValueError(f"norms must be a non-empty [B] array of s(f), got shape {norms.shape}.")
    coeffs = np.asarray(_check_coeffs(coeffs, norms.shape[0]), dtype=np.float64)
    present = np.ones(coeffs.shape, bool) if present is None else np.asarray(present, bool)
    if present.shape != coeffs.shape:
        raise ValueError(f"present must have the coefficients' shape {coeffs.shape}, got {present.shape}.")
    source_scale = float(np.median(norms))
    if not source_scale > 0:
        raise ValueError(
            f"median source norm is {source_scale}; the training sources are (mostly) zero, "
            "so the per-instance scale is undefined. Check the data."
        )
    medians = [
        np.median(np.abs(coeffs[present[:, j], j])) if present[:, j].any() else 0.0 for j in range(coeffs.shape[1])
    ]
    coeff_scale = tuple(float(m) if m > 0 else 1.0 for m in medians)
    return NormStats(source_scale=source_scale, coeff_scale=coeff_scale)


def compute_stats(
    source: Float[ArrayLike, "b ny nx"], coeffs: Float[ArrayLike, "b c"], length: float = 1.0
) -> NormStats:
    """`NormStats` of a split in memory: ``source [B, ny, nx]``, ``coeffs [B, C-1]``."""
    return stats_from_norms(source_norms(source, length), coeffs)


def normalize(
    source: Float[ArrayLike, "b ny nx"],
    coeffs: Float[ArrayLike, "b c"],
    stats: NormStats | ScaleArrays,
    length: float = 1.0,
    fields: Float[ArrayLike, "b ny nx f"] | None = None,
):
    """Normalized ``(source_n, coeffs_n)``: divide by ``r = s(f) / source_scale`` per instance,
    then each coefficient channel by ``stats.coeff_scale``; with field coefficients ``[B, ny, nx, F]`` (whose scales
    follow the scalar channels' in ``coeff_scale``), ``(source_n, coeffs_n, fields_n)``.

    An all-zero source (``s(f) = 0``) is left unscaled (``r = 1``) rather than dividing by zero.
    Pure and jit-friendly: ``stats`` is static data (`NormStats`) or traced (`ScaleArrays`), with the same result.
    """
    source = _check_source(source)
    coeffs = _check_coeffs(coeffs, source.shape[0])
    num_fields = 0 if fields is None else int(jnp.shape(fields)[-1])
    if coeffs.shape[1] + num_fields != stats.num_coefficients:
        raise ValueError(
            f"coeffs has {coeffs.shape[1]} channels (and {num_fields} fields) but the stats were computed for "
            f"{stats.num_coefficients}; use the stats of the same channel layout."
        )
    norms = source_norms(source, length)
    ratio = jnp.where(norms > 0, norms / stats.source_scale, 1.0).astype(source.dtype)
    coeff_scale = jnp.asarray(stats.coeff_scale, dtype=coeffs.dtype)
    source_n = source / ratio[:, None, None]
    coeffs_n = coeffs / ratio[:, None].astype(coeffs.dtype) / coeff_scale[..., : coeffs.shape[1]]
    if fields is None:
        return source_n, coeffs_n
    fields = jnp.asarray(fields)
    field_scale = coeff_scale[..., coeffs.shape[1] :].astype(fields.dtype)
    return source_n, coeffs_n, fields / ratio[:, None, None, None].astype(fields.dtype) / field_scale
