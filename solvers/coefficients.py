"""Random PDE coefficients: diffusion tensors, advection strength, Helmholtz frequencies.

* K = scale * R(-t) diag(1, e) R(t), e ~ U(e1, e2), t ~ U(0, 2 pi), R(t) the rotation by t:
  K11 = c^2 + e s^2, K22 = s^2 + e c^2, K12 = K21 = (e - 1) s c with c = cos t, s = sin t.
* Advection-diffusion: K -> (1 - lam) K, v = lam * (cos phi, sin phi) for a target ratio
  r = ||v . grad u|| / ||div(K grad u)||.  By default (the paper's rule) lam comes from a fixed table: the lam
  whose dataset-mean ratio is nearest r (`table_strength`, table made by `python -m solvers.advection_table`);
  as an option lam solves the ratio = r for each sample (`advection_strength`, bisection).
* Helmholtz: omega ~ integer U{o1, ..., o2}.
"""

from __future__ import annotations

import functools
import json
import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float

from solvers.grid import Domain, rfft_weights
from solvers.symbols import advection_symbol, diffusion_symbol, nonzero_mode_mask

__all__ = [
    "rotated_diffusion",
    "draw_diffusion",
    "advection_ratio",
    "advection_strength",
    "AdvectionTable",
    "load_advection_table",
    "table_strength",
]

DIFFUSION_SCALE = 0.01
# Every random number of a sample is drawn in this dtype, whatever the output precision: one key, one problem.
DRAW_DTYPE = jnp.float32
# Bisection steps for lam in [0, LAM_MAX]: 2^-40 is below float64 rounding of lam near 1.
BISECTION_STEPS = 40
LAM_MAX = 1.0 - 1e-6


def rotated_diffusion(
    eigenvalue: Float[Array, "*batch"], angle: Float[Array, "*batch"], scale: float = DIFFUSION_SCALE
) -> Float[Array, "*batch 2 2"]:
    """The paper's diffusion tensor K = scale * R(-t) diag(1, e) R(t), shape [*batch, 2, 2] (e = eigenvalue).

    R(t) = [[cos t, -sin t], [sin t, cos t]] rotates the (x, y) plane counter-clockwise by t, with x the last array
    axis (K11 multiplies d2/dx2).  Entries: K11 = scale (c^2 + e s^2), K22 = scale (s^2 + e c^2),
    K12 = K21 = scale (e - 1) s c, c = cos t, s = sin t.  Eigenvectors: (vx, vy) = (cos t, -sin t) with eigenvalue
    scale and (sin t, cos t) with eigenvalue scale * e.  So t = 0 gives diag(scale, scale * e) (diffusion e times
    stronger along y), and a positive t turns the strong axis from +y clockwise, towards +x.
    """
    eigenvalue, angle = jnp.asarray(eigenvalue), jnp.asarray(angle)
    dtype = jnp.result_type(eigenvalue, angle, 0.0)
    eigenvalue, angle = eigenvalue.astype(dtype), angle.astype(dtype)
    c, s = jnp.cos(angle), jnp.sin(angle)
    k11 = c**2 + eigenvalue * s**2
    k22 = s**2 + eigenvalue * c**2
    k12 = (eigenvalue - 1) * s * c
    return scale * jnp.stack([jnp.stack([k11, k12], -1), jnp.stack([k12, k22], -1)], -2)


def draw_diffusion(key: jax.Array, eigenvalue_range: tuple[float, float], dtype=None) -> Float[Array, "2 2"]:
    """One sample's K with e ~ U(eigenvalue_range), t ~ U(0, 2 pi), in `dtype` (default: JAX's default float).

    The uniforms are drawn in float32 whatever `dtype` is (`DRAW_DTYPE`), so one key gives the same K in float32
    and float64 up to float32 rounding.
    """
    dtype = dtype or jnp.asarray(0.0).dtype
    u = jax.random.uniform(key, (2,), DRAW_DTYPE).astype(dtype)
    lo, hi = eigenvalue_range
    return rotated_diffusion(lo + (hi - lo) * u[0], 2 * jnp.pi * u[1])


def _ratio_terms(source_hat, diffusion, direction, length):
    n = source_hat.shape[-2]
    domain = Domain(n, length)
    a = diffusion_symbol(diffusion, domain)  # |symbol of -div(K grad .)|
    b = advection_symbol(direction, domain)  # symbol of e . grad / i
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


ADVECTION_TABLE_PATH = pathlib.Path(__file__).with_name("advection_table.json")


class AdvectionTable(NamedTuple):
    """lam -> mean advection/diffusion ratio over `samples` problems (length 1), made by solvers.advection_table."""

    lam: np.ndarray
    mean_ratio: np.ndarray
    eigenvalue_range: tuple[float, float]
    resolution: int
    samples: int


@functools.lru_cache(maxsize=1)
def load_advection_table() -> AdvectionTable:
    """The committed table (solvers/advection_table.json)."""
    try:
        data = json.loads(ADVECTION_TABLE_PATH.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{ADVECTION_TABLE_PATH} is missing; make it with `python -m solvers.advection_table` or use "
            "AdvectionDiffusion(strength='bisection')."
        ) from None
    return AdvectionTable(
        lam=np.asarray(data["lambda"], np.float64),
        mean_ratio=np.asarray(data["mean_ratio"], np.float64),
        eigenvalue_range=tuple(data["eigenvalue_range"]),
        resolution=int(data["resolution"]),
        samples=int(data["samples_per_lambda"]),
    )


def table_strength(target_ratio: Float[Array, " b"], *, length: float = 1.0, dtype=None) -> Float[Array, " b"]:
    """The paper's rule: the table's lam whose mean ratio is nearest `target_ratio`, shape [b], in `dtype`.

    The nearest entry is chosen in float32 (`DRAW_DTYPE`, with `target_ratio` cast to it), so float32 and float64
    runs pick the same lam.  The ratio depends on lam and L only through mu L, mu = lam / (1 - lam) (the symbol is
    (1 - lam) / L^2 (a + i mu L b) in L = 1 wavenumbers), so the length-1 table serves any L with mu -> mu / L.
    """
    table = load_advection_table()
    means = jnp.asarray(table.mean_ratio, DRAW_DTYPE)
    index = jnp.argmin(jnp.abs(means - target_ratio.astype(DRAW_DTYPE)[:, None]), axis=-1)
    lam = jnp.asarray(table.lam, dtype)[index]
    if length != 1.0:
        mu = lam / (1 - lam) / length
        lam = mu / (1 + mu)
    return lam
