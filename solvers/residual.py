"""Spectral residuals A u - P f of the three PDEs, for checking solutions.

A is applied exactly in Fourier space (same symbols as the solvers).  P drops the modes the
solvers drop: the mean for Poisson and advection-diffusion, the modes where the Helmholtz symbol
vanishes for Helmholtz.  So for the solvers' output the residual is zero to rounding.
Shapes: u and source [..., n, n]; coefficients as in `solvers.solve`; result [..., n, n].
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

__all__ = ["poisson_residual", "advection_diffusion_residual", "helmholtz_residual"]


def _residual(u: jax.Array, source: jax.Array, symbol: jax.Array, mask: jax.Array) -> jax.Array:
    n = u.shape[-1]
    r_hat = symbol * jnp.fft.rfft2(u) - jnp.where(mask, jnp.fft.rfft2(source), 0)
    return jnp.fft.irfft2(r_hat, s=(n, n)).astype(u.dtype)


def _fields(u, source) -> tuple[jax.Array, jax.Array]:
    u = _checks.check_field(u, "u")
    source = _checks.check_field(source, "source")
    if u.shape[-1] != source.shape[-1]:
        raise ValueError(f"u and source must share the grid, got {u.shape[-2:]} and {source.shape[-2:]}.")
    return u, source


def poisson_residual(
    u: Float[Array, "... n n"],
    source: Float[Array, "... n n"],
    diffusion: Float[Array, "... 2 2"],
    *,
    length: float = 1.0,
) -> Float[Array, "... n n"]:
    """-div(K grad u) - (f - mean f)."""
    length = _checks.check_length(length)
    u, source = _fields(u, source)
    diffusion = _checks.check_trailing(diffusion, (2, 2), "diffusion", "the 2x2 tensor K")
    dtype = jnp.result_type(u, source, diffusion, 0.0)
    n = u.shape[-1]
    symbol = diffusion_symbol(diffusion.astype(dtype), n, length)
    return _residual(u.astype(dtype), source.astype(dtype), symbol, nonzero_mode_mask(n))


def advection_diffusion_residual(
    u: Float[Array, "... n n"],
    source: Float[Array, "... n n"],
    diffusion: Float[Array, "... 2 2"],
    velocity: Float[Array, "... 2"],
    *,
    length: float = 1.0,
) -> Float[Array, "... n n"]:
    """-div(K grad u) + v . grad u - (f - mean f)."""
    length = _checks.check_length(length)
    u, source = _fields(u, source)
    diffusion = _checks.check_trailing(diffusion, (2, 2), "diffusion", "the 2x2 tensor K")
    velocity = _checks.check_trailing(velocity, (2,), "velocity", "(vx, vy)")
    dtype = jnp.result_type(u, source, diffusion, velocity, 0.0)
    n = u.shape[-1]
    symbol = advection_diffusion_symbol(diffusion.astype(dtype), velocity.astype(dtype), n, length)
    return _residual(u.astype(dtype), source.astype(dtype), symbol, nonzero_mode_mask(n))


def helmholtz_residual(
    u: Float[Array, "... n n"],
    source: Float[Array, "... n n"],
    omega: Float[Array, "*batch"],
    *,
    diffusivity: float | Float[Array, "*batch"] = 0.01,
    length: float = 1.0,
) -> Float[Array, "... n n"]:
    """-D lap u - omega u - P f, P dropping the modes where D |k|^2 - omega vanishes."""
    length = _checks.check_length(length)
    u, source = _fields(u, source)
    omega = _checks.check_trailing(omega, (), "omega", "one value per sample")
    dtype = jnp.result_type(u, source, omega, diffusivity, 0.0)
    n = u.shape[-1]
    omega = omega.astype(dtype)
    symbol = helmholtz_symbol(omega, jnp.asarray(diffusivity, dtype), n, length)
    mask = helmholtz_mask(symbol, omega)
    return _residual(u.astype(dtype), source.astype(dtype), symbol, mask)
