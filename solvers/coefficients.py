"""Random PDE coefficients: diffusion tensors, advection strength, Helmholtz frequencies.

* K = scale * R(-t) diag(1, e) R(t), e ~ U(e1, e2), t ~ U(0, 2 pi), R(t) the rotation by t:
  K11 = c^2 + e s^2, K22 = s^2 + e c^2, K12 = K21 = (e - 1) s c with c = cos t, s = sin t.
* Advection-diffusion: K -> (1 - lam) K, v = lam * (cos phi, sin phi); lam in [0, 1) solves
  ||v . grad u|| / ||div(K grad u)|| = r for the target ratio r (see `advection_strength`).
* Helmholtz: omega ~ integer U{o1, ..., o2}.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Complex, Float

from solvers.grid import rfft_weights
from solvers.symbols import advection_symbol, diffusion_symbol, nonzero_mode_mask

__all__ = ["rotated_diffusion", "draw_diffusion", "advection_ratio", "advection_strength"]

DIFFUSION_SCALE = 0.01
# Bisection steps for lam in [0, LAM_MAX]: 2^-40 is below float64 rounding of lam near 1.
BISECTION_STEPS = 40
LAM_MAX = 1.0 - 1e-6


def rotated_diffusion(
    eigenvalue: Float[Array, "*batch"], angle: Float[Array, "*batch"], scale: float = DIFFUSION_SCALE
) -> Float[Array, "... 2 2"]:
    """K = scale * R(-angle) diag(1, eigenvalue) R(angle), shape [..., 2, 2]."""
    c, s = jnp.cos(angle), jnp.sin(angle)
    k11 = c**2 + eigenvalue * s**2
    k22 = s**2 + eigenvalue * c**2
    k12 = (eigenvalue - 1) * s * c
    return scale * jnp.stack([jnp.stack([k11, k12], -1), jnp.stack([k12, k22], -1)], -2)


def draw_diffusion(key: jax.Array, eigenvalue_range: tuple[float, float], dtype=None) -> Float[Array, "2 2"]:
    """One sample's K with e ~ U(eigenvalue_range), t ~ U(0, 2 pi)."""
    dtype = dtype or jnp.asarray(0.0).dtype
    u = jax.random.uniform(key, (2,), dtype)
    lo, hi = eigenvalue_range
    return rotated_diffusion(lo + (hi - lo) * u[0], 2 * jnp.pi * u[1])


def _ratio_terms(source_hat, diffusion, direction, length):
    n = source_hat.shape[-2]
    a = diffusion_symbol(diffusion, n, length)  # |symbol of -div(K grad .)|
    b = advection_symbol(direction, n, length)  # symbol of e . grad / i
    c = jnp.where(nonzero_mode_mask(n), rfft_weights(n, a.dtype) * jnp.abs(source_hat) ** 2, 0)
    return a, b, c


def _ratio_squared(mu, a, b, c):
    # u_hat = f_hat / ((1 - lam) (a + i mu b)), mu = lam / (1 - lam); the (1 - lam) cancels:
    # R^2 = mu^2 sum c b^2 / (a^2 + mu^2 b^2) / sum c a^2 / (a^2 + mu^2 b^2), increasing in mu.
    mu = mu[..., None, None]
    d = jnp.where(c > 0, a**2 + mu**2 * b**2, 1)
    num = jnp.sum(c * b**2 / d, axis=(-2, -1))
    den = jnp.sum(c * a**2 / d, axis=(-2, -1))
    return mu[..., 0, 0] ** 2 * num / den


def advection_ratio(
    source_hat: Complex[Array, "b n m"],
    diffusion: Float[Array, "b 2 2"],
    direction: Float[Array, "b 2"],
    lam: Float[Array, " b"],
    *,
    length: float = 1.0,
) -> Float[Array, " b"]:
    """||v . grad u|| / ||div(K grad u)|| for K = (1 - lam) diffusion, v = lam direction.

    Computed in Fourier space (Parseval) from rfft2(f); u is the zero-mean solution.
    """
    a, b, c = _ratio_terms(source_hat, diffusion, direction, length)
    return jnp.sqrt(_ratio_squared(lam / (1 - lam), a, b, c))


def advection_strength(
    source_hat: Complex[Array, "b n m"],
    diffusion: Float[Array, "b 2 2"],
    direction: Float[Array, "b 2"],
    target_ratio: Float[Array, " b"],
    *,
    length: float = 1.0,
) -> Float[Array, " b"]:
    """lam in [0, 1) with advection_ratio(..., lam) = target_ratio, by vectorised bisection.

    The ratio increases monotonically from 0 at lam = 0; BISECTION_STEPS halvings of [0, LAM_MAX]
    run for the whole batch at once on the device.  Targets beyond the ratio reachable at LAM_MAX
    (nearly pure advection) give lam = LAM_MAX.
    """
    a, b, c = _ratio_terms(source_hat, diffusion, direction, length)
    target_sq = target_ratio**2

    def step(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        too_weak = _ratio_squared(mid / (1 - mid), a, b, c) < target_sq
        return jnp.where(too_weak, mid, lo), jnp.where(too_weak, hi, mid)

    lo = jnp.zeros_like(target_ratio)
    hi = jnp.full_like(target_ratio, LAM_MAX)
    lo, hi = jax.lax.fori_loop(0, BISECTION_STEPS, step, (lo, hi))
    return 0.5 * (lo + hi)
