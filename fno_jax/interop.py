"""Conversion between `fno_jax.FNO` params and the reference PyTorch FNO ``state_dict``.

Reference layout (fields ``[batch, channel, y, x]``, PyTorch Linear weights ``[out, in]``):

    fc0.weight [width, in], fc0.bias [width]                 lift
    sp_convs.{i}.weights1 [width, width, m, m, 2]            rfft2 modes rows [:m],  cols [:m]
    sp_convs.{i}.weights2 [width, width, m, m, 2]            rfft2 modes rows [-m:], cols [:m]
    ws.{i}.weight [width, width, 1], ws.{i}.bias [width]     Conv1d(k=1): pointwise branch
    fc1.weight [fc_dim, width], fc1.bias [fc_dim]
    fc2.weight [out, fc_dim], fc2.bias [out]

Both sides use ``norm="ortho"`` FFTs over ``(y, x)`` and the same ``[in, out, m, m, 2]`` (real, imag)
spectral weights, so those copy over unchanged; Dense kernels are the transposed Linear weights.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from fno_jax.model import FNO
from fno_jax.storage.version import package_version

__all__ = ["bundle_from_state_dict", "export_reference_state_dict", "load_reference_state_dict"]

_LAYER_KEY = re.compile(r"^(sp_convs|ws)\.(\d+)\.(weights1|weights2|weight|bias)$")


def _to_numpy(value: Any, key: str) -> np.ndarray:
    # Torch tensors are duck-typed so that torch stays an optional dependency.
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"state_dict[{key!r}] must hold floating values, got dtype {array.dtype}.")
    return array


def _expect(state: Mapping[str, np.ndarray], key: str, shape: tuple[int, ...]) -> np.ndarray:
    if state[key].shape != shape:
        raise ValueError(
            f"state_dict[{key!r}] has shape {state[key].shape}, expected {shape} from the other "
            "tensors; the state_dict mixes models of different sizes."
        )
    return state[key]


def _check_layout(state: dict[str, np.ndarray]) -> int:
    """The number of Fourier layers of a reference ``state_dict``; an error naming missing or unexpected keys."""
    fixed = {f"{name}.{kind}" for name in ("fc0", "fc1", "fc2") for kind in ("weight", "bias")}
    layers = {int(m.group(2)) for key in state if (m := _LAYER_KEY.match(key))}
    depth = max(layers) + 1 if layers else 0
    expected = fixed | {
        f"{prefix}.{i}.{kind}"
        for i in range(depth)
        for prefix, kinds in (("sp_convs", ("weights1", "weights2")), ("ws", ("weight", "bias")))
        for kind in kinds
    }
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected or depth == 0:
        raise ValueError(
            "state_dict does not have the reference FNO layout: "
            f"missing keys {missing or 'none'}, unexpected keys {unexpected or 'none'}"
            f"{' (no Fourier layers found)' if depth == 0 else ''}. Expected fc0/fc1/fc2 "
            "weight+bias and sp_convs.{i}.weights1/weights2, ws.{i}.weight/bias for i < depth."
        )
    return depth


def _sizes(state: dict[str, np.ndarray]) -> tuple[int, int, int, int]:
    """(width, modes, fc_dim, out_dim) read from the shapes of a reference ``state_dict``."""
    for key in ("fc0.weight", "fc1.weight", "fc2.weight"):
        if state[key].ndim != 2:
            raise ValueError(f"state_dict[{key!r}] must be a Linear weight [out, in], got shape {state[key].shape}.")
    spectral_shape = state["sp_convs.0.weights1"].shape
    if len(spectral_shape) != 5 or spectral_shape[-1] != 2 or spectral_shape[2] != spectral_shape[3]:
        raise ValueError(
            f"state_dict['sp_convs.0.weights1'] must have shape [width, width, m, m, 2], got {spectral_shape}."
        )
    width = state["fc0.weight"].shape[0]
    return int(width), int(spectral_shape[2]), int(state["fc1.weight"].shape[0]), int(state["fc2.weight"].shape[0])


def load_reference_state_dict(
    state_dict: Mapping[str, Any],
    *,
    dtype: Any = jnp.float32,
    param_dtype: Any = None,
) -> tuple[FNO, dict[str, Any]]:
    """Build an `FNO` and its params from a reference PyTorch ``state_dict``.

    Args:
        state_dict: mapping of the keys above to numpy arrays or torch tensors.
        dtype: compute dtype of the returned model.
        param_dtype: dtype of the returned params; default: ``dtype`` if it is at least
            float32-wide, else float32.

    Returns:
        ``(model, params)`` where ``params`` is the inner params tree, used as
        ``model.apply({"params": params}, x)`` with ``x`` of shape ``[batch, y, x, in]``.
        Width, modes, depth, fc_dim and channel counts are inferred from the shapes.
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"state_dict must be a mapping of names to arrays, got {type(state_dict)}.")
    state = {key: _to_numpy(value, key) for key, value in state_dict.items()}
    depth = _check_layout(state)
    width, modes, fc_dim, out_dim = _sizes(state)
    if param_dtype is None:
        param_dtype = dtype if jnp.dtype(dtype).itemsize >= 4 else jnp.float32

    def dense(kernel: np.ndarray, bias: np.ndarray) -> dict[str, Any]:
        return {
            "kernel": jnp.asarray(kernel.T, dtype=param_dtype),
            "bias": jnp.asarray(bias, dtype=param_dtype),
        }

    params: dict[str, Any] = {
        "lift": dense(state["fc0.weight"], _expect(state, "fc0.bias", (width,))),
        "fc1": dense(_expect(state, "fc1.weight", (fc_dim, width)), _expect(state, "fc1.bias", (fc_dim,))),
        "fc2": dense(_expect(state, "fc2.weight", (out_dim, fc_dim)), _expect(state, "fc2.bias", (out_dim,))),
    }
    for i in range(depth):
        spectral = {
            name: jnp.asarray(
                _expect(state, f"sp_convs.{i}.{name}", (width, width, modes, modes, 2)),
                dtype=param_dtype,
            )
            for name in ("weights1", "weights2")
        }
        params[f"spectral_{i}"] = spectral
        kernel = _expect(state, f"ws.{i}.weight", (width, width, 1))[:, :, 0]
        params[f"pointwise_{i}"] = dense(kernel, _expect(state, f"ws.{i}.bias", (width,)))

    model = FNO(
        width=width,
        modes=modes,
        depth=depth,
        fc_dim=fc_dim,
        out_dim=out_dim,
        dtype=dtype,
        param_dtype=param_dtype,
    )
    return model, params


def export_reference_state_dict(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Inverse of `load_reference_state_dict`: FNO params -> reference ``state_dict`` (numpy).

    Accepts the inner params tree or ``{"params": ...}``. Load into the PyTorch model with
    ``model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})``.
    """
    if set(params) == {"params"}:
        params = params["params"]
    depth = sum(1 for key in params if key.startswith("spectral_"))
    needed = {"lift", "fc1", "fc2"} | {f"{kind}_{i}" for i in range(depth) for kind in ("spectral", "pointwise")}
    if set(params) != needed or depth == 0:
        raise ValueError(
            f"params do not look like FNO params: got top-level keys {sorted(params)}, expected "
            f"{sorted(needed)} (lift, spectral_i, pointwise_i, fc1, fc2)."
        )
    state: dict[str, np.ndarray] = {}
    for ours, theirs in (("lift", "fc0"), ("fc1", "fc1"), ("fc2", "fc2")):
        state[f"{theirs}.weight"] = np.asarray(params[ours]["kernel"]).T.copy()
        state[f"{theirs}.bias"] = np.asarray(params[ours]["bias"]).copy()
    for i in range(depth):
        for name in ("weights1", "weights2"):
            state[f"sp_convs.{i}.{name}"] = np.asarray(params[f"spectral_{i}"][name]).copy()
        state[f"ws.{i}.weight"] = np.asarray(params[f"pointwise_{i}"]["kernel"]).T[:, :, None].copy()
        state[f"ws.{i}.bias"] = np.asarray(params[f"pointwise_{i}"]["bias"]).copy()
    return state


def bundle_from_state_dict(
    state_dict: Mapping[str, Any],
    out: str,
    *,
    layout: str,
    norm_stats: Any,
    length: float = 1.0,
    source: str = "a PyTorch state_dict of the reference FNO",
) -> dict[str, Any]:
    """Write a reference PyTorch ``state_dict`` as a pretrained bundle (`fno_jax.pretrained`) in the new directory
    ``out``; returns its card.

    A state_dict holds weights only, so the card is told the rest: ``layout`` names the input channels the weights
    expect (the paper's Poisson model reads f, K11, K22, K12: ``"poisson"``), ``norm_stats`` (a `NormStats` or its
    dict) the statistics its inputs were normalized with, ``length`` the domain side, ``source`` where the weights
    came from (provenance). What it cannot know (training data, test metrics) is left empty.
    """
    import time

    from fno_jax import pretrained
    from fno_jax.model import channels
    from fno_jax.model.normalization import NormStats

    model, params = load_reference_state_dict(state_dict)
    in_channels = int(params["lift"]["kernel"].shape[0])
    if in_channels != channels.num_channels(layout):
        raise ValueError(
            f"the state_dict's model reads {in_channels} input channels but layout {layout!r} has "
            f"{channels.num_channels(layout)} ({channels.LAYOUTS[layout]}); give the layout it was trained with."
        )
    stats = norm_stats if isinstance(norm_stats, NormStats) else NormStats.from_dict(norm_stats, in_channels - 1)
    card = {
        "model": {k: int(getattr(model, k)) for k in ("width", "modes", "depth", "fc_dim", "out_dim")},
        "layout": layout,
        "channels": list(channels.LAYOUTS[layout]),
        "norm_stats": stats.to_dict(),
        "length": float(length),
        "test_metrics": {},
        "fno_jax_version": package_version(),
        "provenance": {"converted_from": source, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    }
    return pretrained.write_bundle(out, params, card)
