"""The Fourier Neural Operator (Li et al., ICLR 2021) in the configuration of Subramanian et al.

    v_0     = lift(a)                                            Dense(width), pointwise
    v_{l+1} = gelu(K_l v_l + W_l v_l)      l = 0 .. depth-2      K_l: SpectralConv2d, W_l: Dense
    v_depth = K_{depth-1} v_{depth-1} + W_{depth-1} v_{depth-1}  (no activation after the last)
    u       = fc2(gelu(fc1(v_depth)))                            Dense(fc_dim), Dense(out_dim)

Fields are channels-last ``[batch, y, x, channels]``; GELU is the exact (erf) form. The parameter
count equals the reference PyTorch model's for the same sizes (67,134,273 at width 64, 32 modes,
4 layers, fc 128, 4 input channels): see `fno_jax.interop` for the one-to-one mapping.

Initialisation: Dense layers use Flax's default (LeCun-normal kernels, zero biases); spectral
weights use `fno_jax.spectral_conv.spectral_init` (U[0, 1) / (in * out) for real and imaginary
parts).

Precision: ``dtype`` is the compute dtype (activations, Dense matmuls); ``param_dtype`` the stored
parameter dtype. With ``dtype=jnp.bfloat16`` the FFTs and the spectral mixing still run in float32
(see `fno_jax.spectral_conv.fft_dtype`); the output is returned in ``dtype``.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from fno_jax.spectral_conv import SPECTRAL_IMPLS, SpectralConv2d, check_modes

__all__ = ["FNO"]


def _gelu(x: Array) -> Array:
    return nn.gelu(x, approximate=False)


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
            params, see `fno_jax.spectral_conv`.
        remat: recompute each Fourier layer in the backward pass instead of storing its
            intermediates (`flax.linen.remat`): only the input of each layer, one
            ``[batch, y, x, width]`` field, is kept for the gradient. Same function, params and
            gradients; costs about one more forward pass of the layers per train step. The
            projection head is not recomputed: XLA's memory analysis of the paper-config step
            grew by 2 GB when it was (BENCHMARKS.md).

    Input ``[batch, y, x, in_channels]`` -> output ``[batch, y, x, out_dim]``. Param tree:
    ``lift``, ``spectral_{i}`` (``weights1``, ``weights2``), ``pointwise_{i}`` for
    ``i < depth``, ``fc1``, ``fc2``.
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
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Float[Array, "b ny nx c"]) -> Float[Array, "b ny nx out"]:
        if x.ndim != 4:
            raise ValueError(
                f"FNO expects inputs of shape [batch, y, x, channels], got shape {x.shape}; "
                "add a batch axis with x[None] (and a channel axis with x[..., None])."
            )
        check_modes(self.modes, x.shape[1], x.shape[2])
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = nn.Dense(self.width, name="lift", **dense)(x)
        for i in range(self.depth):
            layer = functools.partial(self._fourier_layer, index=i)
            if self.remat:
                # Saving nothing inside the layer keeps only its input (the previous layer's output).
                layer = nn.remat(layer, policy=jax.checkpoint_policies.nothing_saveable)
            x = layer(self, x)
        x = _gelu(nn.Dense(self.fc_dim, name="fc1", **dense)(x))
        return nn.Dense(self.out_dim, name="fc2", **dense)(x)

    def _fourier_layer(self, module: nn.Module, x: Array, *, index: int) -> Array:
        # Submodules are created under `module` (the FNO, or its remat-lifted view): same param tree either way.
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype, parent=module)
        spectral = SpectralConv2d(
            self.width, self.modes, name=f"spectral_{index}", spectral_impl=self.spectral_impl, **dense
        )(x)
        x = spectral + nn.Dense(self.width, name=f"pointwise_{index}", **dense)(x)
        return _gelu(x) if index < self.depth - 1 else x
