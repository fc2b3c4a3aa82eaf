"""Fine-tuning: a pretrained params pytree swapped into a fresh train state.

The pretrained model is a run's workdir (a checkpoint step) or a pretrained bundle (`fno_jax.pretrained`): the same
params and metadata either way. Only the `params` item of the pretrained checkpoint is restored; the optimizer state
and schedule start fresh.
Channel adaptation (documented contract): the lifting layer `lift` maps input channels to the hidden width, one
kernel row per channel. For a downstream layout that differs from the pretrained one, each downstream channel takes
  - the pretrained row of the same name, if there is one;
  - for Helmholtz's `D` (its diffusion is D * identity, i.e. K11 = K22 = D, K12 = 0), the sum of the pretrained
    `K11` and `K22` rows, which is exactly how the pretrained model sees that PDE in its own layout;
  - otherwise zeros (a new channel): the model's initial function on the shared channels is unchanged.
Pretrained channels the downstream lacks are dropped (as if they were zero). A downstream `K11`/`K22`/`K12` from a
pretrained `D` cannot be mapped (one number cannot say three): use the `mixed` layout for such transfers.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from fno_jax import checkpoint, pretrained
from fno_jax.config import MODEL_SIZE_KEYS
from fno_jax.model import channels
from fno_jax.model.normalization import NormStats
from fno_jax.runtime.cli_errors import UserError
from fno_jax.storage import paths
from fno_jax.storage.workdir import RunMeta
from fno_jax.training.optim import param_path


class TransferError(UserError, ValueError):
    """A pretrained model that cannot initialise the requested downstream model."""


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """A pretrained model to start from: its checkpoint step, params (numpy) and metadata."""

    step: int
    params: Any
    meta: RunMeta


def load_pretrained(init_from: str, init_step: int, *, model: Mapping[str, int], layout: str) -> Pretrained:
    """The pretrained model `init_from` (a run's workdir at `init_step`, -1: its best-validation step; or a bundle of
    `fno_jax.pretrained`), checked to initialise a model of architecture `model` with input layout `layout`; a
    TransferError says what does not fit."""
    if not paths.isdir(init_from):
        raise TransferError(
            f"config.init_from={init_from!r} is not a directory; point it at the workdir of a finished pretraining run "
            "or at a pretrained bundle."
        )
    if pretrained.is_bundle(init_from):
        found = _from_bundle(init_from, init_step)
    else:
        try:
            step, meta = checkpoint.load_meta(init_from, "best" if init_step in (-1, None) else init_step)
            found = Pretrained(step, checkpoint.load_params(init_from, step), meta)
        except checkpoint.CheckpointError as err:
            raise TransferError(f"config.init_from={init_from!r}: {err}") from err
    check_architecture(found.meta.model, model, init_from)
    channel_map(found.meta.layout, layout)  # raises when the channels cannot be mapped
    return found


def _from_bundle(path: str, init_step: int) -> Pretrained:
    """A bundle as a Pretrained: its params, and a RunMeta rebuilt from its card."""
    try:
        _, params, card = pretrained.load(path)
    except pretrained.BundleError as err:
        raise TransferError(f"config.init_from={path!r}: {err}") from err
    step = (card.get("training") or {}).get("step")
    if init_step not in (-1, None, step):
        raise TransferError(
            f"config.init_from={path!r} is a bundle of step {step} only, but config.init_step={init_step}; leave "
            "config.init_step=-1, or point init_from at the run's workdir to start from another step."
        )
    meta = RunMeta(
        model={key: int(card["model"][key]) for key in MODEL_SIZE_KEYS},
        layout=card["layout"],
        norm_stats=pretrained.norm_stats(card),
        task_spec=card.get("task_spec") or {},
        config=card.get("run_config") or {},
        provenance=card.get("provenance") or {},
    )
    return Pretrained(int(step) if step is not None else 0, params, meta)


def check_architecture(pretrained_model: Mapping[str, int], model: Mapping[str, int], init_from: str) -> None:
    """Same width/modes/depth/fc_dim, or a TransferError naming what differs."""
    diff = {k: (pretrained_model.get(k), model[k]) for k in MODEL_SIZE_KEYS if pretrained_model.get(k) != model[k]}
    if diff:
        text = ", ".join(f"{k}: pretrained {a} vs config {b}" for k, (a, b) in diff.items())
        raise TransferError(
            f"the checkpoint in {init_from} is another architecture ({text}); set config.model to the pretrained "
            "sizes or choose a matching init_from."
        )


def check_shapes(pretrained, fresh) -> None:
    """Every leaf but the lift kernel must match the fresh model's shape; names the mismatches."""
    flat_p = {param_path(p): np.shape(v) for p, v in jax.tree_util.tree_leaves_with_path(pretrained)}
    flat_f = {param_path(p): np.shape(v) for p, v in jax.tree_util.tree_leaves_with_path(fresh)}
    bad = []
    for name in sorted(set(flat_p) | set(flat_f)):
        if name == "lift/kernel":
            continue
        if flat_p.get(name) != flat_f.get(name):
            bad.append(f"{name}: pretrained {flat_p.get(name)} vs model {flat_f.get(name)}")
    if bad:
        raise TransferError("pretrained params do not fit the model: " + "; ".join(bad[:8]))


def channel_map(pretrained_layout: str, layout: str) -> list[list[int]]:
    """For each downstream channel, the pretrained channel indices whose lift rows it takes (summed)."""
    src = channels.LAYOUTS[channels.validate_layout(pretrained_layout)]
    dst = channels.LAYOUTS[channels.validate_layout(layout)]
    index = {name: i for i, name in enumerate(src)}
    mapping = []
    for name in dst:
        if name in index:
            mapping.append([index[name]])
        elif all(t in index for t in channels.TENSOR_FORM.get(name, ("?",))):
            mapping.append([index[t] for t in channels.TENSOR_FORM[name]])
        elif any(name in ("K12", *tensor) and scalar in index for scalar, tensor in channels.TENSOR_FORM.items()):
            raise TransferError(
                f"channel {name} of layout {layout!r} cannot be mapped from the pretrained layout "
                f"{pretrained_layout!r} (it has only the scalar D); pretrain and fine-tune with data.layout='mixed'."
            )
        else:
            mapping.append([])
    return mapping


def adapt_lift_kernel(kernel: np.ndarray, pretrained_layout: str, layout: str) -> np.ndarray:
    """Lift kernel [C_pretrained, width] -> [C_downstream, width] per `channel_map`."""
    kernel = np.asarray(kernel)
    expected = len(channels.LAYOUTS[pretrained_layout])
    if kernel.shape[0] != expected:
        raise TransferError(
            f"pretrained lift kernel has {kernel.shape[0]} input channels but layout {pretrained_layout!r} has "
            f"{expected}; the checkpoint's metadata is inconsistent."
        )
    rows = [
        kernel[idx].sum(axis=0) if idx else np.zeros(kernel.shape[1], kernel.dtype)
        for idx in channel_map(pretrained_layout, layout)
    ]
    return np.stack(rows)


def transfer_params(pretrained, fresh, pretrained_layout: str, layout: str):
    """The pretrained params, lift adapted to `layout`, cast to the fresh params' dtypes (a new pytree)."""
    check_shapes(pretrained, fresh)
    adapted = jax.tree_util.tree_map(np.asarray, pretrained)
    adapted = {k: dict(v) if isinstance(v, Mapping) else v for k, v in adapted.items()}
    adapted["lift"]["kernel"] = adapt_lift_kernel(adapted["lift"]["kernel"], pretrained_layout, layout)
    return jax.tree_util.tree_map(lambda p, f: np.asarray(p, dtype=np.asarray(f).dtype), adapted, fresh)


def transfer_stats(pretrained: NormStats, downstream: NormStats, pretrained_layout: str, layout: str) -> NormStats:
    """`finetune.norm_stats="pretrained"`: the pretrained source scale and coefficient scales for channels that
    map one-to-one; downstream scales for the rest."""
    scales = []
    for j, idx in enumerate(channel_map(pretrained_layout, layout)[1:]):
        if len(idx) == 1:
            scales.append(pretrained.coeff_scale[idx[0] - 1])
        else:
            scales.append(downstream.coeff_scale[j])
    return NormStats(source_scale=pretrained.source_scale, coeff_scale=tuple(scales))
