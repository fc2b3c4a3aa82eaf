"""The model on raw physical inputs: normalization and channel assembly in front of the FNO.

A raw batch is `{"source": [B, n, n], "coeffs": [B, C-1], ...}`: the source field and the per-instance coefficient
values of a channel layout (`fno_jax.model.channels.coefficients`). `predict` normalizes them with the run's
statistics (`fno_jax.model.normalization`), broadcasts the coefficients to constant fields and returns the model's
solution u [B, n, n] in physical units (the target is never scaled: u is invariant when f and the coefficients are
scaled together).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from fno_jax.model import channels, normalization
from fno_jax.model.fno import FNO

__all__ = ["SIZE_KEYS", "from_config", "model_inputs", "predict"]

# The keys that fix a model's architecture (and its parameter count, with the channel layout).
SIZE_KEYS = ("width", "modes", "depth", "fc_dim")

Batch = dict[str, jax.Array]


def from_config(config: ml_collections.ConfigDict) -> FNO:
    """The FNO of a run config: `model.<SIZE_KEYS>`, compute dtype (`train.dtype`), remat, initialization and domain
    padding."""
    dtype = jnp.bfloat16 if config.train.dtype == "bfloat16" else jnp.float32
    m = config.model
    return FNO(
        **{k: m[k] for k in SIZE_KEYS}, out_dim=1, dtype=dtype, remat=m.remat, param_init=m.init, padding=m.padding
    )


def model_inputs(batch: Batch, norm: normalization.NormStats | normalization.ScaleArrays, length: float) -> jax.Array:
    """Normalized, channels-last model input [B, n, n, C] from a raw batch (`batch["fields"]` [B, n, n, F]: the field
    coefficient channels, when the layout has any)."""
    if batch.get("fields") is None:
        source, coeffs = normalization.normalize(batch["source"], batch["coeffs"], norm, length=length)
        return channels.assemble_inputs(source, coeffs)
    source, coeffs, fields = normalization.normalize(
        batch["source"], batch["coeffs"], norm, length=length, fields=batch["fields"]
    )
    return channels.assemble_inputs(source, coeffs, fields)


def predict(params: Any, batch: Batch, *, model: nn.Module, norm, length: float) -> jax.Array:
    """The model's u [B, n, n] for a raw batch; `norm` is the run's `NormStats` (or its `ScaleArrays`)."""
    return model.apply({"params": params}, model_inputs(batch, norm, length))[..., 0]
