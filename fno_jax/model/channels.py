"""Model input channels: the source field followed by constant coefficient fields.

Layouts (channel order is part of the checkpoint contract):

    poisson              source, K11, K22, K12
    advection_diffusion  source, K11, K22, K12, v1, v2
    helmholtz            source, D, omega              (D = diffusion[..., 0, 0])
    mixed                source, K11, K22, K12, v1, v2, omega

``K`` is the full diffusion tensor of the batch (scale included), ``v = (vx, vy)`` the velocity.
In ``mixed`` a PDE that lacks a coefficient contributes zeros there (the batch already holds zeros).
Datasets keep ``source`` and the ``[B, C-1]`` coefficients; `assemble_inputs` broadcasts them to
``[B, n, n, C]`` only when the model needs them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from solvers.families import FAMILIES, MIXED, family_of_id

__all__ = [
    "LAYOUTS",
    "assemble_inputs",
    "coefficients",
    "holds",
    "layout_of",
    "num_channels",
    "physical_coefficients",
    "presence",
    "validate_layout",
]

# Helmholtz's scalar D is its diffusion tensor D * identity: in a layout with the tensor entries it is K11 = K22
# (and K12 = 0); a model that saw K11 and K22 sees D through the sum of their lift rows (`fno_jax.training.finetune`).
TENSOR_FORM = {"D": ("K11", "K22")}


def _mixed_layout() -> tuple[str, ...]:
    names: list[str] = []
    for family in FAMILIES.values():
        for name in family.coefficients:
            if name not in TENSOR_FORM and name not in names:
                names.append(name)
    return ("source", *names)


# Each family's own layout, and the union of all of them (`mixed`), from the one family table.
LAYOUTS: dict[str, tuple[str, ...]] = {
    **{name: ("source", *family.coefficients) for name, family in FAMILIES.items()},
    MIXED: _mixed_layout(),
}

# Each coefficient channel: (batch key it reads, how it is read from that array).
_COEFFICIENTS: dict[str, tuple[str, Callable[[Array], Array]]] = {
    "K11": ("diffusion", lambda k: k[:, 0, 0]),
    "K22": ("diffusion", lambda k: k[:, 1, 1]),
    "K12": ("diffusion", lambda k: k[:, 0, 1]),
    "D": ("diffusion", lambda k: k[:, 0, 0]),
    "v1": ("velocity", lambda v: v[:, 0]),
    "v2": ("velocity", lambda v: v[:, 1]),
    "omega": ("omega", lambda w: w),
}

_SHAPES = {"diffusion": (2, 2), "velocity": (2,), "omega": ()}

# The inverse of `_COEFFICIENTS`: where each channel's value goes in (diffusion, velocity, omega). D is the diffusion
# tensor D * identity, K12 fills both off-diagonal entries (K is symmetric).
_PLACES: dict[str, tuple[str, tuple[tuple[int, ...], ...]]] = {
    "K11": ("diffusion", ((0, 0),)),
    "K22": ("diffusion", ((1, 1),)),
    "K12": ("diffusion", ((0, 1), (1, 0))),
    "D": ("diffusion", ((0, 0), (1, 1))),
    "v1": ("velocity", ((0,),)),
    "v2": ("velocity", ((1,),)),
    "omega": ("omega", ((),)),
}


def _carried(family_name: str, layout: str) -> set[str]:
    """The channels of `layout` in which samples of a family carry their coefficients."""
    names = LAYOUTS[layout]
    out = set()
    for name in FAMILIES[family_name].coefficients:
        if name in names:
            out.add(name)
        else:
            out.update(n for n in TENSOR_FORM.get(name, ()) if n in names)
    return out


def holds(layout: str, task: str) -> bool:
    """Whether `layout` has a channel for every coefficient the samples of `task` carry (a narrower layout would
    drop coefficients from the inputs, e.g. mixed data in the poisson layout loses v and omega)."""
    families = FAMILIES if task == MIXED else (task,)
    for name in families:
        wanted = FAMILIES[name].coefficients
        have = LAYOUTS[validate_layout(layout)]
        if not all(w in have or all(t in have for t in TENSOR_FORM.get(w, ("?",))) for w in wanted):
            return False
    return True


def layout_of(task: str, layout: str = "") -> str:
    """The channel layout of a run: `layout` when given, else the task's own."""
    return validate_layout(layout or task)


def presence(pde: np.ndarray, layout: str) -> np.ndarray:
    """[B, C-1] bool: whether sample b's family has coefficient channel c of `layout` (from the `pde` ids).

    Normalization takes a coefficient's median only over the samples that have it: in a mixture, omega over the
    Helmholtz samples, not over the zeros of the others.
    """
    pde = np.asarray(pde)
    names = LAYOUTS[validate_layout(layout)][1:]
    out = np.zeros((len(pde), len(names)), dtype=bool)
    for pde_id in np.unique(pde):
        carried = _carried(family_of_id(int(pde_id)).name, layout)
        out[pde == pde_id] = [name in carried for name in names]
    return out


def validate_layout(name: str) -> str:
    """Return ``name`` if it is a known layout, else raise a ValueError listing the valid ones."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown channel layout {name!r}; valid layouts are {sorted(LAYOUTS)} (one per task name).")
    return name


def num_channels(layout: str) -> int:
    """Number of model input channels ``C`` (source + coefficients) of ``layout``."""
    return len(LAYOUTS[validate_layout(layout)])


def coefficients(batch: Mapping[str, Array], layout: str) -> Float[Array, "b c"]:
    """Per-instance coefficient values ``[B, C-1]`` of ``layout``, in layout order.

    ``batch`` is the task batch dict (``diffusion [B, 2, 2]``, ``velocity [B, 2]``, ``omega [B]``);
    only the keys the layout needs must be present.
    """
    names = LAYOUTS[validate_layout(layout)][1:]
    columns = []
    for name in names:
        key, read = _COEFFICIENTS[name]
        if key not in batch:
            raise ValueError(
                f"layout {layout!r} needs batch[{key!r}] for channel {name}, but the batch has "
                f"keys {sorted(batch)}; pass the dict returned by task.sample()."
            )
        value = jnp.asarray(batch[key])
        if value.ndim != 1 + len(_SHAPES[key]) or value.shape[1:] != _SHAPES[key]:
            raise ValueError(
                f"batch[{key!r}] must have shape [B, {', '.join(map(str, _SHAPES[key]))}] "
                f"(leading batch axis), got {value.shape}."
            )
        columns.append(read(value))
    return jnp.stack(columns, axis=-1)


def physical_coefficients(
    coeffs: Float[Array, "b c"], layout: str
) -> tuple[Float[Array, "b 2 2"], Float[Array, "b 2"], Float[Array, " b"]]:
    """(diffusion K [B, 2, 2], velocity v [B, 2], omega [B]) of the operator -div(K grad u) + v . grad u - omega u
    from the ``[B, C-1]`` coefficient channels of ``layout`` (raw, not normalized).

    One operator covers every family: Helmholtz's ``D`` becomes ``K = D I``; a coefficient the layout has no channel
    for is zero. Inverse of `coefficients` for the families a layout holds.
    """
    names = LAYOUTS[validate_layout(layout)][1:]
    coeffs = jnp.asarray(coeffs)
    if coeffs.ndim != 2 or coeffs.shape[1] != len(names):
        raise ValueError(
            f"coeffs must have shape [B, {len(names)}] (the coefficient channels {names} of layout {layout!r}), "
            f"got {coeffs.shape}."
        )
    batch = coeffs.shape[0]
    out = {key: jnp.zeros((batch, *shape), coeffs.dtype) for key, shape in _SHAPES.items()}
    for j, name in enumerate(names):
        key, places = _PLACES[name]
        for place in places:
            out[key] = out[key].at[(slice(None), *place)].set(coeffs[:, j])
    return out["diffusion"], out["velocity"], out["omega"]


def assemble_inputs(source: Float[Array, "b ny nx"], coeffs: Float[Array, "b c"]) -> Float[Array, "b ny nx c1"]:
    """Model inputs ``[B, ny, nx, 1 + c]``: the source, then each coefficient as a constant."""
    source = jnp.asarray(source)
    coeffs = jnp.asarray(coeffs)
    if source.ndim != 3:
        raise ValueError(f"source must have shape [B, ny, nx], got {source.shape}; add a batch axis with source[None].")
    if coeffs.ndim != 2 or coeffs.shape[0] != source.shape[0]:
        raise ValueError(
            f"coeffs must have shape [B, C-1] with B = {source.shape[0]} (the source's batch), "
            f"got {coeffs.shape}; build it with fno_jax.model.channels.coefficients(batch, layout)."
        )
    dtype = jnp.result_type(source, coeffs)
    batch, ny, nx = source.shape
    fields = jnp.broadcast_to(coeffs[:, None, None, :], (batch, ny, nx, coeffs.shape[1]))
    return jnp.concatenate([source[..., None].astype(dtype), fields.astype(dtype)], axis=-1)
