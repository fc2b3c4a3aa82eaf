"""Task samplers: random sources and coefficients from given ranges, solved on the device.

`task.sample(key, batch_size, resolution, *, start=0, dtype=None)` returns the batch dict (all arrays share the
leading axis B; floats in `dtype`, default JAX's default float):

    source [B, n, n], solution [B, n, n], diffusion [B, 2, 2] (full K, 0.01 scale included),
    velocity [B, 2], omega [B], pde [B] int32 (0 poisson, 1 advection_diffusion, 2 helmholtz, 3 darcy),
    volume_fraction [B]

and Darcy batches also permeability [B, n, n] (its field-valued coefficient; see `Darcy`).

Determinism and sharding: sample number i of a batch is a pure function of (key, i) alone
(its random numbers come from `jax.random.fold_in(key, i)`), so
`task.sample(key, m, n, start=c * m)` is exactly rows [c * m, (c + 1) * m) of
`task.sample(key, B, n)`: a batch can be generated as per-device chunks (pass the chunk offset as
`start`, traced or not) or as one jitted call with sharded outputs.  Only `Mixed` draws the
family of sample i from (key, i // F) (a random order within each block of F = len(tasks)
consecutive samples), which keeps family counts equal within one per family.

Precision independence: every random number is drawn in float32 (`coefficients.DRAW_DTYPE`) and every discrete
decision taken from random numbers alone (volume fraction, which bumps are on, the integer omega, the table entry
of lam) is made in float32, whatever `dtype` is; the problem is then built in `dtype`.  So one key gives the
same problems in float32 and float64, equal to float32 rounding.  Decisions on computed solutions (the Helmholtz
max|u| test) agree too, except for a draw within rounding of the threshold.

Resolution independence: decisions that depend on the solution (the advection strength by bisection, the
Helmholtz rejection of max|u| > max_amplitude) are made on the fixed REFERENCE_RESOLUTION = 128 grid (the
paper's), and sources are normalised on the fixed 128 x 128 lattice (`solvers.sources`), so the same key at any
resolution gives the same coefficients and the same continuum source.  At resolution 128 the reference solve is
the output solve.

Checks: `sample` refuses a bad key, batch size, resolution or dtype with ValueError.  A negative `start` and a
Helmholtz batch with no admissible draw raise ValueError eagerly; under an outer jit they go through the checkify
channel (`solvers._checks`), and the unfinished samples' solutions are NaN.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from solvers import _checks, darcy_flow, permeability, solve
from solvers.coefficients import (
    DRAW_DTYPE,
    advection_strength,
    draw_diffusion,
    load_advection_table,
    table_strength,
)
from solvers.finite_volume import BOUNDARY_CONDITIONS, spacing
from solvers.grid import Domain
from solvers.schema import COEFFICIENTS
from solvers.sources import (
    LATTICE_POINTS,
    VOLUME_FRACTIONS,
    draw_bump_amplitudes,
    gaussian_source,
    gaussian_source_and_spectrum,
)
from solvers.symbols import RESONANCE_RTOL, nearest_resonance

__all__ = ["Poisson", "AdvectionDiffusion", "Helmholtz", "Darcy", "Mixed"]

REFERENCE_RESOLUTION = LATTICE_POINTS
# On CPUs a batch is made CPU_CHUNK samples at a time (a lax.map), so that one step's arrays stay in the cache:
# memory traffic, not arithmetic, bounds the FFT and the elementwise passes there.  Accelerators take the batch
# at once.
CPU_CHUNK = 16
# Rejection sampling: sample i tries keys fold_in(key_i, attempt) for attempt < MAX_TRIES.
MAX_TRIES = 256
STRENGTHS = ("table", "bisection")

Batch = dict[str, jax.Array]


def _output_dtype(dtype) -> jnp.dtype:
    if dtype is None:
        return jnp.asarray(0.0).dtype
    try:
        dtype = jnp.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}.") from None
    if dtype not in (jnp.float32, jnp.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}.")
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError("dtype float64 needs 64-bit JAX: jax.config.update('jax_enable_x64', True) first.")
    return dtype


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
        length = _checks.check_length(value)
    except ValueError as err:
        raise ValueError(f"{err} Set the task's length to the domain size, e.g. 1.0.") from None
    if not isinstance(length, float):
        raise ValueError(f"a task's length must be a static number, got {value!r}; e.g. length=1.0.")
    return length


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    return batch_size


def _sample_keys(key: jax.Array, indices: jax.Array) -> jax.Array:
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)


def _batch(source, solution, pde_id: int, volume_fraction, **coefficients: jax.Array) -> Batch:
    """A task batch: source, solution, every per-sample coefficient of the schema (`solvers.schema`; zeros where the
    family has none) and the fields the family has, the family id and the volume fraction."""
    b = source.shape[0]
    dtype = source.dtype
    unknown = set(coefficients) - set(COEFFICIENTS)
    if unknown:
        raise ValueError(f"coefficients {sorted(unknown)} are not in solvers.schema.COEFFICIENTS.")
    out = {"source": source, "solution": solution}
    for c in COEFFICIENTS.values():
        value = coefficients.get(c.name)
        if value is not None:
            out[c.name] = value.astype(dtype)
        elif not c.field:
            out[c.name] = jnp.zeros((b, *c.shape), dtype)
    out["pde"] = jnp.full((b,), pde_id, jnp.int32)
    out["volume_fraction"] = jnp.asarray(volume_fraction, dtype)
    return out


def _fraction(fraction_index, dtype) -> jax.Array:
    return jnp.asarray(VOLUME_FRACTIONS, dtype)[fraction_index]


class _Task:
    """Shared `sample` / `spec` machinery; subclasses implement `_sample_indices`."""

    name: ClassVar[str]
    pde_id: ClassVar[int]

    def sample(self, key: jax.Array, batch_size: int, resolution: int, *, start=0, dtype=None) -> Batch:
        """Draw samples start, ..., start + batch_size - 1 for `key` at `resolution` (even >= 4; Dirichlet Darcy: >= 3).

        Jit-compatible (batch_size, resolution and dtype static; key and start may be traced).  `dtype` (float32
        or float64, default JAX's default float) sets the output precision only: the same key gives the same
        problems in both.  Raises ValueError when a rejection sampler finds no admissible sample (under an outer
        jit: through checkify, and the solution of such a sample is NaN).
        """
        key = _checks.check_key(key)
        batch_size = _check_batch_size(batch_size)
        resolution = self._check_resolution(resolution)
        dtype = _output_dtype(dtype)
        start = jnp.asarray(start)
        if start.shape != () or not jnp.issubdtype(start.dtype, jnp.integer):
            raise ValueError(f"start must be an integer scalar, got {start!r}.")
        _checks.require(start >= 0, "start must be >= 0 (the index of the first sample), got {}.", start)
        batch, ok = _sample_jit(self, key, batch_size, resolution, start.astype(jnp.int32), dtype)
        if ok is not None:
            _checks.require(jnp.all(ok), self._failure_message())
        return batch

    def _check_resolution(self, resolution: Any) -> int:
        return _checks.check_even_resolution(resolution)

    def _failure_message(self) -> str:
        return f"{self.name}: sampling failed."

    def spec(self) -> dict[str, Any]:
        """JSON-serialisable description; `solvers.families.task_from_spec(task.spec()) == task`."""
        out: dict[str, Any] = {"name": self.name}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        return out

    def _sample_indices(self, key, indices, resolution, dtype) -> tuple[Batch, jax.Array | None]:
        """The samples `indices` [b] and, for rejection samplers, which of them were admissible ([b] bool)."""
        raise NotImplementedError


def _sample_impl(task: _Task, key, batch_size: int, resolution: int, start, dtype):
    if jax.default_backend() != "cpu" or batch_size <= CPU_CHUNK:
        return task._sample_indices(key, start + jnp.arange(batch_size, dtype=jnp.int32), resolution, dtype)
    steps = -(-batch_size // CPU_CHUNK)
    indices = start + jnp.arange(steps * CPU_CHUNK, dtype=jnp.int32).reshape(steps, CPU_CHUNK)
    batch, ok = jax.lax.map(lambda i: task._sample_indices(key, i, resolution, dtype), indices)
    # Samples past batch_size (the last step's padding) are valid samples of the key, made and dropped.
    return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:])[:batch_size], (batch, ok))


_sample_jit = jax.jit(_sample_impl, static_argnums=(0, 2, 3, 5))


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

    def _sample_indices(self, key, indices, resolution, dtype):
        def draw(k):
            k_src, k_diff = jax.random.split(k)
            amplitudes, vf = draw_bump_amplitudes(k_src, dtype=dtype)
            return amplitudes, vf, draw_diffusion(k_diff, self.eigenvalue_range, dtype)

        amplitudes, vf, diffusion = jax.vmap(draw)(_sample_keys(key, indices))
        source, source_hat = gaussian_source_and_spectrum(amplitudes, resolution, length=self.length, remove_mean=True)
        solution = solve.poisson_spectral(source_hat, diffusion, Domain(resolution, self.length))
        return _batch(source, solution, self.pde_id, _fraction(vf, dtype), diffusion=diffusion), None


def draw_advection_diffusion(key: jax.Array, eigenvalue_range, ratio_range, dtype):
    """One sample's draws: (amplitudes, vf, K0, direction, target ratio in float32, target ratio in dtype)."""
    k_src, k_diff, k_adv = jax.random.split(key, 3)
    amplitudes, vf = draw_bump_amplitudes(k_src, dtype=dtype)
    diffusion = draw_diffusion(k_diff, eigenvalue_range, dtype)
    u = jax.random.uniform(k_adv, (2,), DRAW_DTYPE)
    angle = 2 * jnp.pi * u[0].astype(dtype)
    direction = jnp.stack([jnp.cos(angle), jnp.sin(angle)])
    lo, hi = ratio_range
    return amplitudes, vf, diffusion, direction, lo + (hi - lo) * u[1], lo + (hi - lo) * u[1].astype(dtype)


@dataclasses.dataclass(frozen=True)
class AdvectionDiffusion(_Task):
    """-div(K grad u) + v . grad u = f - mean f with a target advection/diffusion ratio r ~ U(ratio_range).

    K = (1 - lam) K0, K0 = 0.01 R(-t) diag(1, e) R(t), e ~ U(eigenvalue_range); v = lam * (cos p, sin p),
    p ~ U(0, 2 pi).  The ratio of a problem is ||v . grad u|| / ||div(K grad u)||.  The strength lam:
      strength="table" (default; the paper's rule): the lam of the committed table whose mean ratio over a
        dataset is nearest r, so lam takes a few discrete values and each sample's own ratio spreads around r
        (`coefficients.table_strength`; table made by `python -m solvers.advection_table`, for e in (1, 5));
      strength="bisection": lam solved per sample (on the reference grid) so that the sample's own ratio is r.

    Properties:
      ratio_range: (r1, r2), 0 <= r1 <= r2; the paper pre-trains on (0.2, 1).
      eigenvalue_range: (e1, e2) of K0, default (1, 5) (the table's range; other ranges need "bisection").
      strength: "table" or "bisection".
      length: side L of the periodic square.
    """

    ratio_range: tuple[float, float] = (0.2, 1.0)
    eigenvalue_range: tuple[float, float] = (1.0, 5.0)
    strength: str = "table"
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
        if self.strength not in STRENGTHS:
            raise ValueError(f"strength must be one of {STRENGTHS}, got {self.strength!r}.")
        if self.strength == "table":
            table_range = load_advection_table().eigenvalue_range
            if er != table_range:
                raise ValueError(
                    f"strength='table' uses the lam table made for eigenvalue_range={table_range}, got "
                    f"eigenvalue_range={er}; use strength='bisection', or make a table for this range with "
                    "`python -m solvers.advection_table --eigenvalue-range LOW HIGH`."
                )
        object.__setattr__(self, "ratio_range", rr)
        object.__setattr__(self, "eigenvalue_range", er)
        object.__setattr__(self, "length", _length(self.length))

    def _sample_indices(self, key, indices, resolution, dtype):
        draw = lambda k: draw_advection_diffusion(k, self.eigenvalue_range, self.ratio_range, dtype)
        amplitudes, vf, diffusion0, direction, ratio32, ratio = jax.vmap(draw)(_sample_keys(key, indices))
        source, source_hat = gaussian_source_and_spectrum(amplitudes, resolution, length=self.length, remove_mean=True)
        if self.strength == "table":
            lam = table_strength(ratio32, length=self.length, dtype=dtype)
        else:
            reference_hat = source_hat
            if resolution != REFERENCE_RESOLUTION:
                _, reference_hat = gaussian_source_and_spectrum(
                    amplitudes, REFERENCE_RESOLUTION, length=self.length, remove_mean=True
                )
            lam = advection_strength(reference_hat, diffusion0, direction, ratio, length=self.length)
        diffusion = (1 - lam)[:, None, None] * diffusion0
        velocity = lam[:, None] * direction
        domain = Domain(resolution, self.length)
        solution = solve.advection_diffusion_spectral(source_hat, diffusion, velocity, domain)
        return _batch(source, solution, self.pde_id, _fraction(vf, dtype), diffusion=diffusion, velocity=velocity), None


@dataclasses.dataclass(frozen=True)
class Helmholtz(_Task):
    """-D lap u - omega u = f, omega ~ integer U{o1, ..., o2}; inadmissible draws are redrawn.

    A draw is admissible when omega is not resonant (`solvers.symbols`: no mode of the reference grid within the
    relative band RESONANCE_RTOL, decided in float32) and max|u| <= max_amplitude on the reference grid (the
    paper's 128 x 128 output grid; the paper discards solutions with max|u| > 2).  Every still-rejected sample
    draws new bumps and a new omega with the same volume fraction (as the paper's generator, which fixes vf per
    block) from fold_in(key_i, attempt), per sample on the device inside a lax.while_loop, until all are admissible
    or MAX_TRIES attempts are spent.

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
            f"helmholtz: no admissible sample (max|u| <= {self.max_amplitude}, omega not resonant) found for some "
            f"samples after {MAX_TRIES} tries with omega_range={self.omega_range}; this range is (nearly) resonant "
            f"for D = {self.diffusivity} (solvers.resonant_omegas): choose another omega_range or raise "
            "max_amplitude."
        )

    def _draw(self, key, attempt, fraction_index=None, dtype=DRAW_DTYPE):
        k_src, k_omega = jax.random.split(jax.random.fold_in(key, attempt))
        amplitudes, vf = draw_bump_amplitudes(k_src, fraction_index, dtype)
        # floor(lo + (hi - lo + 1) u), u in [0, 1): integers lo..hi with equal probability, in float32.
        lo, hi = self.omega_range
        u = jax.random.uniform(k_omega, (), DRAW_DTYPE)
        omega = jnp.minimum(jnp.floor(lo + (hi - lo + 1) * u), hi)
        return amplitudes, vf, omega

    def _solve(self, amplitudes, omega, n, dtype):
        source, source_hat = gaussian_source_and_spectrum(amplitudes, n, length=self.length)
        diffusivity = jnp.asarray(self.diffusivity, dtype)
        solution = solve.helmholtz_spectral(source_hat, omega.astype(dtype), diffusivity, Domain(n, self.length))
        return source, solution

    def _admissible(self, omega, solution):
        reference = Domain(REFERENCE_RESOLUTION, self.length)
        gap, _ = nearest_resonance(omega, jnp.asarray(self.diffusivity, DRAW_DTYPE), reference)
        small = jnp.max(jnp.abs(solution), axis=(-2, -1)) <= self.max_amplitude
        return small & (gap > RESONANCE_RTOL)

    def _sample_indices(self, key, indices, resolution, dtype):
        keys = _sample_keys(key, indices)
        reuse = resolution == REFERENCE_RESOLUTION  # the reference solve is the output
        draw = lambda k, attempt, vf=None: self._draw(k, attempt, vf, dtype)

        def attempt_at(attempt, vf=None):
            # Attempt 0 draws each sample's vf; later attempts keep it.
            args, axes = ((keys, attempt), (0, None)) if vf is None else ((keys, attempt, vf), (0, None, 0))
            amplitudes, vf, omega = jax.vmap(draw, in_axes=axes)(*args)
            source, solution = self._solve(amplitudes, omega, REFERENCE_RESOLUTION, dtype)
            kept = (amplitudes, omega, source, solution) if reuse else (amplitudes, omega)
            return kept, vf, self._admissible(omega, solution)

        def cond(state):
            attempt, ok, _, _ = state
            return (attempt < MAX_TRIES) & ~jnp.all(ok)

        def body(state):
            attempt, ok, vf, kept = state
            new, _, admissible = attempt_at(attempt, vf)
            take = ~ok & admissible
            kept = jax.tree.map(lambda n, k: jnp.where(_expand(take, k), n, k), new, kept)
            return attempt + 1, ok | take, vf, kept

        kept, vf, ok = attempt_at(0)
        _, ok, vf, kept = jax.lax.while_loop(cond, body, (jnp.int32(1), ok, vf, kept))
        if reuse:
            _, omega, source, solution = kept
        else:
            amplitudes, omega = kept
            source, solution = self._solve(amplitudes, omega, resolution, dtype)
        solution = jnp.where(ok[:, None, None], solution, jnp.nan)
        b = indices.shape[0]
        diffusion = jnp.broadcast_to(self.diffusivity * jnp.eye(2, dtype=dtype), (b, 2, 2))
        return _batch(source, solution, self.pde_id, _fraction(vf, dtype), diffusion=diffusion, omega=omega), ok


@dataclasses.dataclass(frozen=True)
class Darcy(_Task):
    """Darcy flow -div(a grad u) = f (`solvers.darcy`) with a random permeability field a(x).

    `distribution` (`solvers.permeability`): "threshold", Li et al.'s FNO benchmark, a = 12 where a Gaussian random
    field with covariance (-Laplacian + 9 I)^-2 is >= 0, else 3; or "lognormal", a = exp(g) with g a smoother
    Gaussian field of unit mean variance.  The field is a fixed set of KL coefficients per sample evaluated at the
    grid's nodes, so the same key gives the same continuum a at every resolution.

    bc="dirichlet" (the benchmark's): u = 0 on the boundary of [0, L]^2, f = 1, and the arrays hold the n x n
    interior nodes x_i = (i + 1) L / (n + 1) (any resolution >= 3; grids n and 2n + 1 share every other node).
    bc="periodic": [0, L)^2 at x_i = i L / n (even resolution >= 4); f = 1 would have nothing left once its mean
    is removed, so f is the Gaussian-bump source of the other periodic tasks (`solvers.sources`, mean removed) and
    u has zero mean.

    The batch has the keys of the other tasks plus `permeability` [B, n, n] (a at the nodes, the grid of u):
    source = f, solution = u, diffusion [B, 2, 2], velocity [B, 2] and omega [B] zeros (no constant
    coefficients), pde = 3, volume_fraction = the high-value fraction of a's nodes (the share at a = 12 for
    "threshold", of a >= sqrt(lo * hi), a's median, for "lognormal").  The solve is `solvers.darcy`'s PCG to its
    default tol for the output dtype, with the "mean" preconditioner for "threshold" and "local" for the smooth
    "lognormal" fields (13-14 and 6-12 iterations at 128 x 128); a sample whose solve did not converge (not seen
    for these distributions) makes `sample` raise, and its solution is NaN under an outer jit.

    Properties:
      permeability_range: (low, high) values of the threshold field (Li et al.'s (3, 12)); the log-normal field's
        median is their geometric mean.
      distribution: "threshold" or "lognormal".
      bc: "dirichlet" or "periodic".
      length: side L of the square.
    """

    permeability_range: tuple[float, float] = permeability.THRESHOLD_VALUES
    distribution: str = "threshold"
    bc: str = "dirichlet"
    length: float = 1.0
    name: ClassVar[str] = "darcy"
    pde_id: ClassVar[int] = 3

    def __post_init__(self):
        fix = "e.g. (3.0, 12.0)"
        rng = _range(self.permeability_range, "permeability_range", fix, lower=0.0, strict=True)
        object.__setattr__(self, "permeability_range", rng)
        if self.distribution not in permeability.DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {permeability.DISTRIBUTIONS}, got {self.distribution!r}.")
        if self.bc not in BOUNDARY_CONDITIONS:
            raise ValueError(f"bc must be one of {BOUNDARY_CONDITIONS}, got {self.bc!r}.")
        object.__setattr__(self, "length", _length(self.length))

    def _check_resolution(self, resolution: Any) -> int:
        if self.bc == "periodic":
            return _checks.check_even_resolution(resolution)
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 3:
            raise ValueError(
                f"resolution must be an int >= 3 (interior nodes per side of the Dirichlet grid), got {resolution!r}."
            )
        return resolution

    def _failure_message(self) -> str:
        return (
            f"darcy: conjugate gradients did not reach tol within {darcy_flow.DEFAULT_MAXITER} iterations for some "
            f"samples ({self.distribution}, bc={self.bc}); solve them with solvers.darcy(..., return_info=True) to "
            "see the residuals."
        )

    def _sample_indices(self, key, indices, resolution, dtype):
        def draw(k):
            k_field, k_source = jax.random.split(k)
            return permeability.draw_xi(k_field, self.bc), draw_bump_amplitudes(k_source, dtype=dtype)

        xi, (amplitudes, _) = jax.vmap(draw)(_sample_keys(key, indices))
        a, fraction = permeability.permeability(
            xi, resolution, self.bc, self.distribution, length=self.length, dtype=dtype, values=self.permeability_range
        )
        b = indices.shape[0]
        if self.bc == "dirichlet":
            source = jnp.ones((b, resolution, resolution), dtype)
        else:
            source = gaussian_source(amplitudes, resolution, length=self.length, remove_mean=True)
        h = jnp.asarray(spacing(resolution, self.length, self.bc), dtype)
        tol = jnp.asarray(darcy_flow.DEFAULT_TOL[jnp.dtype(dtype).name], dtype)
        maxiter = jnp.int32(darcy_flow.DEFAULT_MAXITER)
        preconditioner = "mean" if self.distribution == "threshold" else "local"
        solve = lambda a_i, f_i: darcy_flow.solve_one(a_i, f_i, h, tol, maxiter, self.bc, preconditioner)
        solution, info = jax.vmap(solve)(a, source)
        solution = jnp.where(info.converged[:, None, None], solution, jnp.nan)
        return _batch(source, solution, self.pde_id, fraction, permeability=a), info.converged


def _expand(mask: jax.Array, like: jax.Array) -> jax.Array:
    return mask.reshape(mask.shape + (1,) * (like.ndim - mask.ndim))


@dataclasses.dataclass(frozen=True)
class Mixed(_Task):
    """A mixture of single-PDE tasks with equal shares.

    Sample i belongs to family perm_{i // F}[i % F], perm_j a random permutation of the F tasks
    drawn from (key, j): every block of F consecutive samples holds each family once, in random
    order.  Each family's samples come from that task's sampler with its own key.

    Properties:
      tasks: the member tasks (single-family samplers, see `solvers.families`; not Mixed).
      length: side L of the periodic square; every member must have the same length.
    """

    tasks: tuple[_Task, ...] = ()
    length: float = 1.0
    name: ClassVar[str] = "mixed"

    def __post_init__(self):
        tasks = tuple(self.tasks) if isinstance(self.tasks, list | tuple) else None
        if tasks and any(isinstance(t, Darcy) for t in tasks):
            raise ValueError(
                "Mixed does not take Darcy: its batches carry a permeability field and its own grid (bc), which the "
                "mixture's layout has no channel for; sample Darcy on its own."
            )
        if not tasks or not all(isinstance(t, _Task) and not isinstance(t, Mixed) for t in tasks):
            raise ValueError(
                f"tasks must be a non-empty tuple of single-family tasks (see solvers.families), got {self.tasks!r}; "
                "e.g. Mixed((Poisson(), AdvectionDiffusion(), Helmholtz()))."
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

    def _sample_indices(self, key, indices, resolution, dtype):
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
        all_ok = None if not any(isinstance(t, Helmholtz) for t in self.tasks) else jnp.ones((b,), bool)
        for f, task in enumerate(self.tasks):
            (positions,) = jnp.nonzero(families == f, size=capacity, fill_value=b)
            sub_indices = indices[jnp.minimum(positions, b - 1)]
            sub, ok = task._sample_indices(jax.random.fold_in(key_tasks, f), sub_indices, resolution, dtype)
            if out is None:
                out = {k: jnp.zeros((b,) + v.shape[1:], v.dtype) for k, v in sub.items()}
            # Padding positions (== b) fall outside the batch and are dropped.
            out = {k: out[k].at[positions].set(sub[k], mode="drop") for k in out}
            if ok is not None:
                all_ok = all_ok.at[positions].set(ok, mode="drop")
        return out, all_ok
