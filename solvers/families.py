"""The PDE families and the coefficients they carry: the tables every layer reads.

Everything that names a family or a coefficient derives from here: channel layouts and the lift's channel map
(`fno_jax.model.channels`), config keys and checks (`fno_jax.config`), stored and imported datasets
(`fno_jax.data`), the residual metric (`fno_jax.training.metrics`), study configs and benchmarks. Adding a family
whose coefficients exist is its solver, its sampler (`solvers.tasks`) and one `Family` entry below; a new coefficient
is one `Coefficient` entry and its `Channel`s.

COEFFICIENTS and CHANNELS (what a batch carries, the model's coefficient channels) are `solvers.schema`'s, re-exported
here.

FAMILIES  the PDE families, by task name:
  sampler      the task class in `solvers.tasks` (its `name` and `pde_id`: the integer stored per sample in `pde`);
  range_field  the sampler field that sets the coefficient range a study shifts (e.g. "eigenvalue_range"), and
  range_label  its short letter in run names ("e5-10", "r1-2", "w5-15");
  default_range the paper's pre-training (in-distribution) range; integer_range: whether the range holds integers;
  coefficients the channels of the family's own layout, in order (the layout is the source followed by these);
  in_mixture   whether the mixture of families (`MIXED`) holds it: the periodic families; Darcy's grid (Dirichlet
               boundaries, interior nodes) and field coefficient are of another kind;
  operator     the residual's operator: "periodic" (the spectral -div(K grad u) + v . grad u - omega u of the three
               periodic families) or "darcy" (the finite-volume -div(a grad u) with u = 0 on the boundary);
  options      sampler fields beyond the range a config may set (`task_options`), with their defaults: Darcy's
               boundary condition and permeability distribution.

`MIXED` names the mixture of all families (`solvers.tasks.Mixed`), which is not a family of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from solvers import tasks
from solvers.schema import CHANNELS, COEFFICIENTS, Channel, Coefficient

__all__ = [
    "CHANNELS",
    "COEFFICIENTS",
    "FAMILIES",
    "MIXED",
    "MIXTURE",
    "TASK_NAMES",
    "TASK_OPTIONS",
    "Channel",
    "Coefficient",
    "Family",
    "family_of_id",
    "make_task",
    "task_from_spec",
]

MIXED = "mixed"


@dataclasses.dataclass(frozen=True)
class Family:
    """One PDE family (see the module docstring for the fields)."""

    sampler: type
    range_field: str
    range_label: str
    default_range: tuple[float, float]
    integer_range: bool
    coefficients: tuple[str, ...]
    in_mixture: bool = True
    operator: str = "periodic"
    options: tuple[tuple[str, Any], ...] = ()

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
        Family(tasks.Poisson, "eigenvalue_range", "e", (1.0, 5.0), False, ("K11", "K22", "K12")),
        Family(tasks.AdvectionDiffusion, "ratio_range", "r", (0.2, 1.0), False, ("K11", "K22", "K12", "v1", "v2")),
        Family(tasks.Helmholtz, "omega_range", "w", (1, 10), True, ("D", "omega")),
        Family(
            tasks.Darcy,
            "permeability_range",
            "a",
            (3.0, 12.0),
            False,
            ("a",),
            in_mixture=False,
            operator="darcy",
            options=(("bc", "dirichlet"), ("distribution", "threshold")),
        ),
    )
}
# The families the mixture draws from.
MIXTURE: tuple[str, ...] = tuple(name for name, family in FAMILIES.items() if family.in_mixture)
# Every sampler option a config's `task_options` may set (family options by name, with their defaults).
TASK_OPTIONS: dict[str, Any] = {key: value for family in FAMILIES.values() for key, value in family.options}
# Every name a config's `task` may take: the families, then their mixture.
TASK_NAMES: tuple[str, ...] = (*FAMILIES, MIXED)


def family_of_id(pde_id: int) -> Family:
    """The family whose samples carry `pde` = `pde_id`."""
    for family in FAMILIES.values():
        if family.pde_id == pde_id:
            return family
    raise ValueError(f"pde id {pde_id!r} is not one of {[f.pde_id for f in FAMILIES.values()]}.")


def make_task(name: str, ranges: Mapping[str, Any], length: float = 1.0, options: Mapping[str, Any] | None = None):
    """The sampler of task `name` ("mixed": all families) with its range field read from `ranges` and its `options`
    (e.g. Darcy's "bc") from `options`.

    `ranges` maps range fields to (low, high) pairs, e.g. a config's `task_ranges`; `options` option names to values,
    e.g. a config's `task_options`. Fields a task does not read are ignored; the samplers validate the values.
    """
    options = dict(options or {})

    def single(family: Family):
        own = {key: options.get(key, default) for key, default in family.options}
        return family.sampler(**{family.range_field: tuple(ranges[family.range_field])}, **own, length=length)

    if name == MIXED:
        return tasks.Mixed(tuple(single(FAMILIES[f]) for f in MIXTURE), length=length)
    if name not in FAMILIES:
        raise ValueError(f"task {name!r} is not one of {TASK_NAMES}.")
    return single(FAMILIES[name])


def task_from_spec(spec: Mapping[str, Any]):
    """The task of `task.spec()` (its inverse): a family's sampler, or a mixture of them."""
    samplers = {name: family.sampler for name, family in FAMILIES.items()} | {MIXED: tasks.Mixed}
    if not isinstance(spec, Mapping) or spec.get("name") not in samplers:
        raise ValueError(
            f"spec must be a dict with 'name' in {sorted(samplers)}, got {spec!r}; make it with task.spec()."
        )
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    if spec["name"] == MIXED:
        kwargs["tasks"] = tuple(task_from_spec(s) for s in kwargs.get("tasks", ()))
    try:
        return samplers[spec["name"]](**kwargs)
    except TypeError as err:
        raise ValueError(f"spec for {spec['name']} has unknown fields: {err}.") from None
