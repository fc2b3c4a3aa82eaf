"""Model input channels: the source field followed by constant coefficient fields.

Layouts (channel order is part of the checkpoint contract), derived from the family table (`solvers.families`) and
the channel table (`solvers.schema.CHANNELS`: which batch entry each channel reads):

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

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from solvers.families import CHANNELS, COEFFICIENTS, FAMILIES, MIXED, MIXTURE, family_of_id

__all__ = [
    "LAYOUTS",
    "assemble_inputs",
    "field_channels",
    "fields",
    "residual_coefficients",
    "scalar_channels",
    "coefficients",
    "holds",
    "num_channels",
    "physical_coefficients",
    "presence",
    "validate_layout",
]


# Helmholtz's scalar D is its diffusion tensor D * identity, Darcy's a(x) the field a(x) * identity: in a layout with
# the tensor entries they are K11 = K22 (and K12 = 0); a model that saw K11 and K22 sees them through the sum of
# their lift rows (`fno_jax.training.finetune`).
TENSOR_FORM: dict[str, tuple[str, ...]] = {name: c.tensor_form for name, c in CHANNELS.items() if c.tensor_form}


def _mixed_layout() -> tuple[str, ...]:
    names: list[str] = []
    for family in (FAMILIES[name] for name in MIXTURE):
        for name in family.coefficients:
            if name not in TENSOR_FORM and name not in names:
                names.append(name)
    return ("source", *names)


# Each family's own layout, and the union of all of them (`mixed`), from the one family table.
LAYOUTS: dict[str, tuple[str, ...]] = {
    **{name: ("source", *family.coefficients) for name, family in FAMILIES.items()},
    MIXED: _mixed_layout(),
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


def _in_tensor_form(name: str, have: tuple[str, ...]) -> bool:
    """Whether the scalar coefficient `name` is carried by `have`'s diffusion-tensor channels (a field never is)."""
    return not CHANNELS[name].field and all(t in have for t in TENSOR_FORM.get(name, ("?",)))


def holds(layout: str, task: str) -> bool:
    """Whether `layout` has a channel for every coefficient the samples of `task` carry (a narrower layout would
    drop coefficients from the inputs, e.g. mixed data in the poisson layout loses v and omega)."""
    families = FAMILIES if task == MIXED else (task,)
    for name in families:
        wanted = FAMILIES[name].coefficients
        have = LAYOUTS[validate_layout(layout)]
        # A field coefficient needs its own channel: constant channels cannot carry it.
        if not all(w in have or _in_tensor_form(w, have) for w in wanted):
            return False
    return True


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


def scalar_channels(layout: str) -> tuple[str, ...]:
    """The coefficient channels of `layout` with one value per sample (constant fields), in layout order."""
    return tuple(name for name in LAYOUTS[validate_layout(layout)][1:] if not CHANNELS[name].field)


def field_channels(layout: str) -> tuple[str, ...]:
    """The coefficient channels of `layout` that are fields on the grid (Darcy's a(x)), in layout order; they
    follow the scalar ones."""
    return tuple(name for name in LAYOUTS[validate_layout(layout)][1:] if CHANNELS[name].field)


def fields(batch: Mapping[str, Array], layout: str) -> Float[Array, "b n n f"] | None:
    """The field channels of `layout` from a task batch, ``[B, n, n, F]`` raw (None when it has none)."""
    names = field_channels(layout)
    if not names:
        return None
    missing = [CHANNELS[n].coefficient for n in names if CHANNELS[n].coefficient not in batch]
    if missing:
        raise ValueError(
            f"layout {layout!r} needs batch[{missing[0]!r}] (a field [B, n, n]), but the batch has keys "
            f"{sorted(batch)}; pass the dict returned by task.sample()."
        )
    return jnp.stack([jnp.asarray(batch[CHANNELS[n].coefficient]) for n in names], axis=-1)


def coefficients(batch: Mapping[str, Array], layout: str) -> Float[Array, "b c"]:
    """Per-instance coefficient values ``[B, C_s]`` of ``layout``'s scalar channels, in layout order (its field
    channels: `fields`).

    ``batch`` is the task batch dict (``diffusion [B, 2, 2]``, ``velocity [B, 2]``, ``omega [B]``);
    only the keys the layout needs must be present.
    """
    names = scalar_channels(layout)
    if not names:
        return jnp.zeros((jnp.shape(batch["source"])[0], 0), jnp.asarray(batch["source"]).dtype)
    columns = []
    for name in names:
        channel = CHANNELS[name]
        key, shape = channel.coefficient, COEFFICIENTS[channel.coefficient].shape
        if key not in batch:
            raise ValueError(
                f"layout {layout!r} needs batch[{key!r}] for channel {name}, but the batch has "
                f"keys {sorted(batch)}; pass the dict returned by task.sample()."
            )
        value = jnp.asarray(batch[key])
        if value.ndim != 1 + len(shape) or value.shape[1:] != shape:
            raise ValueError(
                f"batch[{key!r}] must have shape [B, {', '.join(map(str, shape))}] (leading batch axis), got "
                f"{value.shape}."
            )
        columns.append(value[(slice(None), *channel.index)])
    return jnp.stack(columns, axis=-1)


def physical_coefficients(
    coeffs: Float[Array, "b c"], layout: str
) -> tuple[Float[Array, "b 2 2"], Float[Array, "b 2"], Float[Array, " b"]]:
    """(diffusion K [B, 2, 2], velocity v [B, 2], omega [B]) of the operator -div(K grad u) + v . grad u - omega u
    from the ``[B, C-1]`` coefficient channels of ``layout`` (raw, not normalized).

    One operator covers every family: Helmholtz's ``D`` becomes ``K = D I``; a coefficient the layout has no channel
    for is zero. Inverse of `coefficients` for the families a layout holds.
    """
    names = scalar_channels(layout)
    coeffs = jnp.asarray(coeffs)
    if coeffs.ndim != 2 or coeffs.shape[1] != len(names):
        raise ValueError(
            f"coeffs must have shape [B, {len(names)}] (the coefficient channels {names} of layout {layout!r}), "
            f"got {coeffs.shape}."
        )
    batch = coeffs.shape[0]
    out = {c.name: jnp.zeros((batch, *c.shape), coeffs.dtype) for c in COEFFICIENTS.values() if not c.field}
    for j, name in enumerate(names):
        channel = CHANNELS[name]
        for place in channel.places:
            out[channel.coefficient] = out[channel.coefficient].at[(slice(None), *place)].set(coeffs[:, j])
    by_role = {c.role: out[c.name] for c in COEFFICIENTS.values() if not c.field}
    return by_role["K"], by_role["v"], by_role["omega"]


def residual_coefficients(batch: Mapping[str, Array], layout: str):
    """What the residual of `layout`'s operator needs from a raw batch {"source", "coeffs"[, "fields"]}: the periodic
    operator's (K, v, omega) (`physical_coefficients`), or for Darcy's layout {"a": the permeability field}."""
    if field_channels(layout):
        return {"a": jnp.asarray(batch["fields"])[..., field_channels(layout).index("a")]}
    return physical_coefficients(batch["coeffs"], layout)


def assemble_inputs(
    source: Float[Array, "b ny nx"], coeffs: Float[Array, "b c"], fields: Float[Array, "b ny nx f"] | None = None
) -> Float[Array, "b ny nx c1"]:
    """Model inputs ``[B, ny, nx, 1 + c (+ f)]``: the source, then each scalar coefficient as a constant field, then
    the field coefficients."""
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
    constants = jnp.broadcast_to(coeffs[:, None, None, :], (batch, ny, nx, coeffs.shape[1]))
    parts = [source[..., None].astype(dtype), constants.astype(dtype)]
    if fields is not None:
        parts.append(jnp.asarray(fields).astype(dtype))
    return jnp.concatenate(parts, axis=-1)
