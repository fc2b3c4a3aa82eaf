"""The paper's training loss and test metric.

Both take predictions and targets of shape [B, y, x] (or [B, y, x, 1]).
"""

import jax.numpy as jnp
from jaxtyping import Array, Float


def sum_squared_error(prediction: Float[Array, "b ..."], target: Float[Array, "b ..."]) -> Float[Array, ""]:
    """Sum of squared errors over the grid, averaged over the batch (the paper's training loss)."""
    diff = (prediction - target).reshape(prediction.shape[0], -1)
    return jnp.mean(jnp.sum(diff * diff, axis=-1))


def relative_l2(prediction: Float[Array, "b ..."], target: Float[Array, "b ..."]) -> Float[Array, " b"]:
    """Per-sample relative L2 error ||u_pred - u|| / ||u||; the test metric is its mean over a split."""
    b = prediction.shape[0]
    err = jnp.linalg.norm((prediction - target).reshape(b, -1), axis=-1)
    ref = jnp.linalg.norm(target.reshape(b, -1), axis=-1)
    return err / jnp.maximum(ref, jnp.finfo(ref.dtype).tiny)
