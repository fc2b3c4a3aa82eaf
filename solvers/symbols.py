"""Fourier symbols of the three operators on the rfft2 grid (convention in `solvers.grid`).

For u(x) = sum_k u_hat(k) exp(i k . x) each operator A acts as A u <-> symbol(k) * u_hat(k):

    -div(K grad u)              <->  K11 kx^2 + (K12 + K21) kx ky + K22 ky^2
    -div(K grad u) + v . grad u <->  the above + i (vx kx + vy ky)
    -D lap u - omega u          <->  D (kx^2 + ky^2) - omega

K11 goes with x (the last array axis), K22 with y.  Coefficient arrays broadcast over leading batch axes; the
result is [..., n, n // 2 + 1].

Helmholtz resonance.  The symbol D |k|^2 - omega vanishes at omega = D (2 pi / L)^2 q for q = my^2 + mx^2 a sum of
two squares (q = 0, 1, 2, 4, 5, 8, 9, 10, 13, 16, 17, 18, 20, 25, ...); at D = 0.01, L = 1 these omegas are
0, 0.3948, 0.7896, 1.579, 1.974, 3.158, 3.553, 3.948, 5.132, 6.317, 6.711, 7.106, 7.896, 9.870, ...
(`resonant_omegas`).  Near one the problem is ill-conditioned: the mode is amplified by 1 / |D |k|^2 - omega|.  The
rule, the same in float32 and float64: a mode is *resonant* when

    |D |k|^2 - omega| <= RESONANCE_RTOL * (D |k|^2 + |omega|),     RESONANCE_RTOL = 1e-4,

a band 1000 times wider than float32 rounding of the symbol (a few 1e-7 of its terms), so both precisions find
the same resonant modes (up to omegas within rounding of the band's edge).  Just outside the band, float32
rounding of the symbol changes a mode of u by at most a few 1e-7 / 1e-4 ~ 0.5 %; float64 by ~1e-11.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Complex, Float

from solvers.grid import Domain, mode_numbers, rfft_weights

__all__ = [
    "RESONANCE_RTOL",
    "diffusion_symbol",
    "advection_symbol",
    "advection_diffusion_symbol",
    "helmholtz_symbol",
    "helmholtz_mask",
    "resonant_fraction",
    "resonant_omegas",
    "nearest_resonance",
    "nonzero_mode_mask",
]

RESONANCE_RTOL = 1e-4


def diffusion_symbol(diffusion: Float[Array, "... 2 2"], domain: Domain) -> Float[Array, "... n m"]:
    """Symbol of -div(K grad u); the mixed term uses odd wavenumbers (Nyquist -> 0)."""
    dtype = diffusion.dtype
    ky, kx = domain.wavenumbers(dtype)
    kyo, kxo = domain.odd_wavenumbers(dtype)
    k = diffusion[..., None, None, :, :]
    return k[..., 0, 0] * kx**2 + (k[..., 0, 1] + k[..., 1, 0]) * (kxo * kyo) + k[..., 1, 1] * ky**2


def advection_symbol(velocity: Float[Array, "... 2"], domain: Domain) -> Float[Array, "... n m"]:
    """Imaginary part of the symbol of v . grad u: vx kx + vy ky with odd wavenumbers."""
    kyo, kxo = domain.odd_wavenumbers(velocity.dtype)
    v = velocity[..., None, None, :]
    return v[..., 0] * kxo + v[..., 1] * kyo


def advection_diffusion_symbol(
    diffusion: Float[Array, "... 2 2"], velocity: Float[Array, "... 2"], domain: Domain
) -> Complex[Array, "... n m"]:
    """Symbol of -div(K grad u) + v . grad u."""
    return jax.lax.complex(
        *jnp.broadcast_arrays(diffusion_symbol(diffusion, domain), advection_symbol(velocity, domain))
    )


def _diffusive_part(diffusivity: jax.Array, domain: Domain) -> jax.Array:
    ky, kx = domain.wavenumbers(diffusivity.dtype)
    return diffusivity[..., None, None] * (kx**2 + ky**2)


def helmholtz_symbol(
    omega: Float[Array, "*batch"], diffusivity: Float[Array, "*batch"], domain: Domain
) -> Float[Array, "... n m"]:
    """Symbol of -D lap u - omega u."""
    return _diffusive_part(diffusivity, domain) - omega[..., None, None]


def helmholtz_mask(
    omega: Float[Array, "*batch"], diffusivity: Float[Array, "*batch"], domain: Domain
) -> Bool[Array, "... n m"]:
    """True where the Helmholtz mode is not resonant (the rule in the module docstring)."""
    dk2 = _diffusive_part(diffusivity, domain)
    omega = omega[..., None, None]
    return jnp.abs(dk2 - omega) > RESONANCE_RTOL * (dk2 + jnp.abs(omega))


def resonant_fraction(source_hat: Complex[Array, "... n m"], mask: Bool[Array, "... n m"]) -> Float[Array, "*batch"]:
    """||P f|| / ||f||, P keeping the resonant modes (mask False) of f given by its rfft2 (Parseval); 0 for f = 0."""
    n = source_hat.shape[-2]
    power = rfft_weights(n, source_hat.real.dtype) * jnp.abs(source_hat) ** 2
    total = jnp.sum(power, axis=(-2, -1))
    dropped = jnp.sum(jnp.where(mask, 0, power), axis=(-2, -1))
    return jnp.sqrt(dropped / jnp.where(total > 0, total, 1))


def resonant_omegas(count: int, *, diffusivity: float = 0.01, length: float = 1.0) -> np.ndarray:
    """The `count` smallest omegas >= 0 at which -D lap - omega is singular: D (2 pi / L)^2 q, q = my^2 + mx^2."""
    q_max = 1
    while True:
        m = np.arange(-int(np.sqrt(q_max)) - 1, int(np.sqrt(q_max)) + 2)
        q = np.unique((m[:, None] ** 2 + m[None, :] ** 2).ravel())
        q = q[q <= q_max]
        if q.size >= count:
            return diffusivity * (2 * np.pi / length) ** 2 * q[:count].astype(np.float64)
        q_max *= 2


def nonzero_mode_mask(n: int) -> Bool[Array, "n m"]:
    """True everywhere except the k = 0 (mean) mode."""
    return jnp.ones((n, n // 2 + 1), bool).at[0, 0].set(False)


def nearest_resonance(
    omega: Float[Array, "*batch"], diffusivity: Float[Array, "*batch"], domain: Domain
) -> tuple[Float[Array, "*batch"], jax.Array]:
    """(smallest relative gap |D |k|^2 - omega| / (D |k|^2 + |omega|) over the grid, |m|^2 of that mode)."""
    dk2 = _diffusive_part(diffusivity, domain)
    omega = omega[..., None, None]
    size = dk2 + jnp.abs(omega)
    gap = jnp.abs(dk2 - omega) / jnp.where(size > 0, size, 1)
    flat = gap.reshape(gap.shape[:-2] + (-1,))
    my, mx = mode_numbers(domain.n)
    q = jnp.asarray((my**2 + mx**2).astype(np.int32)).reshape(-1)
    return jnp.min(flat, axis=-1), jnp.take(q, jnp.argmin(flat, axis=-1))
