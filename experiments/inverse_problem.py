"""A differentiable surrogate: recover the diffusion tensor of a Poisson problem from observed solutions.

The unknowns are the eigenvalue e and the angle t of K = 0.01 R(-t) diag(1, e) R(t) (`solvers.rotated_diffusion`);
the data are solutions u_obs of -div(K grad u) = f for a few known sources f. Gradient descent (Adam) on

    loss(e, t) = sum_b ||forward(f_b, K(e, t)) - u_obs_b||^2 / sum_b ||u_obs_b||^2

runs through a forward model: the spectral solver `solvers.poisson` (exact, the reference) or a pretrained
operator (`fno_jax.pretrained.operator`, one network call per step at any resolution). e is optimized as log(e - 1)
(e > 1 keeps the two eigen-directions distinguishable; e = 1 makes t meaningless), and t is only defined modulo pi,
so the descent starts from several angles at once (vmap) and keeps the lowest loss.

    python -m experiments.inverse_problem --bundle poisson-e1_5-32 --eigenvalue 3.0 --angle 0.7
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import solvers
from solvers.tasks import Poisson

__all__ = ["Estimate", "observe", "recover", "solver_forward", "operator_forward", "main"]

Forward = Callable[[jax.Array, jax.Array], jax.Array]  # (source [B, n, n], K [2, 2]) -> u [B, n, n]


@dataclasses.dataclass(frozen=True)
class Estimate:
    """The recovered (eigenvalue, angle in [0, pi)), the final relative misfit, and the wall time in seconds
    (compilation included)."""

    eigenvalue: float
    angle: float
    misfit: float
    seconds: float

    def errors(self, eigenvalue: float, angle: float) -> tuple[float, float]:
        """(relative error of e, angle error in radians modulo pi)."""
        d = (self.angle - angle) % math.pi
        return abs(self.eigenvalue - eigenvalue) / eigenvalue, min(d, math.pi - d)


def observe(eigenvalue: float, angle: float, *, num: int = 4, resolution: int = 32, seed: int = 0):
    """(sources [num, n, n], u_obs [num, n, n]): Gaussian-bump sources of the Poisson task (a fixed key) and their
    exact solutions for the true K(eigenvalue, angle) by the spectral solver."""
    batch = Poisson().sample(jax.random.key(seed), num, resolution)
    diffusion = solvers.rotated_diffusion(eigenvalue, angle)
    return batch["source"], solvers.poisson(batch["source"], diffusion)


def solver_forward(source: jax.Array, diffusion: jax.Array) -> jax.Array:
    return solvers.poisson(source, diffusion)


def operator_forward(op) -> Forward:
    """The forward model of a pretrained operator (`fno_jax.pretrained.operator`)."""

    def forward(source: jax.Array, diffusion: jax.Array) -> jax.Array:
        return op(source, diffusion=jnp.broadcast_to(diffusion, (source.shape[0], 2, 2)))

    return forward


def _unknowns(z: jax.Array) -> tuple[jax.Array, jax.Array]:
    return 1.0 + jnp.exp(z[0]), z[1]


def recover(
    forward: Forward,
    source: jax.Array,
    observed: jax.Array,
    *,
    initial_eigenvalue: float = 2.0,
    initial_angles: Sequence[float] = (0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4),
    steps: int = 300,
    learning_rate: float = 0.05,
) -> Estimate:
    """Gradient descent on (log(e - 1), t) from each initial angle; the start with the lowest final loss wins."""
    scale = jnp.sum(observed**2)

    def loss(z):
        e, t = _unknowns(z)
        u = forward(source, solvers.rotated_diffusion(e, t))
        return jnp.sum((u - observed) ** 2) / scale

    optimizer = optax.adam(learning_rate)

    def descend(z0):
        def step(carry, _):
            z, state = carry
            value, grad = jax.value_and_grad(loss)(z)
            updates, state = optimizer.update(grad, state)
            return (optax.apply_updates(z, updates), state), value

        (z, _), _ = jax.lax.scan(step, (z0, optimizer.init(z0)), None, length=steps)
        return z, loss(z)

    starts = jnp.asarray([[math.log(initial_eigenvalue - 1.0), t] for t in initial_angles], observed.dtype)
    start = time.perf_counter()
    z, losses = jax.jit(jax.vmap(descend))(starts)
    losses = np.asarray(losses)
    best = int(np.argmin(losses))
    e, t = _unknowns(z[best])
    seconds = time.perf_counter() - start
    return Estimate(float(e), float(t) % math.pi, float(math.sqrt(losses[best])), seconds)


def main(argv: Sequence[str] | None = None) -> None:
    from fno_jax import pretrained

    parser = argparse.ArgumentParser(prog="python -m experiments.inverse_problem", description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default="poisson-e1_5-32", help="a bundle directory or shipped bundle name")
    parser.add_argument("--eigenvalue", type=float, default=3.0)
    parser.add_argument("--angle", type=float, default=0.7)
    parser.add_argument("--num", type=int, default=4, help="observed solutions (sources)")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    source, observed = observe(args.eigenvalue, args.angle, num=args.num, resolution=args.resolution)
    op = pretrained.operator(args.bundle)
    for name, forward in (("solvers.poisson", solver_forward), (f"operator {args.bundle}", operator_forward(op))):
        est = recover(forward, source, observed, steps=args.steps)
        e_err, t_err = est.errors(args.eigenvalue, args.angle)
        print(
            f"{name:28s} e = {est.eigenvalue:.4f} (error {100 * e_err:.2f}%), t = {est.angle:.4f} "
            f"(error {t_err:.4f} rad), misfit {est.misfit:.2e}, {est.seconds:.2f} s"
        )


if __name__ == "__main__":
    main()
