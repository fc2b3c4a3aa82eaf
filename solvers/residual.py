"""Spectral residuals A u - P f of the three PDEs, for checking solutions.

A is applied exactly in Fourier space (same symbols as the solvers).  P drops the modes the solvers drop: the mean
for Poisson and advection-diffusion; for Helmholtz the resonant modes (see `solvers.symbols`) when `projected`
(the default), nothing when `projected=False`.  So for the solvers' output the residual is zero to rounding, and
the unprojected Helmholtz residual is the part of f the solver could not match.
Shapes: u and source [*batch, n, n] (the same shape); coefficients as in `solvers.solve`; result [*batch, n, n].
Inputs are checked as in the solvers (`solvers._checks`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from solvers import _checks
from solvers.grid import Domain
from solvers.solve import compiled
from solvers.symbols import (
    advection_diffusion_symbol,
    diffusion_symbol,
    helmholtz_mask,
    helmholtz_symbol,
    nonzero_mode_mask,
)

__all__ = ["poisson_residual", "advection_diffusion_residual", "helmholtz_residual"]


def _residual(u: jax.Array, source: jax.Array, symbol: jax.Array, mask) -> jax.Array:
    n = u.shape[-1]
    f_hat = jnp.fft.rfft2(source)
    if mask is not None:
        f_hat = jnp.where(mask, f_hat, 0)
    return jnp.fft.irfft2(symbol * jnp.fft.rfft2(u) - f_hat, s=(n, n))


@compiled
def _poisson_residual(u, source, diffusion, *, domain):
    return _residual(u, source, diffusion_symbol(diffusion, domain), nonzero_mode_mask(domain.n))


@compiled
def _advection_diffusion_residual(u, source, diffusion, velocity, *, domain):
    symbol = advection_diffusion_symbol(diffusion, velocity, domain)
    return _residual(u, source, symbol, nonzero_mode_mask(domain.n))


@compiled
def _helmholtz_residual_projected(u, source, omega, diffusivity, *, domain):
    mask = helmholtz_mask(omega, diffusivity, domain)
    return _residual(u, source, helmholtz_symbol(omega, diffusivity, domain), mask)


@compiled
def _helmholtz_residual_full(u, source, omega, diffusivity, *, domain):
    return _residual(u, source, helmholtz_symbol(omega, diffusivity, domain), None)


def _fields(u, source) -> tuple[jax.Array, jax.Array]:
    u = _checks.check_field(u, "u")
    source = _checks.check_field(source, "source")
    _checks.check_same_grid(u, source)
    return u, source


def _domain(u: jax.Array, length, dtype) -> Domain:
    length = _checks.check_length(length)
    return Domain(u.shape[-1], length if isinstance(length, float) else length.astype(dtype))


def _diffusion(diffusion, source) -> jax.Array:
    diffusion = _checks.check_coefficient(diffusion, (2, 2), "diffusion", "the 2x2 tensor K, K11 along x", source)
    _checks.check_diffusion_values(diffusion)
    return diffusion


def poisson_residual(
    u: Float[Array, "*batch n n"],
    source: Float[Array, "*batch n n"],
    diffusion: Float[Array, "*#batch 2 2"],
    *,
    length: float | Float[Array, ""] = 1.0,
) -> Float[Array, "*batch n n"]:
    """-div(K grad u) - (f - mean f)."""
    u, source = _fields(u, source)
    diffusion = _diffusion(diffusion, source)
    _checks.check_not_volume(source, [diffusion.shape[:-2]])
    dtype = _checks.float_dtype(u, source, diffusion)
    return _poisson_residual(
        u.astype(dtype), source.astype(dtype), diffusion.astype(dtype), domain=_domain(u, length, dtype)
    )


def advection_diffusion_residual(
    u: Float[Array, "*batch n n"],
    source: Float[Array, "*batch n n"],
    diffusion: Float[Array, "*#batch 2 2"],
    velocity: Float[Array, "*#batch 2"],
    *,
    length: float | Float[Array, ""] = 1.0,
) -> Float[Array, "*batch n n"]:
    """-div(K grad u) + v . grad u - (f - mean f)."""
    u, source = _fields(u, source)
    diffusion = _diffusion(diffusion, source)
    velocity = _checks.check_coefficient(velocity, (2,), "velocity", "(vx, vy)", source)
    _checks.check_not_volume(source, [diffusion.shape[:-2], velocity.shape[:-1]])
    _checks.check_finite(velocity, "velocity")
    dtype = _checks.float_dtype(u, source, diffusion, velocity)
    domain = _domain(u, length, dtype)
    coefficients = diffusion.astype(dtype), velocity.astype(dtype)
    return _advection_diffusion_residual(u.astype(dtype), source.astype(dtype), *coefficients, domain=domain)


def helmholtz_residual(
    u: Float[Array, "*batch n n"],
    source: Float[Array, "*batch n n"],
    omega: Float[Array, "*#batch"],
    *,
    diffusivity: float | Float[Array, "*#batch"] = 0.01,
    length: float | Float[Array, ""] = 1.0,
    projected: bool = True,
) -> Float[Array, "*batch n n"]:
    """-D lap u - omega u - P f; P drops the resonant modes when `projected`, else P = identity."""
    u, source = _fields(u, source)
    omega = _checks.check_coefficient(omega, (), "omega", "one value per problem", source)
    diffusivity = _checks.check_coefficient(diffusivity, (), "diffusivity", "one value per problem", source)
    _checks.check_not_volume(source, [omega.shape, diffusivity.shape])
    _checks.check_finite(omega, "omega")
    _checks.check_positive(diffusivity, "diffusivity")
    dtype = _checks.float_dtype(u, source, omega, diffusivity)
    domain = _domain(u, length, dtype)
    fields = u.astype(dtype), source.astype(dtype)
    coefficients = omega.astype(dtype), diffusivity.astype(dtype)
    if projected:
        return _helmholtz_residual_projected(*fields, *coefficients, domain=domain)
    return _helmholtz_residual_full(*fields, *coefficients, domain=domain)
