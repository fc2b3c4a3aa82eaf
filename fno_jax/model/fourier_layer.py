"""One FNO Fourier layer on channels-first fields, with a hand-written gradient (``FNO(layer_impl="fused")``).

    h = gelu(z_prev)   (h = z_prev for the first layer, whose input is the lift's output)
    z = G(M(F(h))) + W^T h + b

F is the truncated, ortho-normalised forward DFT (x stage, then y stage), M the per-mode complex channel mixing,
G the truncated inverse DFT (y stage, then x stage): the ``"dft"`` algorithm of `fno_jax.model.spectral_conv`, with the
same matrices (`dft_matrices`) and the same params. W, b are the pointwise branch (a Dense layer).

Why a second form of the same layer: on CPUs the step is bound by memory traffic and layout changes, not by
arithmetic. Fields here are ``[channels, batch, y, x]``, so the x stages of F and G and the pointwise branch are
plain row-major matrix products (channels-last fields need a full transposed copy for every x stage). The
gradient is written out (`jax.custom_vjp`) so that one layer keeps a single full field for the backward pass,
its input ``z_prev`` (``h`` and ``gelu'(z_prev)`` are recomputed, elementwise), plus its small spectrum F(h)
``[2m, m, batch, 2 * channels]``; autodiff keeps several fields per layer and XLA adds transposed copies of them
for the weight gradients. The pointwise weight gradient, a sum over every grid point, is accumulated tile by
tile so that no transposed field is formed. Same function; gradients equal autodiff's up to the order of sums
(tested in float64 against `jax.vjp` of the forward pass).

Dtypes: ``z_prev``, ``kernel`` and ``bias`` carry the compute dtype; the spectral weights and the transforms use
``spectral_dtype`` (`fno_jax.model.spectral_conv.fft_dtype` of the compute dtype, float32 for bfloat16 models).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

from fno_jax.model.head import gelu, gelu_and_derivative
from fno_jax.model.spectral_conv import dft_matrices, real_mixing_matrix

__all__ = ["WEIGHT_GRAD_TILE", "fourier_layer"]

# Grid points per tile of the pointwise weight gradient: two [channels, tile] slices stay in cache.
WEIGHT_GRAD_TILE = 8192


def _matrices(modes: int, ny: int, nx: int, dtype: Any) -> tuple[Array, ...]:
    return tuple(jnp.asarray(a) for a in dft_matrices(modes, ny, nx, dtype))


def _forward_dft(h: Float[Array, "c b ny nx"], fx: Array, fy: Array) -> Float[Array, "two_m m b two_c"]:
    """F: the kept modes of ``rfft2(h, norm="ortho")`` as ``[2m rows ky, m columns kx, batch, (re|im, channel)]``."""
    channels, batch = h.shape[:2]
    modes = fx.shape[2]
    a = jnp.einsum("cbyx,xpk->cbypk", h, fx)
    return jnp.einsum("cbypk,qzpy->zkbqc", a, fy).reshape(2 * modes, modes, batch, 2 * channels)


def _forward_dft_adjoint(g: Float[Array, "two_m m b two_c"], fx: Array, fy: Array) -> Float[Array, "c b ny nx"]:
    two_m, modes, batch, two_c = g.shape
    a = jnp.einsum("zkbqc,qzpy->cbypk", g.reshape(two_m, modes, batch, 2, two_c // 2), fy)
    return jnp.einsum("cbypk,xpk->cbyx", a, fx)


def _inverse_dft(a: Float[Array, "two_m m b two_o"], gy: Array, gx: Array) -> Float[Array, "o b ny nx"]:
    """G: ``irfft2(norm="ortho")`` of a spectrum that is zero outside the kept modes."""
    two_m, modes, batch, two_o = a.shape
    a = jnp.einsum("zkbqo,pyqz->obypk", a.reshape(two_m, modes, batch, 2, two_o // 2), gy)
    return jnp.einsum("obypk,pkx->obyx", a, gx)


def _inverse_dft_adjoint(g: Float[Array, "o b ny nx"], gy: Array, gx: Array) -> Float[Array, "two_m m b two_o"]:
    channels, batch = g.shape[:2]
    two_m, modes = gy.shape[3], gx.shape[1]
    a = jnp.einsum("obyx,pkx->obypk", g, gx)
    return jnp.einsum("obypk,pyqz->zkbqo", a, gy).reshape(two_m, modes, batch, 2 * channels)


def _input(z_prev: Array, activate: bool) -> Array:
    return gelu(z_prev) if activate else z_prev


def _pointwise_weight_grad(z_prev: Array, dz: Array, activate: bool) -> Array:
    """``sum over points of h dz^T`` ``[in, out]``, tile by tile, recomputing ``h`` from ``z_prev`` in each tile."""
    flat_in = z_prev.reshape(z_prev.shape[0], -1)
    flat_dz = dz.reshape(dz.shape[0], -1)
    points = flat_in.shape[1]
    tile = min(WEIGHT_GRAD_TILE, points)
    tiles, rest = divmod(points, tile)
    acc = jnp.promote_types(dz.dtype, jnp.float32)

    def product(start: Any, size: int) -> Array:
        h = _input(lax.dynamic_slice_in_dim(flat_in, start, size, axis=1), activate)
        g = lax.dynamic_slice_in_dim(flat_dz, start, size, axis=1)
        return lax.dot_general(h, g, (((1,), (1,)), ((), ())), preferred_element_type=acc)

    total = lax.fori_loop(
        0, tiles, lambda t, s: s + product(t * tile, tile), jnp.zeros((flat_in.shape[0], flat_dz.shape[0]), acc)
    )
    if rest:
        total = total + product(tiles * tile, rest)
    return total


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def fourier_layer(
    z_prev: Float[Array, "i b ny nx"],
    spectral_weights: Float[Array, "i o two_m m 2"],
    kernel: Float[Array, "i o"],
    bias: Float[Array, " o"],
    activate: bool,
) -> Float[Array, "o b ny nx"]:
    """``z = G(M(F(h))) + kernel^T h + bias`` with ``h = gelu(z_prev)`` if ``activate`` else ``z_prev``.

    Args:
        z_prev: the previous layer's pre-activation (or the lift's output), ``[in, batch, ny, nx]``, compute dtype.
        spectral_weights: ``concatenate([weights1, weights2], axis=2)``, ``[in, out, 2m, m, 2]``, in the
            spectral dtype (float32 or float64).
        kernel, bias: the pointwise branch, ``[in, out]`` and ``[out]``, compute dtype.
        activate: apply GELU to ``z_prev`` first (every layer but the first).
    """
    return _fourier_layer_fwd(z_prev, spectral_weights, kernel, bias, activate)[0]


def _fourier_layer_fwd(z_prev, spectral_weights, kernel, bias, activate):
    _, _, ny, nx = z_prev.shape
    spectral_dtype = spectral_weights.dtype
    fx, fy, gy, gx = _matrices(spectral_weights.shape[3], ny, nx, spectral_dtype)
    h = _input(z_prev, activate)
    spectrum = _forward_dft(h.astype(spectral_dtype), fx, fy)
    mixed = jnp.einsum("zkbj,zkjl->zkbl", spectrum, real_mixing_matrix(spectral_weights))
    spectral = _inverse_dft(mixed, gy, gx).astype(z_prev.dtype)
    z = spectral + jnp.einsum("io,ibyx->obyx", kernel, h) + bias[:, None, None, None]
    return z, (z_prev, spectrum, spectral_weights, kernel)


def _fourier_layer_bwd(activate, residuals, dz):
    z_prev, spectrum, spectral_weights, kernel = residuals
    _, _, ny, nx = z_prev.shape
    spectral_dtype = spectral_weights.dtype
    fx, fy, gy, gx = _matrices(spectral_weights.shape[3], ny, nx, spectral_dtype)
    # Spectral branch: z_s = G(S M), S = F(h); its adjoints are plain einsums with the same matrices.
    d_mixed = _inverse_dft_adjoint(dz.astype(spectral_dtype), gy, gx)
    mixing, mixing_vjp = jax.vjp(real_mixing_matrix, spectral_weights)
    (d_weights,) = mixing_vjp(jnp.einsum("zkbj,zkbl->zkjl", spectrum, d_mixed))
    d_spectrum = jnp.einsum("zkbl,zkjl->zkbj", d_mixed, mixing)
    dh = _forward_dft_adjoint(d_spectrum, fx, fy).astype(z_prev.dtype) + jnp.einsum("io,obyx->ibyx", kernel, dz)
    if activate:
        _, slope = gelu_and_derivative(z_prev)
        dz_prev = dh * slope
    else:
        dz_prev = dh
    d_kernel = _pointwise_weight_grad(z_prev, dz, activate).astype(kernel.dtype)
    d_bias = jnp.sum(dz, axis=(1, 2, 3), dtype=jnp.promote_types(dz.dtype, jnp.float32)).astype(kernel.dtype)
    return dz_prev, d_weights, d_kernel, d_bias


fourier_layer.defvjp(_fourier_layer_fwd, _fourier_layer_bwd)
