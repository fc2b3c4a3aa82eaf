"""Spectral (rfft2) solvers for the three periodic PDEs on [0, L)^2.

All three are pure, jit/vmap/grad-friendly functions; leading batch axes of the field and the
coefficients broadcast; float32 or float64 (the result takes the promoted input dtype).  Arrays
are [..., y, x] with x along the last axis; the wavenumber convention is in `solvers.grid`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from solvers import _checks
from solvers.symbols import (
    advection_diffusion_symbol,
    diffusion_symbol,
    helmholtz_mask,
    helmholtz_symbol,
    nonzero_mode_mask,
)

__all__ = ["poisson", "advection_diffusion", "helmholtz"]


def spectral_solve(source: jax.Array, symbol: jax.Array, mask: jax.Array) -> jax.Array:
    """u = irfft2(where(mask, rfft2(f) / symbol, 0)); masked modes (symbol zero) are set to 0.

    The division is guarded so that gradients stay finite at the masked modes.
    """
    return solve_spectrum(jnp.fft.rfft2(source), symbol, mask, source.dtype)


def solve_spectrum(f_hat: jax.Array, symbol: jax.Array, mask: jax.Array, dtype) -> jax.Array:
    """`spectral_solve` for a source given by its rfft2 f_hat [..., n, n // 2 + 1]."""
    n = f_hat.shape[-2]
    u_hat = jnp.where(mask, f_hat / jnp.where(mask, symbol, 1), 0)
    return jnp.fft.irfft2(u_hat, s=(n, n)).astype(dtype)


def _float_dtype(*arrays) -> jnp.dtype:
    # 0.0 is weakly typed: it promotes integer inputs to the default float, keeps float32 float32.
    return jnp.result_type(*arrays, 0.0)


def poisson(
    source: Float[Array, "... n n"], diffusion: Float[Array, "... 2 2"], *, length: float = 1.0
) -> Float[Array, "... n n"]:
    """Solve -div(K grad u) = f - mean(f) for the zero-mean periodic u.

    Args:
      source: f, shape [..., n, n] (n even >= 4).
      diffusion: symmetric positive definite K, shape [..., 2, 2] = [[K11, K12], [K21, K22]]
        with the 0.01 scale included; leading axes broadcast with those of `source`.
      length: side L of the periodic square [0, L)^2.

    Returns:
      u, shape broadcast(source.shape[:-2], diffusion.shape[:-2]) + (n, n).  The k = 0 mode of
      f is dropped (solvability), so u has zero mean.
    """
    length = _checks.check_length(length)
    source = _checks.check_field(source, "source")
    diffusion = _checks.check_trailing(diffusion, (2, 2), "diffusion", "the 2x2 tensor K")
    _checks.check_batch("source", source.shape, "diffusion", diffusion.shape[:-2])
    _checks.check_diffusion_values(diffusion)
    dtype = _float_dtype(source, diffusion)
    n = source.shape[-1]
    symbol = diffusion_symbol(diffusion.astype(dtype), n, length)
    return spectral_solve(source.astype(dtype), symbol, nonzero_mode_mask(n))


def advection_diffusion(
    source: Float[Array, "... n n"],
    diffusion: Float[Array, "... 2 2"],
    velocity: Float[Array, "... 2"],
    *,
    length: float = 1.0,
) -> Float[Array, "... n n"]:
    """Solve -div(K grad u) + v . grad u = f - mean(f) for the zero-mean periodic u.

    Args:
      source: f, shape [..., n, n].
      diffusion: symmetric positive definite K, shape [..., 2, 2].
      velocity: constant v = (vx, vy), shape [..., 2].
      length: side L of the periodic square.

    Returns:
      u with the broadcast batch shape + (n, n), zero mean.
    """
    length = _checks.check_length(length)
    source = _checks.check_field(source, "source")
    diffusion = _checks.check_trailing(diffusion, (2, 2), "diffusion", "the 2x2 tensor K")
    velocity = _checks.check_trailing(velocity, (2,), "velocity", "(vx, vy)")
    _checks.check_batch("source", source.shape, "diffusion", diffusion.shape[:-2])
    _checks.check_batch("source", source.shape, "velocity", velocity.shape[:-1])
    _checks.check_diffusion_values(diffusion)
    _checks.check_finite(velocity, "velocity")
    dtype = _float_dtype(source, diffusion, velocity)
    n = source.shape[-1]
    symbol = advection_diffusion_symbol(diffusion.astype(dtype), velocity.astype(dtype), n, length)
    return spectral_solve(source.astype(dtype), symbol, nonzero_mode_mask(n))


def helmholtz(
    source: Float[Array, "... n n"],
    omega: Float[Array, "*batch"],
    *,
    diffusivity: float | Float[Array, "*batch"] = 0.01,
    length: float = 1.0,
) -> Float[Array, "... n n"]:
    """Solve -D lap u - omega u = f on the periodic square.

    Modes where the symbol D |k|^2 - omega vanishes (to rounding, see `symbols.helmholtz_mask`)
    are set to zero in u; elsewhere the solve is exact.  The mean of f is kept (unless omega = 0).

    Args:
      source: f, shape [..., n, n].
      omega: shape [...] (scalar for one sample); leading axes broadcast with `source`'s.
      diffusivity: D > 0, a scalar or shape [...].
      length: side L of the periodic square.

    Returns:
      u with the broadcast batch shape + (n, n).
    """
    length = _checks.check_length(length)
    source = _checks.check_field(source, "source")
    omega = _checks.check_trailing(omega, (), "omega", "one value per sample")
    diffusivity = _checks.check_trailing(diffusivity, (), "diffusivity", "one value per sample")
    _checks.check_batch("source", source.shape, "omega", omega.shape)
    _checks.check_batch("source", source.shape, "diffusivity", diffusivity.shape)
    _checks.check_finite(omega, "omega")
    _checks.check_positive(diffusivity, "diffusivity")
    dtype = _float_dtype(source, omega, diffusivity)
    n = source.shape[-1]
    omega = omega.astype(dtype)
    symbol = helmholtz_symbol(omega, jnp.asarray(diffusivity, dtype), n, length)
    return spectral_solve(source.astype(dtype), symbol, helmholtz_mask(symbol, omega))
