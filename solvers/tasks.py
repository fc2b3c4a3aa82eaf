"""Task samplers: random sources and coefficients from given ranges, solved on the device.

`task.sample(key, batch_size, resolution, *, start=0)` returns the batch dict (all arrays share
the leading axis B, float dtype = JAX default float):

    source [B, n, n], solution [B, n, n], diffusion [B, 2, 2] (full K, 0.01 scale included),
    velocity [B, 2], omega [B], pde [B] int32 (0 poisson, 1 advection_diffusion, 2 helmholtz),
    volume_fraction [B]

Determinism and sharding: sample number i of a batch is a pure function of (key, i) alone
(its random numbers come from `jax.random.fold_in(key, i)`), so
`task.sample(key, m, n, start=c * m)` is exactly rows [c * m, (c + 1) * m) of
`task.sample(key, B, n)`: a batch can be generated as per-device chunks (pass the chunk offset as
`start`, traced or not) or as one jitted call with sharded outputs.  Only `Mixed` draws the
family of sample i from (key, i // F) (a random order within each block of F = len(tasks)
consecutive samples), which keeps family counts equal within one per family.

Resolution independence: coefficient decisions that depend on the solution (the advection
strength lam, the Helmholtz rejection of max|u| > max_amplitude) are made on the fixed
REFERENCE_RESOLUTION = 64 grid, and sources are normalised on a fixed lattice, so the same key at
resolutions 64 and 128 gives the same coefficients and the same continuum source.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from solvers import _checks, solve
from solvers.coefficients import advection_strength, draw_diffusion
from solvers.sources import draw_bump_amplitudes, gaussian_source

__all__ = ["Poisson", "AdvectionDiffusion", "Helmholtz", "Mixed", "from_spec"]

REFERENCE_RESOLUTION = 64
# Rejection sampling: sample i tries keys fold_in(key_i, attempt) for attempt < MAX_TRIES.
MAX_TRIES = 256

Batch = dict[str, jax.Array]
_REGISTRY: dict[str, type] = {}


def _default_float() -> jnp.dtype:
    return jnp.asarray(0.0).dtype


def _range(value: Any, name: str, fix: str, *, lower: float, strict: bool) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}; {fix}.") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} must be finite, got {value!r}; {fix}.")
    if lo > hi:
        raise ValueError(f"{name} is inverted: low {lo} > high {hi}; swap the bounds.")
    if lo < lower or (strict and lo == lower):
        rel = ">" if strict else ">="
        raise ValueError(f"{name} must have low {rel} {lower}, got {lo}; {fix}.")
    return lo, hi


def _length(value: Any) -> float:
    try:
        return _checks.check_length(value)
    except ValueError as err:
        raise ValueError(f"{err} Set the task's length to the domain size, e.g. 1.0.") from None


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    return batch_size


def _sample_keys(key: jax.Array, indices: jax.Array) -> jax.Array:
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)


def _batch(source, solution, diffusion, velocity, omega, pde_id: int, volume_fraction) -> Batch:
    b = source.shape[0]
    return {
        "source": source,
        "solution": solution,
        "diffusion": diffusion,
        "velocity": velocity,
        "omega": omega,
        "pde": jnp.full((b,), pde_id, jnp.int32),
        "volume_fraction": volume_fraction,
    }


class _Task:
    """Shared `sample` / `spec` machinery; subclasses implement `_sample_indices`."""

    name: ClassVar[str]
    pde_id: ClassVar[int]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.name] = cls  # `from_spec` finds every task class by its name

    def sample(self, key: jax.Array, batch_size: int, resolution: int, *, start=0) -> Batch:
        """Draw samples start, ..., start + batch_size - 1 for `key` at `resolution` (even >= 4).

        Jit-compatible (batch_size and resolution static).  Raises ValueError when a rejection
        sampler finds no admissible sample (only detectable outside jit; under an outer jit the
        solution of such a sample is NaN).
        """
        batch_size = _check_batch_size(batch_size)
        resolution = _checks.check_even_resolution(resolution)
        batch, ok = _sample_jit(self, key, batch_size, resolution, jnp.asarray(start, jnp.int32))
        if ok is not None and _checks.is_concrete(ok) and not bool(ok):
            raise ValueError(self._failure_message())
        return batch

    def _failure_message(self) -> str:
        return f"{self.name}: sampling failed."

    def spec(self) -> dict[str, Any]:
        """JSON-serialisable description; `from_spec(task.spec()) == task`."""
        out: dict[str, Any] = {"name": self.name}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        return out

    def _sample_indices(self, key, indices, resolution) -> tuple[Batch, jax.Array | None]:
        raise NotImplementedError


def _sample_impl(task: _Task, key, batch_size: int, resolution: int, start):
    indices = start + jnp.arange(batch_size, dtype=jnp.int32)
    return task._sample_indices(key, indices, resolution)


_sample_jit = jax.jit(_sample_impl, static_argnums=(0, 2, 3))


@dataclasses.dataclass(frozen=True)
class Poisson(_Task):
    """-div(K grad u) = f - mean f; K = 0.01 R(-t) diag(1, e) R(t), e ~ U(eigenvalue_range).

    Properties:
      eigenvalue_range: (e1, e2), 0 < e1 <= e2; the paper pre-trains on (1, 5).
      length: side L of the periodic square.
    """

    eigenvalue_range: tuple[float, float] = (1.0, 5.0)
    length: float = 1.0
    name: ClassVar[str] = "poisson"
    pde_id: ClassVar[int] = 0

    def __post_init__(self):
        fix = "use e.g. eigenvalue_range=(1, 5)"
        rng = _range(self.eigenvalue_range, "eigenvalue_range", fix, lower=0.0, strict=True)
        object.__setattr__(self, "eigenvalue_range", rng)
        object.__setattr__(self, "length", _length(self.length))

    def _sample_indices(self, key, indices, resolution):
        dtype = _default_float()

        def draw(k):
            k_src, k_diff = jax.random.split(k)
            amplitudes, vf = draw_bump_amplitudes(k_src, dtype)
            return amplitudes, vf, draw_diffusion(k_diff, self.eigenvalue_range, dtype)

        amplitudes, vf, diffusion = jax.vmap(draw)(_sample_keys(key, indices))
        source = gaussian_source(amplitudes, resolution, length=self.length, remove_mean=True)
        solution = solve.poisson(source, diffusion, length=self.length)
        b = indices.shape[0]
        zeros = jnp.zeros((b,), dtype)
        velocity = jnp.zeros((b, 2), dtype)
        return _batch(source, solution, diffusion, velocity, zeros, self.pde_id, vf), None


@dataclasses.dataclass(frozen=True)
class AdvectionDiffusion(_Task):
    """-div(K grad u) + v . grad u = f - mean f with a target advection/diffusion ratio.

    K = (1 - lam) K0, K0 = 0.01 R(-t) diag(1, e) R(t), e ~ U(eigenvalue_range); v = lam * (cos p,
    sin p), p ~ U(0, 2 pi); lam is solved per sample (bisection on the device, on the reference
    grid) so that ||v . grad u|| / ||div(K grad u)|| = r, r ~ U(ratio_range).

    Properties:
      ratio_range: (r1, r2), 0 <= r1 <= r2; the paper pre-trains on (0.2, 1).
      eigenvalue_range: (e1, e2) of K0, default (1, 5).
      length: side L of the periodic square.
    """

    ratio_range: tuple[float, float] = (0.2, 1.0)
    eigenvalue_range: tuple[float, float] = (1.0, 5.0)
    length: float = 1.0
    name: ClassVar[str] = "advection_diffusion"
    pde_id: ClassVar[int] = 1

    def __post_init__(self):
        rr = _range(self.ratio_range, "ratio_range", "use e.g. ratio_range=(0.2, 1.0)", lower=0, strict=False)
        er = _range(
            self.eigenvalue_range,
            "eigenvalue_range",
            "use e.g. eigenvalue_range=(1, 5)",
            lower=0.0,
            strict=True,
        )
        object.__setattr__(self, "ratio_range", rr)
        object.__setattr__(self, "eigenvalue_range", er)
        object.__setattr__(self, "length", _length(self.length))

    def _sample_indices(self, key, indices, resolution):
        dtype = _default_float()

        def draw(k):
            k_src, k_diff, k_adv = jax.random.split(k, 3)
            amplitudes, vf = draw_bump_amplitudes(k_src, dtype)
            diffusion = draw_diffusion(k_diff, self.eigenvalue_range, dtype)
            u = jax.random.uniform(k_adv, (2,), dtype)
            angle = 2 * jnp.pi * u[0]
            direction = jnp.stack([jnp.cos(angle), jnp.sin(angle)])
            lo, hi = self.ratio_range
            ratio = lo + (hi - lo) * u[1]
            return amplitudes, vf, diffusion, direction, ratio

        amplitudes, vf, diffusion0, direction, ratio = jax.vmap(draw)(_sample_keys(key, indices))
        reference = gaussian_source(amplitudes, REFERENCE_RESOLUTION, length=self.length, remove_mean=True)
        lam = advection_strength(jnp.fft.rfft2(reference), diffusion0, direction, ratio, length=self.length)
        diffusion = (1 - lam)[:, None, None] * diffusion0
        velocity = lam[:, None] * direction
        source = gaussian_source(amplitudes, resolution, length=self.length, remove_mean=True)
        solution = solve.advection_diffusion(source, diffusion, velocity, length=self.length)
        zeros = jnp.zeros(indices.shape, dtype)
        return _batch(source, solution, diffusion, velocity, zeros, self.pde_id, vf), None


@dataclasses.dataclass(frozen=True)
class Helmholtz(_Task):
    """-D lap u - omega u = f, omega ~ integer U{o1, ..., o2}, samples with max|u| > 2 redrawn.

    The rejection (paper: discard solutions with max|u| > max_amplitude) runs per sample on the
    device inside a lax.while_loop: every still-rejected sample draws a new (source, omega) from
    fold_in(key_i, attempt) until all are admissible or MAX_TRIES attempts are spent.  max|u| is
    taken on the reference grid so that the decision does not depend on the resolution.

    Properties:
      omega_range: (o1, o2) integers, 0 <= o1 <= o2; the paper pre-trains on (1, 10).
      diffusivity: D > 0 (0.01 in the paper).
      max_amplitude: rejection threshold on max|u| (2 in the paper).
      length: side L of the periodic square.
    """

    omega_range: tuple[int, int] = (1, 10)
    diffusivity: float = 0.01
    max_amplitude: float = 2.0
    length: float = 1.0
    name: ClassVar[str] = "helmholtz"
    pde_id: ClassVar[int] = 2

    def __post_init__(self):
        fix = "use integer bounds, e.g. omega_range=(1, 10)"
        lo, hi = _range(self.omega_range, "omega_range", fix, lower=0, strict=False)
        if lo != int(lo) or hi != int(hi):
            raise ValueError(f"omega_range must hold integers, got {self.omega_range!r}; {fix}.")
        object.__setattr__(self, "omega_range", (int(lo), int(hi)))
        for name in ("diffusivity", "max_amplitude"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
            object.__setattr__(self, name, float(value))
        object.__setattr__(self, "length", _length(self.length))

    def _failure_message(self) -> str:
        return (
            f"helmholtz: no admissible sample (max|u| <= {self.max_amplitude}) found for some "
            f"samples after {MAX_TRIES} tries with omega_range={self.omega_range}; this range "
            f"is (nearly) resonant for D = {self.diffusivity}: choose another omega_range or "
            "raise max_amplitude."
        )

    def _sample_indices(self, key, indices, resolution):
        dtype = _default_float()
        keys = _sample_keys(key, indices)
        lo, hi = self.omega_range

        def draw(k, attempt):
            k_src, k_omega = jax.random.split(jax.random.fold_in(k, attempt))
            amplitudes, vf = draw_bump_amplitudes(k_src, dtype)
            # floor(lo + (hi - lo + 1) u), u in [0, 1): integers lo..hi with equal probability.
            u = jax.random.uniform(k_omega, (), dtype)
            omega = jnp.minimum(jnp.floor(lo + (hi - lo + 1) * u), hi).astype(dtype)
            return amplitudes, vf, omega

        def solve_at(amplitudes, omega, n):
            source = gaussian_source(amplitudes, n, length=self.length)
            u = solve.helmholtz(source, omega, diffusivity=self.diffusivity, length=self.length)
            return source, u

        def admissible(amplitudes, omega):
            _, u = solve_at(amplitudes, omega, REFERENCE_RESOLUTION)
            return jnp.max(jnp.abs(u), axis=(-2, -1)) <= self.max_amplitude

        def candidates(attempt):
            return jax.vmap(draw, in_axes=(0, None))(keys, attempt)

        def cond(state):
            attempt, ok, _ = state
            return (attempt < MAX_TRIES) & ~jnp.all(ok)

        def body(state):
            attempt, ok, kept = state
            new = candidates(attempt)
            take = ~ok & admissible(new[0], new[2])
            kept = jax.tree.map(lambda n, k: jnp.where(_expand(take, k), n, k), new, kept)
            return attempt + 1, ok | take, kept

        first = candidates(0)
        state = (jnp.int32(1), admissible(first[0], first[2]), first)
        _, ok, (amplitudes, vf, omega) = jax.lax.while_loop(cond, body, state)
        source, solution = solve_at(amplitudes, omega, resolution)
        solution = jnp.where(ok[:, None, None], solution, jnp.nan)
        b = indices.shape[0]
        diffusion = jnp.broadcast_to(self.diffusivity * jnp.eye(2, dtype=dtype), (b, 2, 2))
        velocity = jnp.zeros((b, 2), dtype)
        return _batch(source, solution, diffusion, velocity, omega, self.pde_id, vf), jnp.all(ok)


def _expand(mask: jax.Array, like: jax.Array) -> jax.Array:
    return mask.reshape(mask.shape + (1,) * (like.ndim - mask.ndim))


@dataclasses.dataclass(frozen=True)
class Mixed(_Task):
    """A mixture of single-PDE tasks with equal shares.

    Sample i belongs to family perm_{i // F}[i % F], perm_j a random permutation of the F tasks
    drawn from (key, j): every block of F consecutive samples holds each family once, in random
    order.  Each family's samples come from that task's sampler with its own key.

    Properties:
      tasks: the member tasks (Poisson, AdvectionDiffusion, Helmholtz; not Mixed).
      length: side L of the periodic square; every member must have the same length.
    """

    tasks: tuple[_Task, ...] = ()
    length: float = 1.0
    name: ClassVar[str] = "mixed"

    def __post_init__(self):
        tasks = tuple(self.tasks) if isinstance(self.tasks, list | tuple) else None
        if not tasks or not all(isinstance(t, Poisson | AdvectionDiffusion | Helmholtz) for t in tasks):
            raise ValueError(
                f"tasks must be a non-empty tuple of Poisson/AdvectionDiffusion/Helmholtz tasks, "
                f"got {self.tasks!r}; e.g. Mixed((Poisson(), AdvectionDiffusion(), Helmholtz()))."
            )
        length = _length(self.length)
        for t in tasks:
            if t.length != length:
                raise ValueError(
                    f"every task in Mixed must have length={length}, got {t.name} with "
                    f"length={t.length}; set the same length on all members and on Mixed."
                )
        object.__setattr__(self, "tasks", tasks)
        object.__setattr__(self, "length", length)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "tasks": [t.spec() for t in self.tasks], "length": self.length}

    def _failure_message(self) -> str:
        return " / ".join(t._failure_message() for t in self.tasks if isinstance(t, Helmholtz))

    def _sample_indices(self, key, indices, resolution):
        num_families = len(self.tasks)
        b = indices.shape[0]
        key_order, key_tasks = jax.random.split(key)

        def family(i):
            order = jax.random.permutation(jax.random.fold_in(key_order, i // num_families), num_families)
            return order[i % num_families]

        families = jax.vmap(family)(indices)
        # At most ceil(b / F) + 1 samples of one family lie in any window of b consecutive indices.
        capacity = min(b, -(-b // num_families) + 1)
        out = None
        all_ok = None
        for f, task in enumerate(self.tasks):
            (positions,) = jnp.nonzero(families == f, size=capacity, fill_value=b)
            sub_indices = indices[jnp.minimum(positions, b - 1)]
            sub, ok = task._sample_indices(jax.random.fold_in(key_tasks, f), sub_indices, resolution)
            if out is None:
                out = {k: jnp.zeros((b,) + v.shape[1:], v.dtype) for k, v in sub.items()}
            # Padding positions (== b) fall outside the batch and are dropped.
            out = {k: out[k].at[positions].set(sub[k], mode="drop") for k in out}
            if ok is not None:
                all_ok = ok if all_ok is None else all_ok & ok
        return out, all_ok


def from_spec(spec: Mapping[str, Any]) -> _Task:
    """Inverse of `task.spec()`."""
    if not isinstance(spec, Mapping) or spec.get("name") not in _REGISTRY:
        raise ValueError(
            f"spec must be a dict with 'name' in {sorted(_REGISTRY)}, got {spec!r}; make it with task.spec()."
        )
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    cls = _REGISTRY[spec["name"]]
    if cls is Mixed:
        kwargs["tasks"] = tuple(from_spec(s) for s in kwargs.get("tasks", ()))
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"spec for {spec['name']} has unknown fields: {err}.") from None
