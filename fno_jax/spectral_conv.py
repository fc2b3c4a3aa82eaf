"""Two-dimensional spectral convolution: the global (Fourier) branch of one FNO layer.

Convention (stated once, used by the model and by `fno_jax.interop`): fields are channels-last,
``[batch, y, x, channels]``. The spectrum is ``rfft2`` over the spatial axes ``(y, x)`` with
``norm="ortho"``, shape ``[batch, ny, nx // 2 + 1, channels]``; axis 1 is the full frequency ky
(non-negative rows first, negative rows at the end) and axis 2 the half-spectrum kx >= 0.

A layer with ``m`` modes keeps the two corner blocks ``rows [:m]`` (ky >= 0) and ``rows [-m:]``
(ky < 0), ``columns [:m]``, multiplies each retained mode by a learned complex ``in x out`` matrix,
zeroes every other mode and transforms back with ``irfft2(norm="ortho")`` to the input size:

    out_hat[b, ky, kx, o] = sum_i x_hat[b, ky, kx, i] * W[i, o, ky, kx]     (retained modes only)

The work is split into three pure functions (`truncate_modes`, `mode_mixing`, `pad_modes`) so that
an alternative implementation (a different contraction order, a DFT-as-matmul, a fused kernel)
can replace one step without touching the others or the parameter layout.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Complex, Float

__all__ = [
    "SpectralConv2d",
    "complex_weights",
    "fft_dtype",
    "mode_mixing",
    "pad_modes",
    "spectral_init",
    "truncate_modes",
]


def fft_dtype(dtype: Any) -> jnp.dtype:
    """Real dtype in which the FFTs and the mode mixing run for a given compute ``dtype``.

    Half-precision FFTs lose the small high-frequency coefficients, so bfloat16/float16 models do
    their spectral work in float32; float32 and float64 models keep their own precision.
    """
    dtype = jnp.dtype(dtype)
    if dtype.itemsize < 4:
        return jnp.dtype(jnp.float32)
    return dtype


def spectral_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """Initialiser for real-stored spectral weights ``[in, out, m, m, 2]``.

    Real and imaginary parts are drawn i.i.d. from ``U[0, 1) / (in * out)``: the scale keeps the
    sum over ``in`` channels O(1/out) at initialisation, matching the classic FNO initialisation.
    """
    scale = 1.0 / (shape[0] * shape[1])
    return scale * jax.random.uniform(key, shape, dtype)


def complex_weights(weights: Float[Array, "... m 2"], dtype: Any) -> Complex[Array, "... m"]:
    """Real-stored weights ``[..., 2]`` (real, imag) -> complex array of ``dtype``'s width."""
    weights = weights.astype(fft_dtype(dtype))
    return jax.lax.complex(weights[..., 0], weights[..., 1])


def truncate_modes(x_hat: Complex[Array, "b ny kx c"], modes: int) -> Complex[Array, "b two_m m c"]:
    """Gather the retained modes: rows ``[:m]`` then rows ``[-m:]``, columns ``[:m]``.

    Returns one ``[b, 2m, m, c]`` block so the mixing is one contraction instead of two.
    """
    return jnp.concatenate([x_hat[:, :modes, :modes, :], x_hat[:, -modes:, :modes, :]], axis=1)


def mode_mixing(
    block: Complex[Array, "b two_m m i"], weights: Complex[Array, "i o two_m m"]
) -> Complex[Array, "b two_m m o"]:
    """Per-mode channel mixing: ``out[b, y, x, o] = sum_i block[b, y, x, i] w[i, o, y, x]``."""
    return jnp.einsum("byxi,ioyx->byxo", block, weights)


def pad_modes(block: Complex[Array, "b two_m m c"], ny: int, nx: int) -> Complex[Array, "b ny kx c"]:
    """Inverse of `truncate_modes`: corner blocks into a zero ``[b, ny, nx // 2 + 1, c]``."""
    modes = block.shape[2]
    batch, channels = block.shape[0], block.shape[-1]
    gap = jnp.zeros((batch, ny - 2 * modes, modes, channels), block.dtype)
    rows = jnp.concatenate([block[:, :modes], gap, block[:, modes:]], axis=1)
    return jnp.pad(rows, ((0, 0), (0, 0), (0, nx // 2 + 1 - modes), (0, 0)))


class SpectralConv2d(nn.Module):
    """Fourier-space convolution keeping ``modes x modes`` corner blocks at both signs of ky.

    Attributes:
        features: number of output channels.
        modes: retained modes per spatial direction; needs ``modes <= min(ny, nx) // 2``.
        dtype: compute dtype of the output; FFTs and mixing run in `fft_dtype(dtype)`.
        param_dtype: dtype of the stored weights.

    Params: ``weights1`` (rows ``[:m]``) and ``weights2`` (rows ``[-m:]``), both real
    ``[in, out, modes, modes, 2]`` holding (real, imag). No bias: the pointwise branch of the FNO
    layer carries it.
    """

    features: int
    modes: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "b ny nx i"]) -> Float[Array, "b ny nx o"]:
        if x.ndim != 4:
            raise ValueError(
                f"SpectralConv2d expects x of shape [batch, y, x, channels], got shape {x.shape}; "
                "add a batch axis with x[None] or map over extra axes with jax.vmap."
            )
        _, ny, nx, in_features = x.shape
        check_modes(self.modes, ny, nx)
        shape = (in_features, self.features, self.modes, self.modes, 2)
        weights1 = self.param("weights1", spectral_init, shape, self.param_dtype)
        weights2 = self.param("weights2", spectral_init, shape, self.param_dtype)

        real = fft_dtype(self.dtype)
        weights = complex_weights(jnp.concatenate([weights1, weights2], axis=2), real)
        x_hat = jnp.fft.rfft2(x.astype(real), axes=(1, 2), norm="ortho")
        out_hat = pad_modes(mode_mixing(truncate_modes(x_hat, self.modes), weights), ny, nx)
        out = jnp.fft.irfft2(out_hat, s=(ny, nx), axes=(1, 2), norm="ortho")
        return out.astype(self.dtype)


def check_modes(modes: int, ny: int, nx: int) -> None:
    """Raise a ValueError unless ``modes <= min(ny, nx) // 2`` (fits a ``ny x nx`` grid)."""
    limit = min(ny, nx) // 2
    if modes > limit:
        raise ValueError(
            f"modes={modes} is too many for resolution {ny}x{nx}: at most min(ny, nx) // 2 = "
            f"{limit} modes fit (both signs of ky are kept). Use modes <= {limit} or a finer grid."
        )
