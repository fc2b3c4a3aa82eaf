"""Input checks of the public solvers, residuals and samplers: what is checked, and where the error goes.

Shape, dtype and kind checks (a field [..., n, n], a tensor [..., 2, 2], batch shapes, a PRNG key) read only
static information, so they always run, eagerly and under jit/vmap/grad, and raise ValueError at once.

Value checks (finite, symmetric, positive definite, positive, a resonant Helmholtz frequency, ...) go through
`require(ok, message, *values)`, which has two channels with one message:
  * concrete inputs (a plain call): a failed check raises ValueError(message) at once;
  * traced inputs (inside jit, vmap, grad): the check is a `jax.experimental.checkify.debug_check`.  It raises
    the same message (as `checkify.JaxRuntimeError`) when the caller wraps its function with
    `checkify.checkify(f, errors=checkify.user_checks)` and throws the returned error (`err.throw()`); without
    checkify the check is dropped and costs nothing.

Batching is strict: a coefficient has exactly the batch shape of the source (one value per problem) or none (one
value for all problems); anything else is an error that says how to write it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

# Relative tolerances in units of the checked array's machine epsilon: rounding of a computed tensor (a rotation
# product, a sum) stays within a few eps of its scale, so 64 eps separates rounding from a real defect in float32
# and in float64 alike.
SYMMETRY_EPS = 64
DEFINITENESS_EPS = 64


def is_concrete(*xs) -> bool:
    """True when every x holds concrete values (none is a tracer under jit/vmap/grad)."""
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


def require(ok, message: str, *values) -> None:
    """Value check: ValueError(message) now for concrete inputs, else a checkify check with the same message.

    `ok` is a boolean scalar (reduce a batch with jnp.all); `message` is a `str.format` template filled with
    `values` (scalars, may be traced).
    """
    if is_concrete(ok, *values):
        if not bool(ok):
            raise ValueError(message.format(*(np.asarray(v).item() for v in values)))
    else:
        checkify.debug_check(jnp.asarray(ok), message, *values)


def float_dtype(*arrays) -> jnp.dtype:
    """The floating dtype of a computation on `arrays` (Python scalars are weak: float32 stays float32)."""
    return jnp.result_type(*arrays, 0.0)


# ---- lengths, resolutions, keys ---------------------------------------------------------------------------------


def check_length(length):
    """A positive finite domain length: a static number (returned as float) or a scalar array (may be traced)."""
    if isinstance(length, bool) or not (isinstance(length, int | float | np.number) or hasattr(length, "shape")):
        raise ValueError(f"length must be a positive finite number or a scalar array, got {length!r}.")
    if np.ndim(length) != 0:
        raise ValueError(
            f"length must be a scalar (one domain for all problems), got shape {np.shape(length)}; to solve for "
            "several lengths, jax.vmap over the length (see solvers.grid.Domain)."
        )
    if is_concrete(length):
        value = float(length)
        if math.isfinite(value) and value > 0:
            return value
        raise ValueError(f"length must be a positive finite number, got {value}.")
    length = jnp.asarray(length)
    if not jnp.issubdtype(length.dtype, jnp.floating):
        raise ValueError(f"a traced length must be a float array, got dtype {length.dtype}.")
    require(jnp.isfinite(length) & (length > 0), "length must be a positive finite number, got {}.", length)
    return length


def check_even_resolution(n: int, name: str = "resolution") -> int:
    """The grid size must be an even integer >= 4 (the rfft grid and Nyquist convention need it)."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise ValueError(f"{name} must be an int, got {n!r}.")
    if n < 4 or n % 2:
        raise ValueError(f"{name} must be an even integer >= 4, got {n}; use e.g. 64 or 128.")
    return int(n)


def check_key(key) -> jax.Array:
    """One PRNG key: a typed key array of shape () (`jax.random.key`) or a legacy uint32 [2] (`PRNGKey`)."""
    fix = "pass one key made by jax.random.key(seed) (or jax.random.PRNGKey(seed))"
    if not hasattr(key, "dtype") or not hasattr(key, "shape"):
        raise ValueError(f"key must be a JAX PRNG key, got {type(key).__name__} {key!r}; {fix}.")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(
                f"key must be a single PRNG key, got a key array of shape {key.shape}; {fix}, or "
                "jax.vmap the sampling over the keys."
            )
        return key
    if key.dtype == jnp.uint32 and key.shape == (2,):
        return key
    raise ValueError(f"key must be a JAX PRNG key, got an array of dtype {key.dtype} and shape {key.shape}; {fix}.")


# ---- fields and coefficients ------------------------------------------------------------------------------------


def check_field(x, name: str, *, periodic: bool = True) -> jax.Array:
    """A real field [..., n, n] on the square grid: n even and >= 4 (periodic), or any n >= 3 (the interior nodes
    of the Dirichlet grid, `solvers.grid`)."""
    x = jnp.asarray(x)
    if jnp.iscomplexobj(x):
        raise ValueError(f"{name} must be real-valued, got dtype {x.dtype}.")
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have shape [..., n, n] (a field on the square grid), got shape "
            f"{x.shape}; add the missing grid axes."
        )
    ny, nx = x.shape[-2:]
    square = "the periodic square [0, L)^2" if periodic else "the interior nodes of the square [0, L]^2"
    if ny != nx:
        raise ValueError(
            f"{name} must be square [..., n, n] on {square}, got {ny} x {nx}; resample it to equal resolution "
            "along y and x."
        )
    if periodic and (nx < 4 or nx % 2):
        raise ValueError(f"{name} must have an even resolution n >= 4, got n = {nx}; use e.g. 64 or 128.")
    if not periodic and nx < 3:
        raise ValueError(f"{name} must have n >= 3 interior nodes per side, got n = {nx}; use e.g. 63 or 128.")
    return x


def check_coefficient(x, trailing: tuple[int, ...], name: str, meaning: str, source: jax.Array) -> jax.Array:
    """A real coefficient [*batch, *trailing] whose batch shape is the source's batch shape or ()."""
    x = jnp.asarray(x)
    if jnp.iscomplexobj(x):
        raise ValueError(f"{name} must be real-valued, got dtype {x.dtype}.")
    k = len(trailing)
    want = "[..., " + ", ".join(map(str, trailing)) + "]" if k else "[...]"
    if x.ndim < k or tuple(x.shape[x.ndim - k :]) != trailing:
        hint = ""
        if k and x.ndim > k and tuple(x.shape[:k]) == trailing:
            hint = f"; batch axes come first: jnp.moveaxis({name}, {tuple(range(k, x.ndim))}, 0)"
        raise ValueError(f"{name} must have shape {want} ({meaning}), got shape {x.shape}{hint}.")
    batch = tuple(x.shape[: x.ndim - k])
    source_batch = tuple(source.shape[:-2])
    if batch and batch != source_batch:
        if not source_batch:
            fix = (
                f"to solve one source for each of several {name} values, broadcast the source "
                f"(jnp.broadcast_to(source, {batch} + source.shape)) or jax.vmap with in_axes=None for the source"
            )
        elif math.prod(batch) == math.prod(source_batch):
            fix = f"reshape it to the source's batch shape: {name}.reshape({source_batch + trailing})"
        else:
            fix = "give one value per problem, or one value for all problems; for other layouts use jax.vmap"
        raise ValueError(
            f"{name} must have the source's batch shape {source_batch} or none (shape {want}), got batch shape "
            f"{batch}; {fix}."
        )
    return x


def check_not_volume(source: jax.Array, coefficient_batches: Sequence[tuple[int, ...]]) -> None:
    """Refuse an [n, n, n] source with unbatched coefficients: a 3-D field the 2-D solvers would slice silently."""
    if source.ndim == 3 and len(set(source.shape)) == 1 and not any(coefficient_batches):
        n = source.shape[0]
        raise ValueError(
            f"source has shape {source.shape}: the solvers are 2-D (periodic square, [..., n, n]), so a 3-D field "
            f"cannot be solved. If it is a batch of {n} 2-D sources, give a coefficient that batch shape, e.g. "
            f"jnp.broadcast_to(diffusion, ({n}, 2, 2)) or jnp.full(({n},), omega)."
        )


def check_same_grid(u: jax.Array, source: jax.Array) -> None:
    if u.shape != source.shape:
        raise ValueError(
            f"u and source must share the grid and the batch shape, got {u.shape} and {source.shape}; pass the "
            "solution of this source (same shape)."
        )


# ---- values -----------------------------------------------------------------------------------------------------


def _xp(x):
    """numpy for concrete values (a plain call: no op-by-op dispatch), jax.numpy for tracers."""
    return np if is_concrete(x) else jnp


def check_finite(x: jax.Array, name: str) -> None:
    xp = _xp(x)
    require(xp.all(xp.isfinite(x)), f"{name} contains NaN or Inf; pass finite values.")


def check_positive(x: jax.Array, name: str) -> None:
    check_finite(x, name)
    xp = _xp(x)
    require(xp.all(x > 0), f"{name} must be > 0, got min {{:.3g}}.", xp.min(x))


def check_diffusion_values(diffusion: jax.Array) -> None:
    """K symmetric and positive definite, both relative to K's scale and dtype (see `symmetry_and_definiteness`)."""
    check_finite(diffusion, "diffusion")
    xp = _xp(diffusion)
    asymmetry, min_ratio, eps = symmetry_and_definiteness(diffusion)
    require(
        xp.max(asymmetry) <= SYMMETRY_EPS * eps,
        f"diffusion must be symmetric (K12 == K21 to {SYMMETRY_EPS} eps of its scale), got max |K12 - K21| / "
        "max|K| = {:.3g}; pass 0.5 * (K + K^T).",
        xp.max(asymmetry),
    )
    require(
        xp.min(min_ratio) > DEFINITENESS_EPS * eps,
        "diffusion must be positive definite: its smallest eigenvalue must exceed "
        f"{DEFINITENESS_EPS} eps = {DEFINITENESS_EPS * eps:.3g} ({jnp.dtype(diffusion.dtype).name}) times its "
        "largest, got min lambda_min / lambda_max = {:.3g}. Use K = c R(-t) diag(1, e) R(t) with c, e > 0 "
        "(solvers.rotated_diffusion).",
        xp.min(min_ratio),
    )


def symmetry_and_definiteness(diffusion: jax.Array) -> tuple[jax.Array, jax.Array, float]:
    """(|K12 - K21| / max|K|, lambda_min / lambda_max of the symmetric part, eps of K's float dtype).

    lambda_max = tr/2 + sqrt(((K11 - K22)/2)^2 + K12^2) has no cancellation and lambda_min = det / lambda_max,
    so the ratio is accurate to a few eps; a K that is singular before rounding (e = 0 in K = c R diag(1, e) R^T)
    gives |ratio| <= ~4 eps and is refused.  The ratio is -inf unless lambda_max > 0.
    """
    dtype = float_dtype(diffusion)
    xp = _xp(diffusion)
    k = xp.asarray(diffusion).astype(dtype)
    k11, k22 = k[..., 0, 0], k[..., 1, 1]
    k12 = 0.5 * (k[..., 0, 1] + k[..., 1, 0])
    scale = xp.max(xp.abs(k), axis=(-2, -1))
    asymmetry = xp.abs(k[..., 0, 1] - k[..., 1, 0]) / xp.where(scale > 0, scale, 1)
    lam_max = 0.5 * (k11 + k22) + xp.hypot(0.5 * (k11 - k22), k12)
    det = k11 * k22 - k12 * k12
    positive = lam_max > 0
    safe = xp.where(positive, lam_max, 1)
    ratio = xp.where(positive, det / (safe * safe), -np.inf)
    return asymmetry, ratio, float(jnp.finfo(dtype).eps)
