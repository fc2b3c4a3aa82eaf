"""The FNO's projection head ``u = fc2(gelu(fc1(v)))`` and the exact GELU the model uses.

    h = W1^T v + b1            [fc_dim, points]      fc1
    u = W2^T gelu(h) + b2      [out, points]         fc2

on channels-first features ``v [channels, points]`` (W1, W2 are Dense kernels ``[in, out]``).

The head is the widest part of the network: ``fc_dim`` (128) channels per grid point against the layers'
``width`` (16 in the CPU benchmark, 64 in the paper), so at small widths its activations are most of a train
step's memory traffic (BENCHMARKS.md). `projection_head` with ``tile > 0`` computes it ``tile`` grid points at a
time and differentiates it by hand (`jax.custom_vjp`): the forward pass keeps only its input ``v``, and the
backward pass recomputes ``h`` tile by tile, so no ``[fc_dim, points]`` array is ever written to memory. Same
function; gradients equal to the untiled ones up to the order of the sums over points (tested in float64).
``tile = 0`` is the plain form, which XLA fuses well on GPUs.

GELU is the exact (erf) form, ``gelu(x) = x (1 + erf(x / sqrt 2)) / 2``, written as the paper's PyTorch model
computes it (``torch.nn.functional.gelu``); its derivative is ``(1 + erf(x / sqrt 2)) / 2 + x phi(x)`` with
``phi(x) = exp(-x^2 / 2) / sqrt(2 pi)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

__all__ = ["CPU_HEAD_TILE", "default_head_tile", "gelu", "gelu_and_derivative", "projection_head"]

_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327

# Grid points per tile on the CPU: [fc_dim 128, 1024] float32 is 512 KiB, inside a core's L2 cache.
CPU_HEAD_TILE = 1024


def default_head_tile() -> int:
    """Tile used when the model leaves it unset: `CPU_HEAD_TILE` on the CPU backend, 0 (untiled) elsewhere."""
    return CPU_HEAD_TILE if jax.default_backend() == "cpu" else 0


def gelu(x: Array) -> Array:
    """Exact GELU, ``x (1 + erf(x / sqrt 2)) / 2``."""
    return 0.5 * x * (1.0 + lax.erf(x * _SQRT_HALF))


def gelu_and_derivative(x: Array) -> tuple[Array, Array]:
    """``(gelu(x), gelu'(x))`` sharing one erf."""
    cdf = 0.5 * (1.0 + lax.erf(x * _SQRT_HALF))
    return x * cdf, cdf + x * (_INV_SQRT_2PI * jnp.exp(-0.5 * x * x))


def _plain_head(v, w1, b1, w2, b2):
    return w2.T @ gelu(w1.T @ v + b1[:, None]) + b2[:, None]


def projection_head(
    v: Float[Array, "c points"],
    w1: Float[Array, "c f"],
    b1: Float[Array, " f"],
    w2: Float[Array, "f o"],
    b2: Float[Array, " o"],
    *,
    tile: int = 0,
) -> Float[Array, "o points"]:
    """``W2^T gelu(W1^T v + b1) + b2`` on channels-first ``v``; all arrays in one (the compute) dtype.

    Args:
        v: features ``[channels, points]``.
        w1, b1, w2, b2: Dense kernels ``[in, out]`` and biases of fc1 and fc2.
        tile: grid points per tile (``> 0``: tiled, with the recomputing backward pass; ``0``: plain).
    """
    if tile < 0:
        raise ValueError(f"tile must be >= 0 (0 = untiled), got {tile}.")
    if tile == 0:
        return _plain_head(v, w1, b1, w2, b2)
    points = v.shape[1]
    pad = -points % tile
    if pad:  # zero columns: their outputs are cut off, and their cotangents are zero in the backward pass
        v = jnp.pad(v, ((0, 0), (0, pad)))
    return _tiled_head(v, w1, b1, w2, b2, tile)[:, :points]


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _tiled_head(v, w1, b1, w2, b2, tile):
    def one_tile(t, out):
        vt = lax.dynamic_slice_in_dim(v, t * tile, tile, axis=1)
        return lax.dynamic_update_slice_in_dim(out, _plain_head(vt, w1, b1, w2, b2), t * tile, axis=1)

    out = jnp.zeros((w2.shape[1], v.shape[1]), v.dtype)
    return lax.fori_loop(0, v.shape[1] // tile, one_tile, out)


def _tiled_head_fwd(v, w1, b1, w2, b2, tile):
    return _tiled_head(v, w1, b1, w2, b2, tile), (v, w1, b1, w2)


def _tiled_head_bwd(tile, residuals, g):
    v, w1, b1, w2 = residuals
    # Parameter gradients are sums over every grid point: accumulate them in at least float32.
    acc = jnp.promote_types(v.dtype, jnp.float32)
    nt = (((1,), (1,)), ((), ()))  # a @ b.T, contracting the points of both tiles

    def one_tile(t, carry):
        dv, dw1, db1, dw2, db2 = carry
        vt = lax.dynamic_slice_in_dim(v, t * tile, tile, axis=1)
        gt = lax.dynamic_slice_in_dim(g, t * tile, tile, axis=1)
        act, slope = gelu_and_derivative(w1.T @ vt + b1[:, None])
        dh = (w2 @ gt) * slope
        dv = lax.dynamic_update_slice_in_dim(dv, w1 @ dh, t * tile, axis=1)
        dw1 = dw1 + lax.dot_general(vt, dh, nt, preferred_element_type=acc)
        dw2 = dw2 + lax.dot_general(act, gt, nt, preferred_element_type=acc)
        return dv, dw1, db1 + dh.sum(axis=1, dtype=acc), dw2, db2 + gt.sum(axis=1, dtype=acc)

    zeros = (jnp.zeros_like(v), *(jnp.zeros(shape, acc) for shape in (w1.shape, b1.shape, w2.shape, (w2.shape[1],))))
    dv, dw1, db1, dw2, db2 = lax.fori_loop(0, v.shape[1] // tile, one_tile, zeros)
    return dv, dw1.astype(w1.dtype), db1.astype(b1.dtype), dw2.astype(w2.dtype), db2.astype(w2.dtype)


_tiled_head.defvjp(_tiled_head_fwd, _tiled_head_bwd)
