"""The coefficient schema: what a task batch carries besides source and solution, and the model's coefficient
input channels. One table each; the samplers (`solvers.tasks`), the families (`solvers.families`) and every layer of
fno_jax read them.

COEFFICIENTS  by batch key (= the stored array's name):
  name         the batch key ("diffusion", ...);
  shape        per-sample shape ((2, 2), (2,), ()); of a field, per grid point;
  role         how the operator uses it: the periodic A u = -div(K grad u) + v . grad u - omega u takes the tensor
               K, the velocity v and the frequency omega (the residual metric rebuilds A from the input channels);
               Darcy's -div(a grad u) the permeability field a;
  field        a field on the grid [B, n, n] (a(x)), not one value per sample.
  A batch of any family holds every per-sample coefficient, zeros where its PDE has none, and the fields of its own
  family only (a Poisson batch carries no permeability field).

CHANNELS  by channel name:
  coefficient  the batch key it reads;
  index        the entry of the per-sample array it reads (K11 is diffusion[0, 0]);
  places       the entries it stands for when the physical coefficient is rebuilt from the channels (K12 fills both
               off-diagonal entries of the symmetric K; Helmholtz's D is the tensor D * identity);
  tensor_form  the diffusion-tensor channels whose sum it equals, for a model that saw those instead: Helmholtz's
               D and Darcy's a are isotropic diffusions (D I, a(x) I), K11 = K22 = D (the lift's channel map,
               `fno_jax.training.finetune`).
"""

from __future__ import annotations

import dataclasses

__all__ = ["CHANNELS", "COEFFICIENTS", "FIELDS", "ROLES", "Channel", "Coefficient"]

# The roles a coefficient can play in an operator (`Coefficient.role`).
ROLES = ("K", "v", "omega", "a")


@dataclasses.dataclass(frozen=True)
class Coefficient:
    """One physical coefficient of a batch (see the module docstring)."""

    name: str
    shape: tuple[int, ...]
    role: str
    field: bool = False


@dataclasses.dataclass(frozen=True)
class Channel:
    """One coefficient input channel of the model (see the module docstring)."""

    name: str
    coefficient: str
    index: tuple[int, ...]
    places: tuple[tuple[int, ...], ...]
    tensor_form: tuple[str, ...] = ()

    @property
    def field(self) -> bool:
        return COEFFICIENTS[self.coefficient].field


COEFFICIENTS: dict[str, Coefficient] = {
    c.name: c
    for c in (
        Coefficient("diffusion", (2, 2), "K"),
        Coefficient("velocity", (2,), "v"),
        Coefficient("omega", (), "omega"),
        Coefficient("permeability", (), "a", field=True),
    )
}

CHANNELS: dict[str, Channel] = {
    c.name: c
    for c in (
        Channel("K11", "diffusion", (0, 0), ((0, 0),)),
        Channel("K22", "diffusion", (1, 1), ((1, 1),)),
        Channel("K12", "diffusion", (0, 1), ((0, 1), (1, 0))),
        Channel("D", "diffusion", (0, 0), ((0, 0), (1, 1)), tensor_form=("K11", "K22")),
        Channel("v1", "velocity", (0,), ((0,),)),
        Channel("v2", "velocity", (1,), ((1,),)),
        Channel("omega", "omega", (), ((),)),
        Channel("a", "permeability", (), ((),), tensor_form=("K11", "K22")),
    )
}

# The field coefficients, carried only by batches of the families that have them.
FIELDS = tuple(name for name, c in COEFFICIENTS.items() if c.field)
