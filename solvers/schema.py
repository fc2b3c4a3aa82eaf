"""The coefficient schema: what a task batch carries besides source and solution, and the model's coefficient
input channels. One table each; the samplers (`solvers.tasks`), the families (`solvers.families`) and every layer of
fno_jax read them.

COEFFICIENTS  by batch key (= the stored array's name):
  name         the batch key ("diffusion", ...);
  shape        per-sample shape ((2, 2), (2,), ());
  role         how the periodic operator A u = -div(K grad u) + v . grad u - omega u uses it: the tensor K, the
               velocity v, or the frequency omega (the residual metric rebuilds A from the input channels).
  A batch of any family holds every coefficient, zeros where its PDE has none.

CHANNELS  by channel name:
  coefficient  the batch key it reads;
  index        the entry of the per-sample array it reads (K11 is diffusion[0, 0]);
  places       the entries it stands for when the physical coefficient is rebuilt from the channels (K12 fills both
               off-diagonal entries of the symmetric K; Helmholtz's D is the tensor D * identity).
"""

from __future__ import annotations

import dataclasses

__all__ = ["CHANNELS", "COEFFICIENTS", "ROLES", "Channel", "Coefficient"]

# The roles a coefficient can play in the periodic operator (`Coefficient.role`).
ROLES = ("K", "v", "omega")


@dataclasses.dataclass(frozen=True)
class Coefficient:
    """One physical coefficient of a batch (see the module docstring)."""

    name: str
    shape: tuple[int, ...]
    role: str


@dataclasses.dataclass(frozen=True)
class Channel:
    """One coefficient input channel of the model (see the module docstring)."""

    name: str
    coefficient: str
    index: tuple[int, ...]
    places: tuple[tuple[int, ...], ...]


COEFFICIENTS: dict[str, Coefficient] = {
    c.name: c
    for c in (
        Coefficient("diffusion", (2, 2), "K"),
        Coefficient("velocity", (2,), "v"),
        Coefficient("omega", (), "omega"),
    )
}

CHANNELS: dict[str, Channel] = {
    c.name: c
    for c in (
        Channel("K11", "diffusion", (0, 0), ((0, 0),)),
        Channel("K22", "diffusion", (1, 1), ((1, 1),)),
        Channel("K12", "diffusion", (0, 1), ((0, 1), (1, 0))),
        Channel("D", "diffusion", (0, 0), ((0, 0), (1, 1))),
        Channel("v1", "velocity", (0,), ((0,),)),
        Channel("v2", "velocity", (1,), ((1,),)),
        Channel("omega", "omega", (), ((),)),
    )
}
