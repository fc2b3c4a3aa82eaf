"""Fourier symbols of the three operators on the rfft2 grid (convention in `solvers.grid`).

For u(x) = sum_k u_hat(k) exp(i k . x) each operator A acts as A u <-> symbol(k) * u_hat(k):

    -div(K grad u)              <->  K11 kx^2 + (K12 + K21) kx ky + K22 ky^2
    -div(K grad u) + v . grad u <->  the above + i (vx kx + vy ky)
    -D lap u - omega u          <->  D (kx^2 + ky^2) - omega

Coefficient arrays broadcast over leading batch axes; the result is [..., n, n // 2 + 1].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Complex, Float

from solvers.grid import odd_wavenumbers, wavenumbers


def diffusion_symbol(diffusion: Float[Array, "... 2 2"], n: int, length: float) -> Float[Array, "... n m"]:
    """Symbol of -div(K grad u); the mixed term uses odd wavenumbers (Nyquist -> 0)."""
    dtype = diffusion.dtype
    ky, kx = wavenumbers(n, length, dtype)
    kyo, kxo = odd_wavenumbers(n, length, dtype)
    k = diffusion[..., None, None, :, :]
    return k[..., 0, 0] * kx**2 + (k[..., 0, 1] + k[..., 1, 0]) * (kxo * kyo) + k[..., 1, 1] * ky**2


def advection_symbol(velocity: Float[Array, "... 2"], n: int, length: float) -> Float[Array, "*batch"]:
    """Imaginary part of the symbol of v . grad u: vx kx + vy ky with odd wavenumbers."""
    kyo, kxo = odd_wavenumbers(n, length, velocity.dtype)
    v = velocity[..., None, None, :]
    return v[..., 0] * kxo + v[..., 1] * kyo


def advection_diffusion_symbol(
    diffusion: Float[Array, "... 2 2"], velocity: Float[Array, "... 2"], n: int, length: float
) -> Complex[Array, "... n m"]:
    """Symbol of -div(K grad u) + v . grad u."""
    return jax.lax.complex(
        *jnp.broadcast_arrays(diffusion_symbol(diffusion, n, length), advection_symbol(velocity, n, length))
    )


def helmholtz_symbol(
    omega: Float[Array, "*batch"], diffusivity: Float[Array, "*batch"], n: int, length: float
) -> Float[Array, "... n m"]:
    """Symbol of -D lap u - omega u."""
    ky, kx = wavenumbers(n, length, omega.dtype)
    return diffusivity[..., None, None] * (kx**2 + ky**2) - omega[..., None, None]


def helmholtz_mask(symbol: Float[Array, "... n m"], omega: Float[Array, "*batch"]) -> jax.Array:
    """True where the Helmholtz symbol is nonzero (relative to its two terms' size).

    A mode counts as resonant when |D k^2 - omega| <= 64 eps (D k^2 + |omega|): rounding of the
    two terms cannot tell such a mode from an exact zero of the symbol.
    """
    eps = jnp.finfo(symbol.dtype).eps
    size = jnp.abs(symbol + omega[..., None, None]) + jnp.abs(omega[..., None, None])
    return jnp.abs(symbol) > 64 * eps * size


def nonzero_mode_mask(n: int) -> jax.Array:
    """True everywhere except the k = 0 (mean) mode."""
    return jnp.ones((n, n // 2 + 1), bool).at[0, 0].set(False)
