"""Darcy flow -div(a grad u) = f: second-order finite volumes solved by preconditioned conjugate gradients.

The discretisation (5-point flux form, harmonic-mean faces) is `solvers.finite_volume`; the two grids
(bc="dirichlet": interior nodes x_i = (i + 1) L / (n + 1), u = 0 on the boundary; bc="periodic": x_i = i L / n,
zero-mean u) are stated in `solvers.grid`.  Arrays are [..., y, x].

The linear system A u = f is solved on the device by preconditioned conjugate gradients (`lax.while_loop`, from
u = 0; jit- and vmap-friendly; under vmap every problem stops at its own tol).  The preconditioner is the
constant-coefficient solve of the same 5-point operator, `finite_volume.laplacian_solve` (L5^-1: a sine transform
for Dirichlet, an FFT for periodic), scaled by a:
  * preconditioner="mean" (default): M = a_ref L5, a_ref = exp(mean(log a)), the geometric mean of the problem's
    a.  Since min(a) L5 <= A <= max(a) L5 (every face value lies between node values), M^-1 A has condition number
    <= max(a) / min(a) whatever the resolution: the 12 / 3 threshold fields take 13-14 iterations to tol 1e-5
    (float32) and 23-24 to 1e-10 (float64) at 128 x 128.  PCG's iterates do not change when M is scaled, so the
    choice of a_ref only keeps M^-1 r in u's units;
  * preconditioner="local": M = D^1/2 L5 D^1/2, D = diag(a) (for constant a the same as "mean").  For smooth a,
    -div(a grad u) = a^1/2 (-lap + q) a^1/2 u with q = lap(a^1/2) / a^1/2, so M^-1 A is close to the identity:
    the log-normal fields of `solvers.permeability` take 6-12 iterations at 128 x 128 where "mean" takes 20-280
    (contrasts 10-1300).  Across jumps it is poor (the threshold fields: 45-100 iterations).

The solve is wrapped in `jax.lax.custom_linear_solve` (A is symmetric): derivatives with respect to a and f are
defined implicitly, du = A^-1 (df - dA u), so a gradient costs one more solve (the adjoint, the same PCG) and
nothing is backpropagated through the iterations.  The preconditioner is not differentiated (it only steers CG).
For periodic problems the solve projects its right-hand side on the zero-mean fields, so it is A's
pseudo-inverse, and an adjoint of any mean is solvable.

Stopping rule: ||r_k||_2 <= tol ||b||_2 with r_k CG's recursively updated residual and b the right-hand side
(f, minus its mean for periodic); the default tol is DEFAULT_TOL[dtype]; `DarcyInfo` reports the iterations,
||r_k|| / ||b|| and whether tol was reached.  In float32 the residual b - A u computed afresh from the returned u
is limited by rounding: u rounded to float32 alone leaves a relative residual of ~4e-4 at 128 x 128 (cancellation
in the 5-point differences grows like 1 / h^2), so it sits far above tol while u itself is accurate to ~1e-7.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from solvers import _checks, finite_volume
from solvers.finite_volume import BOUNDARY_CONDITIONS, BoundaryCondition

Preconditioner = Literal["mean", "local"]
PRECONDITIONERS: tuple[str, ...] = ("mean", "local")

__all__ = ["darcy", "darcy_residual", "DarcyInfo", "DEFAULT_TOL", "DEFAULT_MAXITER", "PRECONDITIONERS"]

# Relative residual at which CG stops, by dtype (measured on 128 x 128 threshold fields, Dirichlet and periodic,
# relative L2 error of u against a float64 solve to 1e-13): float32 reaches its floor, ~1e-7, at 1e-5 (1e-4 gives
# 2e-7, 1e-3 up to 2e-5; 1e-6 and 1e-7 change nothing); float64 at 1e-10 gives <= 1e-12, far below the
# discretisation error at any practical resolution.
DEFAULT_TOL = {"float32": 1e-5, "float64": 1e-10}
DEFAULT_MAXITER = 1000


class DarcyInfo(NamedTuple):
    """What the conjugate-gradient solve did, one entry per problem (shape [*batch]).

    Properties:
      iterations: CG iterations taken (each one application of A and one of the preconditioner).
      residual: ||r|| / ||b|| at the returned u, r CG's recursively updated residual (the quantity tol bounds;
        0 when b = 0).
      converged: residual <= tol (False: maxiter was reached first).
    """

    iterations: Int[Array, "*batch"]
    residual: Float[Array, "*batch"]
    converged: Bool[Array, "*batch"]


def _pcg(matvec, precondition, b: jax.Array, tol: jax.Array, maxiter: jax.Array) -> tuple[jax.Array, DarcyInfo]:
    """Preconditioned conjugate gradients for one problem from x = 0 (Saad, Iterative Methods, alg. 9.1)."""
    dot = lambda x, y: jnp.sum(x * y)
    b_norm2 = dot(b, b)
    threshold = tol * tol * b_norm2
    z = precondition(b)
    rz = dot(b, z)

    def cond(state):
        k, _, _, _, _, r_norm2 = state
        return (k < maxiter) & (r_norm2 > threshold)

    def body(state):
        k, x, r, p, rz, _ = state
        ap = matvec(p)
        pap = dot(p, ap)
        alpha = jnp.where(pap > 0, rz / jnp.where(pap > 0, pap, 1), 0)
        x = x + alpha * p
        r = r - alpha * ap
        z = precondition(r)
        rz_new = dot(r, z)
        beta = jnp.where(rz > 0, rz_new / jnp.where(rz > 0, rz, 1), 0)
        return k + 1, x, r, z + beta * p, rz_new, dot(r, r)

    state = (jnp.zeros((), jnp.int32), jnp.zeros_like(b), b, z, rz, b_norm2)
    k, x, _, _, _, r_norm2 = jax.lax.while_loop(cond, body, state)
    residual = jnp.sqrt(r_norm2 / jnp.where(b_norm2 > 0, b_norm2, 1))
    return x, DarcyInfo(k, residual, r_norm2 <= threshold)


def _zero_mean(x: jax.Array) -> jax.Array:
    return x - jnp.mean(x, axis=(-2, -1), keepdims=True)


def _preconditioner(a, h, bc: BoundaryCondition, kind: Preconditioner):
    """r -> M^-1 r (module docstring); M does not depend on a for differentiation (only A does)."""
    a = jax.lax.stop_gradient(a)
    if kind == "mean":
        a_ref = jnp.exp(jnp.mean(jnp.log(a)))
        return lambda r: finite_volume.laplacian_solve(r, h, bc) / a_ref
    s = jax.lax.rsqrt(a)
    if bc == "periodic":
        # M = D^1/2 L5 D^1/2 has null space D^-1/2 1, not the constants: project z back onto A's range.
        return lambda r: _zero_mean(s * finite_volume.laplacian_solve(s * r, h, bc))
    return lambda r: s * finite_volume.laplacian_solve(s * r, h, bc)


def solve_one(
    a, f, h, tol, maxiter, bc: BoundaryCondition, preconditioner: Preconditioner = "mean"
) -> tuple[jax.Array, DarcyInfo]:
    """u and the solve's info for one problem (a, f [n, n]); no checks.  The core of `darcy` and the sampler."""
    faces = finite_volume.face_coefficients(a, bc)
    matvec = lambda u: finite_volume.apply(u, faces, h, bc)
    precondition = _preconditioner(a, h, bc, preconditioner)

    def solve(matvec, b):
        if bc == "periodic":
            # A's range is the zero-mean fields: projecting b makes this A's pseudo-inverse, which the adjoint
            # solve (a cotangent of any mean) needs as well.
            x, info = _pcg(matvec, precondition, _zero_mean(b), tol, maxiter)
            return _zero_mean(x), info
        return _pcg(matvec, precondition, b, tol, maxiter)

    if bc == "periodic":
        f = _zero_mean(f)
    return jax.lax.custom_linear_solve(matvec, f, solve, symmetric=True, has_aux=True)


def _solve_batch(a, f, h, tol, maxiter, *, bc, preconditioner):
    """`solve_one` over the common batch of a and f (each [*batch, n, n] or [n, n])."""
    batch = jnp.broadcast_shapes(a.shape[:-2], f.shape[:-2])
    n = a.shape[-1]
    a = jnp.broadcast_to(a, batch + (n, n)).reshape((-1, n, n))
    f = jnp.broadcast_to(f, batch + (n, n)).reshape((-1, n, n))
    solve = lambda a, f: solve_one(a, f, h, tol, maxiter, bc, preconditioner)
    u, info = jax.vmap(solve)(a, f)
    return u.reshape(batch + (n, n)), jax.tree.map(lambda x: x.reshape(batch), info)


_solve_batch_jit = jax.jit(_solve_batch, static_argnames=("bc", "preconditioner"))


def _residual(u, a, f, h, *, bc):
    faces = finite_volume.face_coefficients(a, bc)
    if bc == "periodic":
        f = _zero_mean(f)
    return finite_volume.apply(u, faces, h, bc) - f


_residual_jit = jax.jit(_residual, static_argnames="bc")


def _preconditioner_kind(kind) -> Preconditioner:
    if kind not in PRECONDITIONERS:
        raise ValueError(f"preconditioner must be one of {PRECONDITIONERS}, got {kind!r}.")
    return kind


def _bc(bc) -> BoundaryCondition:
    if bc not in BOUNDARY_CONDITIONS:
        raise ValueError(f"bc must be one of {BOUNDARY_CONDITIONS}, got {bc!r}.")
    return bc


def _fields(bc: BoundaryCondition, **fields) -> dict[str, jax.Array]:
    """Check the named fields: each [..., n, n] on the grid of bc, one n, batch shapes equal or ()."""
    periodic = bc == "periodic"
    out = {name: _checks.check_field(x, name, periodic=periodic) for name, x in fields.items()}
    shapes = {name: x.shape for name, x in out.items()}
    if len({s[-1] for s in shapes.values()}) > 1:
        got = ", ".join(f"{name} {s}" for name, s in shapes.items())
        raise ValueError(f"the fields must share the grid (the same n), got {got}; resample them to one grid.")
    batches = {s[:-2] for s in shapes.values()} - {()}
    if len(batches) > 1:
        got = ", ".join(f"{name} {s}" for name, s in shapes.items())
        raise ValueError(
            f"the fields must have the same batch shape, or none (one field for all problems), got {got}; give "
            "shared fields as [n, n] (e.g. f = jnp.ones((n, n))) or jnp.broadcast_to them; for other layouts use "
            "jax.vmap."
        )
    return out


def _spacing(n: int, length, bc: BoundaryCondition, dtype) -> jax.Array:
    length = _checks.check_length(length)
    if isinstance(length, float):
        return jnp.asarray(finite_volume.spacing(n, length, bc), dtype)
    return finite_volume.spacing(n, length.astype(dtype), bc)


def _tolerance(tol, dtype) -> float:
    if jnp.dtype(dtype).name not in DEFAULT_TOL:
        raise ValueError(f"a and f must be float32 or float64 (or integers), got {jnp.dtype(dtype).name}; cast them.")
    if tol is None:
        return DEFAULT_TOL[jnp.dtype(dtype).name]
    if isinstance(tol, bool) or not isinstance(tol, int | float | np.floating) or not 0 < tol < 1:
        raise ValueError(f"tol must be a number in (0, 1) (a relative residual), got {tol!r}; e.g. tol=1e-6.")
    return float(tol)


def _maxiter(maxiter) -> int:
    if isinstance(maxiter, bool) or not isinstance(maxiter, int | np.integer) or maxiter < 1:
        raise ValueError(f"maxiter must be a positive int, got {maxiter!r}.")
    return int(maxiter)


def darcy(
    a: Float[Array, "*#batch n n"],
    f: Float[Array, "*#batch n n"],
    *,
    bc: BoundaryCondition = "dirichlet",
    length: float | Float[Array, ""] = 1.0,
    tol: float | None = None,
    maxiter: int = DEFAULT_MAXITER,
    preconditioner: Preconditioner = "mean",
    return_info: bool = False,
) -> Float[Array, "*batch n n"] | tuple[Float[Array, "*batch n n"], DarcyInfo]:
    """Solve -div(a grad u) = f by second-order finite volumes (module docstring).

    bc="dirichlet": u = 0 on the boundary of [0, L]^2; a, f and u hold the n x n interior nodes
    x_i = (i + 1) L / (n + 1) (any n >= 3).  bc="periodic": [0, L)^2 at x_i = i L / n (n even >= 4); the mean of f
    is removed and u has zero mean.

    Args:
      a: the permeability a(x) > 0 at the nodes, shape [*batch, n, n] or [n, n] (one field for all problems).
      f: the source at the nodes, shape [*batch, n, n] or [n, n].
      bc: "dirichlet" or "periodic".
      length: side L of the square (static or traced scalar).
      tol: relative residual at which CG stops (module docstring); default DEFAULT_TOL of the dtype.
      maxiter: most CG iterations.
      preconditioner: "mean" (M = a_ref L5, a_ref the geometric mean of a: ~14 iterations for the 12 / 3 threshold
        fields, at most ~sqrt(max a / min a) growth for any a) or "local" (M = D^1/2 L5 D^1/2, D = diag(a): a few
        iterations for smooth a such as the log-normal fields, many across jumps); see the module docstring.
      return_info: also return a `DarcyInfo` (iterations, residual, converged per problem).

    Returns:
      u, shape [*batch, n, n], in the promoted dtype of a and f (float32 or float64); with return_info,
      (u, info).  Without return_info a problem that did not reach tol within maxiter is an error (ValueError, or
      through checkify under tracing); with it, the caller reads info.converged.

    Example:
      a = jnp.where(field >= 0, 12.0, 3.0)                   # [batch, n, n]
      u = solvers.darcy(a, jnp.ones((n, n)))                 # Dirichlet, f = 1 for every problem
    """
    bc = _bc(bc)
    preconditioner = _preconditioner_kind(preconditioner)
    fields = _fields(bc, a=a, f=f)
    a, f = fields["a"], fields["f"]
    _checks.check_positive(a, "a (the permeability)")
    _checks.check_finite(f, "f (the source)")
    dtype = _checks.float_dtype(a, f)
    tol, maxiter = _tolerance(tol, dtype), _maxiter(maxiter)
    h = _spacing(a.shape[-1], length, bc, dtype)
    u, info = _solve_batch_jit(
        a.astype(dtype),
        f.astype(dtype),
        h,
        jnp.asarray(tol, dtype),
        jnp.asarray(maxiter, jnp.int32),
        bc=bc,
        preconditioner=preconditioner,
    )
    if return_info:
        return u, info
    _require_converged(info, tol)
    return u


def _require_converged(info: DarcyInfo, tol: float) -> None:
    """`darcy` without return_info: a problem that stopped at maxiter above tol is an error that says what to do."""
    _checks.require(
        jnp.all(info.converged),
        "darcy: conjugate gradients stopped at maxiter = {} with relative residual {:.3g} > tol = "
        f"{tol:.3g}; raise maxiter, loosen tol (float32 cannot go much below 1e-6), or pass return_info=True to "
        "accept the iterate.",
        jnp.max(info.iterations),
        jnp.max(info.residual),
    )


def darcy_residual(
    u: Float[Array, "*batch n n"],
    a: Float[Array, "*#batch n n"],
    f: Float[Array, "*#batch n n"],
    *,
    bc: BoundaryCondition = "dirichlet",
    length: float | Float[Array, ""] = 1.0,
) -> Float[Array, "*batch n n"]:
    """The discrete residual A u - P f of `darcy`'s finite-volume system (P removes f's mean for periodic).

    Shapes: u [*batch, n, n]; a and f [*batch, n, n] or [n, n]; checked as in `darcy`.  For `darcy`'s output its
    norm is about tol ||P f|| (in float64; float32 adds the rounding of A u, see the module docstring).
    """
    bc = _bc(bc)
    fields = _fields(bc, u=u, a=a, f=f)
    u, a, f = fields["u"], fields["a"], fields["f"]
    _checks.check_finite(u, "u")
    _checks.check_positive(a, "a (the permeability)")
    _checks.check_finite(f, "f (the source)")
    dtype = _checks.float_dtype(u, a, f)
    h = _spacing(u.shape[-1], length, bc, dtype)
    return _residual_jit(u.astype(dtype), a.astype(dtype), f.astype(dtype), h, bc=bc)
