"""The PDE families: the one table that names them.

Everything that needs to list the families (channel layouts, config checks, dataset codes, study configs,
benchmarks) derives from `FAMILIES`; adding a family is one entry here plus its sampler in `solvers.tasks`.

Each family has:
  name         the task name used in configs and datasets ("poisson", ...), = its sampler's `name`;
  pde_id       the integer stored per sample in a batch's `pde` array, = its sampler's `pde_id`;
  sampler      the task class in `solvers.tasks` (Poisson, AdvectionDiffusion, Helmholtz);
  range_field  the sampler field that sets the coefficient range a study shifts (e.g. "eigenvalue_range");
  range_label  the short letter of that range in run names ("e5-10", "r1-2", "w5-15");
  coefficients the per-sample coefficients the family's model inputs carry, in channel order (the family's own
               channel layout is the source followed by these): K11, K22, K12 are the entries of the diffusion
               tensor K, v1, v2 the velocity, D the scalar diffusivity, omega the Helmholtz frequency.

`MIXED` names the mixture of all families (`solvers.tasks.Mixed`), which is not a family of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from solvers import tasks

__all__ = ["FAMILIES", "MIXED", "TASK_NAMES", "Family", "family_of_id", "make_task"]

MIXED = "mixed"


@dataclasses.dataclass(frozen=True)
class Family:
    """One PDE family (see the module docstring for the fields)."""

    sampler: type
    range_field: str
    range_label: str
    coefficients: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.sampler.name

    @property
    def pde_id(self) -> int:
        return self.sampler.pde_id

    @property
    def num_coefficients(self) -> int:
        return len(self.coefficients)


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(tasks.Poisson, "eigenvalue_range", "e", ("K11", "K22", "K12")),
        Family(tasks.AdvectionDiffusion, "ratio_range", "r", ("K11", "K22", "K12", "v1", "v2")),
        Family(tasks.Helmholtz, "omega_range", "w", ("D", "omega")),
    )
}
# Every name a config's `task` may take: the families, then their mixture.
TASK_NAMES: tuple[str, ...] = (*FAMILIES, MIXED)


def family_of_id(pde_id: int) -> Family:
    """The family whose samples carry `pde` = `pde_id`."""
    for family in FAMILIES.values():
        if family.pde_id == pde_id:
            return family
    raise ValueError(f"pde id {pde_id!r} is not one of {[f.pde_id for f in FAMILIES.values()]}.")


def make_task(name: str, ranges: Mapping[str, Any], length: float = 1.0):
    """The sampler of task `name` ("mixed": all families) with its range field read from `ranges`.

    `ranges` maps range fields to (low, high) pairs, e.g. a config's `task_ranges`; fields a task does not read
    are ignored. The samplers validate the ranges themselves.
    """

    def single(family: Family):
        return family.sampler(**{family.range_field: tuple(ranges[family.range_field])}, length=length)

    if name == MIXED:
        return tasks.Mixed(tuple(single(f) for f in FAMILIES.values()), length=length)
    if name not in FAMILIES:
        raise ValueError(f"task {name!r} is not one of {TASK_NAMES}.")
    return single(FAMILIES[name])
