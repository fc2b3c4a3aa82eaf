"""Spectral (rfft2) solvers for the three periodic PDEs on [0, L)^2.

All are pure functions that work under jit, vmap and grad, in float32 or float64 (the result takes the promoted
input dtype).  Arrays are [..., y, x] with x along the last axis; K11 and vx go with x, K22 and vy with y (the
convention is in `solvers.grid`).

Batching is strict: `source` is [*batch, n, n]; every coefficient has the batch shape `batch` (one value per
problem) or none (one value for all).  `length` is a Python float or a scalar array that may be traced (vmap over
lengths, grad with respect to L).  Input checks are listed in `solvers._checks`: shapes raise ValueError at once;
values (symmetric positive definite K, D > 0, finite inputs, resonance when asked) raise ValueError for concrete
inputs and go through `jax.experimental.checkify` under tracing.

The `*_spectral` functions solve for a source given by its rfft2 and skip the checks; the task samplers use them
with spectra built analytically (`solvers.sources`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, Complex, Float

from solvers import _checks
from solvers.grid import Domain
from solvers.symbols import (
    RESONANCE_RTOL,
    advection_diffusion_symbol,
    diffusion_symbol,
    helmholtz_mask,
    helmholtz_symbol,
    nearest_resonance,
    nonzero_mode_mask,
    resonant_fraction,
)

__all__ = [
    "poisson",
    "advection_diffusion",
    "helmholtz",
    "helmholtz_dropped_fraction",
    "poisson_spectral",
    "advection_diffusion_spectral",
    "helmholtz_spectral",
    "RESONANT_SOURCE_RTOL",
]

# resonance="error" refuses a Helmholtz problem when more than this fraction of the source's norm lies in resonant
# modes.  Rounding puts about eps * sqrt(resonant modes / all modes) there (<~1e-8 in float32), so a source with no
# content in those modes (a solvable problem) passes in both precisions.
RESONANT_SOURCE_RTOL = 1e-6


def _solve_spectrum(f_hat: jax.Array, symbol: jax.Array, mask: jax.Array) -> jax.Array:
    """u = irfft2(where(mask, f_hat / symbol, 0)); the division is guarded so that gradients stay finite.

    Written with one real reciprocal per mode (1 / s, or conj(s) / |s|^2 for a complex symbol) and real
    products: cheaper than complex division, and elementwise, so a source spectrum built analytically fuses in.
    """
    n = f_hat.shape[-2]
    fr, fi = jnp.real(f_hat), jnp.imag(f_hat)
    if jnp.iscomplexobj(symbol):
        sr, si = jnp.real(symbol), jnp.imag(symbol)
        inv = jnp.where(mask, 1 / jnp.where(mask, sr * sr + si * si, 1), 0)
        u_hat = jax.lax.complex((fr * sr + fi * si) * inv, (fi * sr - fr * si) * inv)
    else:
        inv = jnp.where(mask, 1 / jnp.where(mask, symbol, 1), 0)
        u_hat = jax.lax.complex(fr * inv, fi * inv)
    return jnp.fft.irfft2(u_hat, s=(n, n))


def poisson_spectral(
    source_hat: Complex[Array, "... n m"], diffusion: Float[Array, "... 2 2"], domain: Domain
) -> Float[Array, "... n n"]:
    """`poisson` for a source given by its rfft2 (no input checks); dtype = diffusion's."""
    symbol = diffusion_symbol(diffusion, domain)
    return _solve_spectrum(source_hat, symbol, nonzero_mode_mask(domain.n))


def advection_diffusion_spectral(
    source_hat: Complex[Array, "... n m"],
    diffusion: Float[Array, "... 2 2"],
    velocity: Float[Array, "... 2"],
    domain: Domain,
) -> Float[Array, "... n n"]:
    """`advection_diffusion` for a source given by its rfft2 (no input checks)."""
    symbol = advection_diffusion_symbol(diffusion, velocity, domain)
    return _solve_spectrum(source_hat, symbol, nonzero_mode_mask(domain.n))


def helmholtz_spectral(
    source_hat: Complex[Array, "... n m"],
    omega: Float[Array, "*batch"],
    diffusivity: Float[Array, "*batch"],
    domain: Domain,
) -> Float[Array, "... n n"]:
    """`helmholtz` (resonant modes dropped) for a source given by its rfft2 (no input checks)."""
    symbol = helmholtz_symbol(omega, diffusivity, domain)
    return _solve_spectrum(source_hat, symbol, helmholtz_mask(omega, diffusivity, domain))


def compiled(fn: Callable) -> Callable:
    """`fn(*arrays, domain=...)` under jax.jit, with a static domain length kept static (a compile-time constant).

    The public functions check their inputs in Python, then call their numerical core through this: a plain call
    runs one compiled program (per shape, dtype and static length) instead of dispatching each operation; inside
    the caller's jit the inner jit is inlined.
    """
    static, traced = jax.jit(fn, static_argnames="domain"), jax.jit(fn)

    @functools.wraps(fn)
    def call(*args, domain: Domain):
        return (static if isinstance(domain.length, float) else traced)(*args, domain=domain)

    return call


@compiled
def _poisson(source, diffusion, *, domain):
    return poisson_spectral(jnp.fft.rfft2(source), diffusion, domain)


@compiled
def _advection_diffusion(source, diffusion, velocity, *, domain):
    return advection_diffusion_spectral(jnp.fft.rfft2(source), diffusion, velocity, domain)


@compiled
def _helmholtz(source, omega, diffusivity, *, domain):
    return helmholtz_spectral(jnp.fft.rfft2(source), omega, diffusivity, domain)


@compiled
def _dropped_fraction(source, omega, diffusivity, *, domain):
    return resonant_fraction(jnp.fft.rfft2(source), helmholtz_mask(omega, diffusivity, domain))


def _source(source) -> jax.Array:
    return _checks.check_field(source, "source")


def _diffusion(diffusion, source) -> jax.Array:
    return _checks.check_coefficient(diffusion, (2, 2), "diffusion", "the 2x2 tensor K, K11 along x", source)


def _domain(source: jax.Array, length, dtype) -> Domain:
    length = _checks.check_length(length)
    return Domain(source.shape[-1], length if isinstance(length, float) else length.astype(dtype))


def poisson(
    source: Float[Array, "*batch n n"],
    diffusion: Float[Array, "*#batch 2 2"],
    *,
    length: float | Float[Array, ""] = 1.0,
) -> Float[Array, "*batch n n"]:
    """Solve -div(K grad u) = f - mean(f) for the zero-mean periodic u on [0, L)^2.

    -div(K grad u) = -(K11 u_xx + (K12 + K21) u_xy + K22 u_yy) with x the last array axis and y the one before.

    Args:
      source: f, shape [*batch, n, n] (n even >= 4).
      diffusion: symmetric positive definite K = [[K11, K12], [K21, K22]] (0.01 scale included), shape
        [*batch, 2, 2] or [2, 2]; `solvers.rotated_diffusion(e, t)` builds the paper's tensors.
      length: side L of the periodic square (static or traced scalar).

    Returns:
      u, shape [*batch, n, n].  The k = 0 mode of f is dropped (solvability), so u has zero mean.
    """
    source = _source(source)
    diffusion = _diffusion(diffusion, source)
    _checks.check_not_volume(source, [diffusion.shape[:-2]])
    _checks.check_diffusion_values(diffusion)
    dtype = _checks.float_dtype(source, diffusion)
    domain = _domain(source, length, dtype)
    return _poisson(source.astype(dtype), diffusion.astype(dtype), domain=domain)


def advection_diffusion(
    source: Float[Array, "*batch n n"],
    diffusion: Float[Array, "*#batch 2 2"],
    velocity: Float[Array, "*#batch 2"],
    *,
    length: float | Float[Array, ""] = 1.0,
) -> Float[Array, "*batch n n"]:
    """Solve -div(K grad u) + v . grad u = f - mean(f) for the zero-mean periodic u on [0, L)^2.

    v . grad u = vx u_x + vy u_y with x the last array axis; K as in `poisson`.

    Args:
      source: f, shape [*batch, n, n].
      diffusion: symmetric positive definite K, shape [*batch, 2, 2] or [2, 2].
      velocity: constant v = (vx, vy), shape [*batch, 2] or [2].
      length: side L of the periodic square (static or traced scalar).

    Returns:
      u, shape [*batch, n, n], zero mean.
    """
    source = _source(source)
    diffusion = _diffusion(diffusion, source)
    velocity = _checks.check_coefficient(velocity, (2,), "velocity", "(vx, vy)", source)
    _checks.check_not_volume(source, [diffusion.shape[:-2], velocity.shape[:-1]])
    _checks.check_diffusion_values(diffusion)
    _checks.check_finite(velocity, "velocity")
    dtype = _checks.float_dtype(source, diffusion, velocity)
    domain = _domain(source, length, dtype)
    return _advection_diffusion(source.astype(dtype), diffusion.astype(dtype), velocity.astype(dtype), domain=domain)


def _helmholtz_inputs(source, omega, diffusivity, length):
    source = _source(source)
    omega = _checks.check_coefficient(omega, (), "omega", "one value per problem", source)
    diffusivity = _checks.check_coefficient(diffusivity, (), "diffusivity", "one value per problem", source)
    _checks.check_not_volume(source, [omega.shape, diffusivity.shape])
    _checks.check_finite(omega, "omega")
    _checks.check_positive(diffusivity, "diffusivity")
    dtype = _checks.float_dtype(source, omega, diffusivity)
    domain = _domain(source, length, dtype)
    return source.astype(dtype), omega.astype(dtype), diffusivity.astype(dtype), domain


def helmholtz(
    source: Float[Array, "*batch n n"],
    omega: Float[Array, "*#batch"],
    *,
    diffusivity: float | Float[Array, "*#batch"] = 0.01,
    length: float | Float[Array, ""] = 1.0,
    resonance: Literal["drop", "error"] = "drop",
) -> Float[Array, "*batch n n"]:
    """Solve -D lap u - omega u = f on the periodic square [0, L)^2 (lap = d2/dx2 + d2/dy2).

    Resonance (see `solvers.symbols`): modes with |D |k|^2 - omega| <= RESONANCE_RTOL (D |k|^2 + |omega|), the same
    rule in float32 and float64, have no (stable) solution.  With resonance="drop" (the default, as in the paper's
    generator) the source's part in those modes is dropped and u is 0 there: u solves the projected problem, and
    `helmholtz_dropped_fraction` says how much of f was dropped.  With resonance="error" a problem whose source
    has more than RESONANT_SOURCE_RTOL of its norm in resonant modes is refused (ValueError, or through checkify
    under tracing).  The mean of f is kept (unless omega is resonant with k = 0, i.e. omega = 0).

    Args:
      source: f, shape [*batch, n, n].
      omega: shape [*batch] or [] (one value for all).
      diffusivity: D > 0, a scalar or shape [*batch].
      length: side L of the periodic square (static or traced scalar).
      resonance: "drop" or "error".

    Returns:
      u, shape [*batch, n, n].
    """
    if resonance not in ("drop", "error"):
        raise ValueError(f"resonance must be 'drop' or 'error', got {resonance!r}.")
    source, omega, diffusivity, domain = _helmholtz_inputs(source, omega, diffusivity, length)
    if resonance == "error":
        _require_nonresonant(source, omega, diffusivity, domain)
    return _helmholtz(source, omega, diffusivity, domain=domain)


@compiled
def _resonance_report(source, omega, diffusivity, *, domain):
    fraction = _dropped_fraction(source, omega, diffusivity, domain=domain)
    gap, q = nearest_resonance(omega, diffusivity, domain)
    worst = jnp.argmax(fraction.reshape(-1))
    pick = lambda x: jnp.broadcast_to(x, fraction.shape).reshape(-1)[worst]
    return jnp.max(fraction), pick(omega), pick(q), pick(gap)


def _require_nonresonant(source, omega, diffusivity, domain) -> None:
    fraction, omega, q, gap = _resonance_report(source, omega, diffusivity, domain=domain)
    _checks.require(
        fraction <= RESONANT_SOURCE_RTOL,
        "helmholtz: omega = {:.7g} is resonant: D |k|^2 for the mode |m|^2 = {} is within a relative "
        f"{RESONANCE_RTOL:.0e} of it (gap {{:.2e}}), and {{:.3g}} of the source's norm lies in resonant modes, "
        "which have no solution. Move omega away from D (2 pi / L)^2 |m|^2 (solvers.resonant_omegas) or pass "
        "resonance='drop' to drop those modes.",
        omega,
        q,
        gap,
        fraction,
    )


def helmholtz_dropped_fraction(
    source: Float[Array, "*batch n n"],
    omega: Float[Array, "*#batch"],
    *,
    diffusivity: float | Float[Array, "*#batch"] = 0.01,
    length: float | Float[Array, ""] = 1.0,
) -> Float[Array, "*batch"]:
    """||P f|| / ||f||: the part of the source that `helmholtz` drops as resonant (0 when none), shape [*batch]."""
    source, omega, diffusivity, domain = _helmholtz_inputs(source, omega, diffusivity, length)
    return _dropped_fraction(source, omega, diffusivity, domain=domain)
