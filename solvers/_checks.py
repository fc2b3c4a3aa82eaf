"""Input checks for the public solver functions: clear ValueErrors at the boundary.

Shapes are always static under jit/vmap, so shape checks always run.  Value checks (symmetry,
positive definiteness, finiteness) run only when the values are concrete, i.e. not under tracing,
so that jit, vmap and grad keep working.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

_BATCH_HINT = "use jax.vmap or add/align leading batch axes so that they broadcast"


def is_concrete(x) -> bool:
    """True when x holds concrete values (not a tracer under jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def check_length(length) -> float:
    """The domain length must be a static positive finite number."""
    if is_concrete(length) and np.ndim(length) == 0:
        value = float(length)
        if math.isfinite(value) and value > 0:
            return value
        raise ValueError(f"length must be a positive finite number, got {length!r}.")
    raise ValueError(
        f"length must be a static Python float (it sets the wavenumbers), got {length!r}; "
        "pass it as a keyword constant, not a traced array."
    )


def check_even_resolution(n: int, name: str = "resolution") -> int:
    """The grid size must be an even integer >= 4 (the rfft grid and Nyquist convention need it)."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise ValueError(f"{name} must be an int, got {n!r}.")
    if n < 4 or n % 2:
        raise ValueError(f"{name} must be an even integer >= 4, got {n}; use e.g. 64 or 128.")
    return int(n)


def check_field(x, name: str) -> jax.Array:
    """A real field [..., n, n] on the square grid with n even and >= 4."""
    x = jnp.asarray(x)
    if jnp.iscomplexobj(x):
        raise ValueError(f"{name} must be real-valued, got dtype {x.dtype}.")
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have shape [..., n, n] (a field on the square grid), got shape "
            f"{x.shape}; add the missing grid axes."
        )
    ny, nx = x.shape[-2:]
    if ny != nx:
        raise ValueError(
            f"{name} must be square [..., n, n] on the periodic square [0, L)^2, got "
            f"{ny} x {nx}; resample it to equal resolution along y and x."
        )
    if nx < 4 or nx % 2:
        raise ValueError(f"{name} must have an even resolution n >= 4, got n = {nx}; use e.g. 64 or 128.")
    return x


def check_trailing(x, trailing: tuple[int, ...], name: str, meaning: str) -> jax.Array:
    """An array whose last axes are `trailing` (e.g. (2, 2) for a tensor)."""
    x = jnp.asarray(x)
    if jnp.iscomplexobj(x):
        raise ValueError(f"{name} must be real-valued, got dtype {x.dtype}.")
    k = len(trailing)
    if x.ndim < k or tuple(x.shape[x.ndim - k :]) != trailing:
        want = "[..., " + ", ".join(map(str, trailing)) + "]" if k else "[...]"
        raise ValueError(f"{name} must have shape {want} ({meaning}), got shape {x.shape}.")
    return x


def check_batch(field_name: str, field_shape, other_name: str, other_batch) -> tuple[int, ...]:
    """Leading (batch) axes of a field and a coefficient must broadcast; returns the result."""
    field_batch = tuple(field_shape[:-2])
    try:
        return tuple(np.broadcast_shapes(field_batch, tuple(other_batch)))
    except ValueError:
        raise ValueError(
            f"batch axes of {field_name} {field_batch} and {other_name} {tuple(other_batch)} "
            f"do not broadcast; {_BATCH_HINT}."
        ) from None


def check_finite(x, name: str) -> None:
    if is_concrete(x) and not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(f"{name} contains NaN or Inf; pass finite values.")


def check_diffusion_values(diffusion) -> None:
    """K must be symmetric positive definite (checked only for concrete values)."""
    if not is_concrete(diffusion):
        return
    check_finite(diffusion, "diffusion")
    k = np.asarray(diffusion, dtype=np.float64)
    scale = np.max(np.abs(k), axis=(-2, -1))
    asym = np.abs(k[..., 0, 1] - k[..., 1, 0])
    if np.any(asym > 1e-6 * scale):
        raise ValueError(
            "diffusion must be symmetric (K12 == K21), got max |K12 - K21| = "
            f"{float(np.max(asym)):.3g}; pass 0.5 * (K + K^T)."
        )
    det = k[..., 0, 0] * k[..., 1, 1] - k[..., 0, 1] * k[..., 1, 0]
    if np.any(k[..., 0, 0] <= 0) or np.any(det <= 0):
        raise ValueError(
            "diffusion must be positive definite (K11 > 0 and det K > 0); got min K11 = "
            f"{float(np.min(k[..., 0, 0])):.3g}, min det K = {float(np.min(det)):.3g}. "
            "Use K = c * R(-t) diag(1, e) R(t) with c, e > 0."
        )


def check_positive(x, name: str) -> None:
    if is_concrete(x):
        check_finite(x, name)
        if np.any(np.asarray(x) <= 0):
            raise ValueError(f"{name} must be > 0, got min {float(np.min(np.asarray(x))):.3g}.")
