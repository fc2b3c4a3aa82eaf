"""Two-dimensional spectral convolution: the global (Fourier) branch of one FNO layer.

Convention (stated once, used by the model and by `fno_jax.interop`): fields are channels-last,
``[batch, y, x, channels]``. The spectrum is ``rfft2`` over the spatial axes ``(y, x)`` with
``norm="ortho"``, shape ``[batch, ny, nx // 2 + 1, channels]``; axis 1 is the full frequency ky
(non-negative rows first, negative rows at the end) and axis 2 the half-spectrum kx >= 0.

A layer with ``m`` modes keeps the two corner blocks ``rows [:m]`` (ky >= 0) and ``rows [-m:]``
(ky < 0), ``columns [:m]``, multiplies each retained mode by a learned complex ``in x out`` matrix,
zeroes every other mode and transforms back with ``irfft2(norm="ortho")`` to the input size:

    out_hat[b, ky, kx, o] = sum_i x_hat[b, ky, kx, i] * W[i, o, ky, kx]     (retained modes only)

Two implementations of the same linear map, selected by ``impl`` (``SpectralConv2d.spectral_impl``):

``"fft"``
    ``rfft`` along x, keep the ``m`` columns, ``fft`` along y of those columns only, keep the two
    row blocks, mix, and the mirror image back (`truncate_modes` and `mode_mixing` are two of
    the pieces). Transforming y only on the kept columns skips ``(nx//2 + 1 - m) / (nx//2 + 1)`` of
    the second FFT and of the zero padding of the full-spectrum path.
``"dft"`` (default)
    Truncated DFTs as dense matmuls (`dft_matrices`): only the kept modes are ever formed, each
    stage is one real matrix product with the (real, imag) pair as a contraction axis, and the
    mixing is one batched real matmul over modes. ``O(n * m)`` work per line instead of
    ``O(n log n)``, but all of it in the matrix units and no complex or padded spectrum in memory;
    faster than ``"fft"`` on the GPU and the CPU at the sizes measured (BENCHMARKS.md).

Both give the same numbers up to rounding (tested in float64).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float

__all__ = [
    "SpectralConv2d",
    "SPECTRAL_IMPLS",
    "complex_weights",
    "dft_matrices",
    "fft_dtype",
    "mode_mixing",
    "real_mixing_matrix",
    "spectral_conv",
    "spectral_init",
    "truncate_modes",
]

SPECTRAL_IMPLS = ("fft", "dft")


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


def _rows(modes: int, ny: int) -> np.ndarray:
    """Row indices of the kept ky: ``0 .. m-1`` then ``ny-m .. ny-1`` (ky = -m .. -1)."""
    return np.concatenate([np.arange(modes), np.arange(ny - modes, ny)])


def dft_matrices(modes: int, ny: int, nx: int, dtype: Any) -> tuple[np.ndarray, ...]:
    """Real matrices of the truncated, ortho-normalised 2-D DFT and its inverse (``impl="dft"``).

    With ``theta = 2 pi kx x / nx`` (``kx < m``) and ``phi = 2 pi ky y / ny`` (ky over `_rows`):

    - ``fx [nx, 2, m]``: ``(cos theta, -sin theta) / sqrt(nx)``, the forward real DFT along x;
    - ``fy [2, 2m, 2, ny]``: multiplication by ``exp(-i phi) / sqrt(ny)`` acting on (real, imag);
    - ``gy [2, ny, 2, 2m]``: multiplication by ``exp(+i phi) / sqrt(ny)``;
    - ``gx [2, m, nx]``: ``c_k (cos theta, -sin theta) / sqrt(nx)``, ``c_0 = 1`` and ``c_k = 2``
      otherwise: the inverse real DFT of a half spectrum whose columns ``>= m`` are zero (the
      imaginary part of column 0 drops out, as in ``irfft``).

    Built in float64 with numpy (trace-time constants), returned in ``dtype``.
    """
    kx = np.arange(modes)
    theta = 2 * np.pi * np.outer(np.arange(nx), kx) / nx  # [nx, m]
    phi = 2 * np.pi * np.outer(_rows(modes, ny), np.arange(ny)) / ny  # [2m, ny]
    cos_t, sin_t, cos_p, sin_p = np.cos(theta), np.sin(theta), np.cos(phi), np.sin(phi)
    fx = np.stack([cos_t, -sin_t], axis=1) / np.sqrt(nx)
    # (a + ib)(cos - i sin) = (a cos + b sin) + i (b cos - a sin); indices [out re/im, ky, in re/im, y].
    fy = np.stack([np.stack([cos_p, sin_p], axis=1), np.stack([-sin_p, cos_p], axis=1)]) / np.sqrt(ny)
    # (a + ib)(cos + i sin) = (a cos - b sin) + i (a sin + b cos); indices [out re/im, y, in re/im, ky].
    gy = np.stack([np.stack([cos_p.T, -sin_p.T], axis=1), np.stack([sin_p.T, cos_p.T], axis=1)]) / np.sqrt(ny)
    weight = np.where(kx == 0, 1.0, 2.0)[:, None]
    gx = np.stack([weight * cos_t.T, -weight * sin_t.T]) / np.sqrt(nx)
    return tuple(np.asarray(a, dtype) for a in (fx, fy, gy, gx))


def real_mixing_matrix(weights: Float[Array, "i o two_m m 2"]) -> Float[Array, "two_m m two_i two_o"]:
    """Complex ``[i, o]`` per mode as the real ``[2i, 2o]`` block ``[[Wr, Wi], [-Wi, Wr]]``.

    Row block = input (real, imag), column block = output (real, imag), so ``[xr, xi] @ M`` is
    ``(xr Wr - xi Wi, xr Wi + xi Wr)``, the real and imaginary parts of ``x * W``.
    """
    wr, wi = weights[..., 0], weights[..., 1]
    blocks = jnp.stack([jnp.stack([wr, wi]), jnp.stack([-wi, wr])])  # [p, q, i, o, z, k]
    channels_in, channels_out, two_m, modes = wr.shape
    return jnp.transpose(blocks, (4, 5, 0, 2, 1, 3)).reshape(two_m, modes, 2 * channels_in, 2 * channels_out)


def _fft_conv(x: Float[Array, "b ny nx i"], weights: Float[Array, "i o two_m m 2"]) -> Float[Array, "b ny nx o"]:
    _, ny, nx, _ = x.shape
    modes = weights.shape[3]
    # Separable transform: only the kept columns go through the y FFT (both ways).
    cols = jnp.fft.rfft(x, axis=2, norm="ortho")[:, :, :modes, :]
    x_hat = jnp.fft.fft(cols, axis=1, norm="ortho")
    out_hat = mode_mixing(truncate_modes(x_hat, modes), complex_weights(weights, x.dtype))
    batch, _, _, channels_out = out_hat.shape
    gap = jnp.zeros((batch, ny - 2 * modes, modes, channels_out), out_hat.dtype)
    rows = jnp.concatenate([out_hat[:, :modes], gap, out_hat[:, modes:]], axis=1)
    cols = jnp.fft.ifft(rows, axis=1, norm="ortho")
    cols = jnp.pad(cols, ((0, 0), (0, 0), (0, nx // 2 + 1 - modes), (0, 0)))
    return jnp.fft.irfft(cols, n=nx, axis=2, norm="ortho")


def _dft_conv(x: Float[Array, "b ny nx i"], weights: Float[Array, "i o two_m m 2"]) -> Float[Array, "b ny nx o"]:
    batch, ny, nx, channels_in = x.shape
    modes = weights.shape[3]
    fx, fy, gy, gx = (jnp.asarray(a) for a in dft_matrices(modes, ny, nx, x.dtype))
    mixing = real_mixing_matrix(weights.astype(x.dtype))
    a = jnp.einsum("byxc,xpk->bypkc", x, fx)  # [b, ny, 2, m, i]
    a = jnp.einsum("bypkc,qzpy->bzkqc", a, fy).reshape(batch, 2 * modes, modes, 2 * channels_in)
    a = jnp.einsum("bzkj,zkjl->bzkl", a, mixing).reshape(batch, 2 * modes, modes, 2, -1)
    a = jnp.einsum("bzkqo,pyqz->bypko", a, gy)  # [b, ny, 2, m, o]
    return jnp.einsum("bypko,pkx->byxo", a, gx)


def spectral_conv(
    x: Float[Array, "b ny nx i"], weights: Float[Array, "i o two_m m 2"], impl: str = "dft"
) -> Float[Array, "b ny nx o"]:
    """The spectral convolution of the module docstring, as a pure function.

    Args:
        x: real field ``[batch, ny, nx, in]``; its dtype is the working precision.
        weights: ``concatenate([weights1, weights2], axis=2)``, real ``[in, out, 2m, m, 2]``.
        impl: ``"dft"`` (default) or ``"fft"`` (same map, different algorithm).
    """
    if impl == "fft":
        return _fft_conv(x, weights)
    if impl == "dft":
        return _dft_conv(x, weights)
    raise ValueError(f"spectral_impl must be one of {SPECTRAL_IMPLS}, got {impl!r}.")


class SpectralConv2d(nn.Module):
    """Fourier-space convolution keeping ``modes x modes`` corner blocks at both signs of ky.

    Attributes:
        features: number of output channels.
        modes: retained modes per spatial direction; needs ``modes <= min(ny, nx) // 2``.
        dtype: compute dtype of the output; FFTs and mixing run in `fft_dtype(dtype)`.
        param_dtype: dtype of the stored weights.
        spectral_impl: ``"dft"`` (default) or ``"fft"``; see the module docstring.

    Params: ``weights1`` (rows ``[:m]``) and ``weights2`` (rows ``[-m:]``), both real
    ``[in, out, modes, modes, 2]`` holding (real, imag). No bias: the pointwise branch of the FNO
    layer carries it.
    """

    features: int
    modes: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    spectral_impl: str = "dft"

    @nn.compact
    def __call__(self, x: Float[Array, "b ny nx i"]) -> Float[Array, "b ny nx o"]:
        if x.ndim != 4:
            raise ValueError(
                f"SpectralConv2d expects x of shape [batch, y, x, channels], got shape {x.shape}; "
                "add a batch axis with x[None] or map over extra axes with jax.vmap."
            )
        if self.spectral_impl not in SPECTRAL_IMPLS:
            raise ValueError(f"spectral_impl must be one of {SPECTRAL_IMPLS}, got {self.spectral_impl!r}.")
        _, ny, nx, in_features = x.shape
        check_modes(self.modes, ny, nx)
        shape = (in_features, self.features, self.modes, self.modes, 2)
        weights1 = self.param("weights1", spectral_init, shape, self.param_dtype)
        weights2 = self.param("weights2", spectral_init, shape, self.param_dtype)
        weights = jnp.concatenate([weights1, weights2], axis=2)
        out = spectral_conv(x.astype(fft_dtype(self.dtype)), weights, self.spectral_impl)
        return out.astype(self.dtype)


def check_modes(modes: int, ny: int, nx: int) -> None:
    """Raise a ValueError unless ``modes <= min(ny, nx) // 2`` (fits a ``ny x nx`` grid)."""
    limit = min(ny, nx) // 2
    if modes > limit:
        raise ValueError(
            f"modes={modes} is too many for resolution {ny}x{nx}: at most min(ny, nx) // 2 = "
            f"{limit} modes fit (both signs of ky are kept). Use modes <= {limit} or a finer grid."
        )
