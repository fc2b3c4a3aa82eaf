"""The order in which a run visits its training samples: a function of (seed, step) alone.

Epoch e visits the `num` training rows in the order `permutation(fold_in(fold_in(key(seed), 2000), e))`; step s
takes batch s mod (num // batch) of epoch s // (num // batch) (drop-last: the rows past the last whole batch of an
epoch wait for another epoch's order). So resuming at any step reproduces the batches of an uninterrupted run, on
any number of devices or processes, whether the data lives on the devices or is read on the host.
"""

import jax

# The order of the labelled training rows, and of a run's unlabelled inputs (an independent stream).
LABELLED, UNLABELLED = 2000, 2001


def epoch_order(epoch: jax.Array, *, num: int, seed: int | jax.Array, stream: int = LABELLED) -> jax.Array:
    """[num] the order in which epoch `epoch` visits the `num` training rows (traceable); `stream` tells apart the
    orders of the labelled rows and of the unlabelled inputs."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), stream), epoch)
    return jax.random.permutation(key, num)


def batch_indices(
    step: jax.Array, *, num: int, batch_size: int, seed: int | jax.Array, stream: int = LABELLED
) -> jax.Array:
    """[batch_size] training rows of step `step` (traceable)."""
    per_epoch = num // batch_size
    order = epoch_order(step // per_epoch, num=num, seed=seed, stream=stream)
    return jax.lax.dynamic_slice_in_dim(order, (step % per_epoch) * batch_size, batch_size)
