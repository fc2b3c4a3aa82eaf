"""The Fourier Neural Operator (Li et al., ICLR 2021) in the configuration of Subramanian et al.

    v_0     = lift(a)                                            Dense(width), pointwise
    v_{l+1} = gelu(K_l v_l + W_l v_l)      l = 0 .. depth-2      K_l: spectral convolution, W_l: Dense
    v_depth = K_{depth-1} v_{depth-1} + W_{depth-1} v_{depth-1}  (no activation after the last)
    u       = fc2(gelu(fc1(v_depth)))                            Dense(fc_dim), Dense(out_dim)

Inputs and outputs are channels-last ``[batch, y, x, channels]``; GELU is the exact (erf) form
(`fno_jax.model.head.gelu`). The parameter count equals the reference PyTorch model's for the same sizes
(67,134,273 at width 64, 32 modes, 4 layers, fc 128, 4 input channels): see `fno_jax.interop` for
the one-to-one mapping.

Two implementations of the same function and params (``layer_impl``):

``"autodiff"``
    Channels-last fields, each Fourier layer `fno_jax.model.spectral_conv.spectral_conv` plus a Dense,
    differentiated by JAX; ``remat`` applies here. The default off the CPU.
``"fused"``
    Channels-first fields ``[channels, batch, y, x]`` and `fno_jax.model.fourier_layer.fourier_layer`, a
    Fourier layer with a hand-written gradient that keeps one field per layer for the backward pass.
    Needs ``spectral_impl="dft"``. The default on the CPU, where it is the faster (BENCHMARKS.md).

Either way the projection head is `fno_jax.model.head.projection_head` (tiled on the CPU by default, see
``head_tile``). Equality of the two, and with an independent numpy forward pass of the reference
layout, is tested in float64.

Initialisation (``param_init``; ``init`` is Flax's init method): ``"torch"`` (default) is the
paper's, PyTorch's default for its Linear and Conv1d(k=1) layers: kernels and biases
U(-1/sqrt(fan_in), 1/sqrt(fan_in)), variance 1 / (3 fan_in). ``"flax"`` is Flax's Dense default:
LeCun-normal kernels (variance 1 / fan_in), zero biases. Spectral weights use
`fno_jax.model.spectral_conv.spectral_init` (U[0, 1) / (in * out) for real and imaginary parts) under both.

Precision: ``dtype`` is the compute dtype (activations, Dense matmuls); ``param_dtype`` the stored
parameter dtype. With ``dtype=jnp.bfloat16`` the transforms and the spectral mixing still run in
float32 (see `fno_jax.model.spectral_conv.fft_dtype`); the output is returned in ``dtype``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from fno_jax.model.fourier_layer import fourier_layer
from fno_jax.model.head import default_head_tile, gelu, projection_head
from fno_jax.model.spectral_conv import SPECTRAL_IMPLS, check_modes, fft_dtype, spectral_conv, spectral_init

__all__ = ["FNO", "INITS", "LAYER_IMPLS", "default_layer_impl", "num_params"]

INITS = ("torch", "flax")
LAYER_IMPLS = ("fused", "autodiff")


def num_params(params) -> int:
    """The number of scalars in a params tree."""
    return int(sum(math.prod(jnp.shape(x)) for x in jax.tree_util.tree_leaves(params)))


def default_layer_impl(spectral_impl: str = "dft") -> str:
    """``layer_impl`` used when the model leaves it unset: ``"fused"`` on the CPU backend with the dft
    algorithm, ``"autodiff"`` otherwise (the form measured on GPUs, BENCHMARKS.md)."""
    return "fused" if spectral_impl == "dft" and jax.default_backend() == "cpu" else "autodiff"


def _dense_inits(init: str, fan_in: int) -> dict[str, Any]:
    """``kernel_init`` and ``bias_init`` of a Dense layer with ``fan_in`` inputs under scheme ``init``."""
    if init == "flax":
        return {"kernel_init": nn.initializers.lecun_normal(), "bias_init": nn.initializers.zeros_init()}
    bound = 1.0 / fan_in**0.5

    def uniform(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return {"kernel_init": uniform, "bias_init": uniform}


class _DenseParams(nn.Module):
    """The ``kernel [in, out]`` and ``bias [out]`` of a Dense layer (same names and init as `nn.Dense`)."""

    features: int
    param_init: str
    param_dtype: Any

    @nn.compact
    def __call__(self, in_features: int) -> tuple[Array, Array]:
        inits = _dense_inits(self.param_init, in_features)
        kernel = self.param("kernel", inits["kernel_init"], (in_features, self.features), self.param_dtype)
        bias = self.param("bias", inits["bias_init"], (self.features,), self.param_dtype)
        return kernel, bias


class _SpectralParams(nn.Module):
    """``weights1`` (rows ky >= 0) and ``weights2`` (ky < 0), ``[in, out, m, m, 2]``, concatenated along rows."""

    features: int
    modes: int
    param_dtype: Any

    @nn.compact
    def __call__(self, in_features: int) -> Array:
        shape = (in_features, self.features, self.modes, self.modes, 2)
        weights1 = self.param("weights1", spectral_init, shape, self.param_dtype)
        weights2 = self.param("weights2", spectral_init, shape, self.param_dtype)
        return jnp.concatenate([weights1, weights2], axis=2)


def _autodiff_layer(h, spectral_weights, kernel, bias, activate: bool, spectral_impl: str):
    """One Fourier layer on channels-last ``h``, differentiated by JAX."""
    spectral_dtype = fft_dtype(h.dtype)
    spectral = spectral_conv(h.astype(spectral_dtype), spectral_weights.astype(spectral_dtype), spectral_impl)
    z = spectral.astype(h.dtype) + h @ kernel + bias
    return gelu(z) if activate else z


class FNO(nn.Module):
    """Fourier Neural Operator on a periodic 2-D grid.

    Attributes:
        width: channels of the hidden Fourier layers.
        modes: retained Fourier modes per direction (corner blocks at both signs of ky);
            must satisfy ``modes <= min(ny, nx) // 2`` for the grid it is called on.
        depth: number of Fourier layers.
        fc_dim: hidden width of the projection head.
        out_dim: output channels.
        dtype: compute dtype (e.g. ``jnp.float32`` or ``jnp.bfloat16``).
        param_dtype: parameter dtype.
        spectral_impl: algorithm of the spectral convolutions, ``"dft"`` (default: truncated DFTs
            as matmuls, faster on GPU and CPU, see BENCHMARKS.md) or ``"fft"``; same function and
            params, see `fno_jax.model.spectral_conv`.
        remat: recompute each Fourier layer in the backward pass instead of storing its
            intermediates (``layer_impl="autodiff"``): only the input of each layer, one
            ``[batch, y, x, width]`` field, is kept for the gradient. Same function, params and
            gradients; costs about one more forward pass of the layers per train step. The
            fused layers keep only their input anyway, so it changes nothing there.
        param_init: parameter initialisation of the Dense layers, ``"torch"`` (default, the paper's)
            or ``"flax"``; see the module docstring.
        layer_impl: ``"fused"`` or ``"autodiff"`` (see the module docstring); ``None`` (default)
            picks `default_layer_impl` when traced.
        padding: zero cells appended to the bottom and right of the lifted fields before the Fourier layers and
            cropped off before the head (Li et al.'s domain padding for non-periodic inputs: the spectral
            convolutions then see a periodic extension of the domain instead of wrapping its right edge onto its
            left); 0 (default) for periodic data. Changes no parameter, only the grid the layers see, so a model
            trained with one padding loads with another. ``modes`` must fit the padded grid.
        head_tile: grid points per tile of the projection head (`fno_jax.model.head.projection_head`):
            ``> 0`` computes fc1 -> GELU -> fc2 tile by tile and recomputes fc1 in the backward
            pass instead of storing the ``fc_dim``-wide activations; ``0`` is the plain form;
            ``None`` (default) picks `fno_jax.model.head.default_head_tile()` when traced (tiled on
            the CPU, plain elsewhere).

    Input ``[batch, y, x, in_channels]`` -> output ``[batch, y, x, out_dim]``. Param tree:
    ``lift``, ``spectral_{i}`` (``weights1``, ``weights2``), ``pointwise_{i}`` for
    ``i < depth``, ``fc1``, ``fc2``; the same under every ``layer_impl`` and ``head_tile``.
    """

    width: int
    modes: int
    depth: int = 4
    fc_dim: int = 128
    out_dim: int = 1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    spectral_impl: str = "dft"
    remat: bool = False
    param_init: str = "torch"
    layer_impl: str | None = None
    head_tile: int | None = None
    padding: int = 0

    def __post_init__(self) -> None:
        for name in ("width", "modes", "depth", "fc_dim", "out_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
                raise ValueError(
                    f"FNO {name} must be a positive integer, got {value!r}; "
                    f"pass e.g. FNO(width=64, modes=16, depth=4, fc_dim=128)."
                )
        for name in ("dtype", "param_dtype"):
            if not jnp.issubdtype(jnp.dtype(getattr(self, name)), jnp.floating):
                raise ValueError(
                    f"FNO {name} must be a floating dtype (float32, bfloat16, float64), got {getattr(self, name)!r}."
                )
        if self.spectral_impl not in SPECTRAL_IMPLS:
            raise ValueError(
                f"FNO spectral_impl must be one of {SPECTRAL_IMPLS}, got {self.spectral_impl!r}; "
                "'dft' (default) computes the kept modes with matmuls, 'fft' with FFTs."
            )
        if not isinstance(self.remat, bool):
            raise ValueError(f"FNO remat must be True or False, got {self.remat!r}.")
        if self.param_init not in INITS:
            raise ValueError(
                f"FNO param_init must be one of {INITS}, got {self.param_init!r}; 'torch' (default) is the "
                "paper's PyTorch initialisation, 'flax' Flax's LeCun-normal kernels with zero biases."
            )
        if self.layer_impl is not None and self.layer_impl not in LAYER_IMPLS:
            raise ValueError(
                f"FNO layer_impl must be None (automatic) or one of {LAYER_IMPLS}, got {self.layer_impl!r}."
            )
        if self.layer_impl == "fused" and self.spectral_impl != "dft":
            raise ValueError(
                f"FNO layer_impl='fused' computes the spectral convolution with DFT matmuls; it needs "
                f"spectral_impl='dft', got {self.spectral_impl!r} (use layer_impl='autodiff' for 'fft')."
            )
        if isinstance(self.padding, bool) or not isinstance(self.padding, numbers.Integral) or self.padding < 0:
            raise ValueError(
                f"FNO padding must be an integer >= 0 (zero cells added to each non-periodic direction), "
                f"got {self.padding!r}."
            )
        tile = self.head_tile
        if tile is not None and (isinstance(tile, bool) or not isinstance(tile, numbers.Integral) or tile < 0):
            raise ValueError(f"FNO head_tile must be None or an integer >= 0 (0 = untiled), got {tile!r}.")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Float[Array, "b ny nx c"]) -> Float[Array, "b ny nx out"]:
        if x.ndim != 4:
            raise ValueError(
                f"FNO expects inputs of shape [batch, y, x, channels], got shape {x.shape}; "
                "add a batch axis with x[None] (and a channel axis with x[..., None])."
            )
        batch, ny, nx, in_channels = x.shape
        pad = int(self.padding)
        check_modes(self.modes, ny + pad, nx + pad)
        dense = dict(param_init=self.param_init, param_dtype=self.param_dtype)
        lift = _DenseParams(self.width, name="lift", **dense)(in_channels)
        layers = [
            (
                _SpectralParams(self.width, self.modes, self.param_dtype, name=f"spectral_{i}")(self.width),
                *_DenseParams(self.width, name=f"pointwise_{i}", **dense)(self.width),
            )
            for i in range(self.depth)
        ]
        head = (
            *_DenseParams(self.fc_dim, name="fc1", **dense)(self.width),
            *_DenseParams(self.out_dim, name="fc2", **dense)(self.fc_dim),
        )
        # Dense params in the compute dtype (as nn.Dense does), spectral weights in the transforms' dtype.
        spectral_dtype = fft_dtype(self.dtype)
        lift = tuple(a.astype(self.dtype) for a in lift)
        layers = [(w.astype(spectral_dtype), k.astype(self.dtype), b.astype(self.dtype)) for w, k, b in layers]
        head = tuple(a.astype(self.dtype) for a in head)
        x = x.astype(self.dtype)
        tile = default_head_tile() if self.head_tile is None else self.head_tile
        impl = default_layer_impl(self.spectral_impl) if self.layer_impl is None else self.layer_impl
        if impl == "fused":
            # Channels-first from the lift to the head: [width, batch, y, x], then [width, points].
            z = jnp.einsum("byxi,ic->cbyx", x, lift[0]) + lift[1][:, None, None, None]
            if pad:
                z = jnp.pad(z, ((0, 0), (0, 0), (0, pad), (0, pad)))
            for i, (weights, kernel, bias) in enumerate(layers):
                z = fourier_layer(z, weights, kernel, bias, i > 0)
            if pad:
                z = z[:, :, :ny, :nx]
            out = projection_head(z.reshape(self.width, -1), *head, tile=tile)
        else:
            h = x @ lift[0] + lift[1]
            if pad:
                h = jnp.pad(h, ((0, 0), (0, pad), (0, pad), (0, 0)))
            layer = _autodiff_layer
            if self.remat:
                # Saving nothing inside the layer keeps only its input (the previous layer's output).
                layer = jax.checkpoint(layer, policy=jax.checkpoint_policies.nothing_saveable, static_argnums=(4, 5))
            for i, (weights, kernel, bias) in enumerate(layers):
                h = layer(h, weights, kernel, bias, i < self.depth - 1, self.spectral_impl)
            if pad:
                h = h[:, :ny, :nx]
            v = h.reshape(-1, self.width)
            if tile == 0:
                return (gelu(v @ head[0] + head[1]) @ head[2] + head[3]).reshape(batch, ny, nx, self.out_dim)
            out = projection_head(v.T, *head, tile=tile)
        return out.T.reshape(batch, ny, nx, self.out_dim)
