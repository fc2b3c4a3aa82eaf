"""The order a run visits its training samples: a function of (seed, step) alone, each epoch a fresh permutation
with the last partial batch dropped (the paper's shuffling loader, `drop_last=True`)."""

import jax.numpy as jnp
import numpy as np

from fno_jax.data import batch_indices, epoch_order


def test_each_epoch_visits_every_full_batch_of_a_permutation_once():
    num, batch, seed = 10, 3, 7  # 3 batches per epoch; one sample waits for another epoch
    for epoch in range(3):
        order = np.asarray(epoch_order(jnp.int32(epoch), num=num, seed=seed))
        assert sorted(order) == list(range(num))
        steps = [
            np.asarray(batch_indices(jnp.int32(3 * epoch + b), num=num, batch_size=batch, seed=seed)) for b in range(3)
        ]
        np.testing.assert_array_equal(np.concatenate(steps), order[:9])
    first, second = (np.asarray(epoch_order(jnp.int32(e), num=num, seed=seed)) for e in (0, 1))
    assert not np.array_equal(first, second)  # reshuffled every epoch


def test_the_order_depends_on_the_seed_and_nothing_else():
    a = np.asarray(batch_indices(jnp.int32(5), num=64, batch_size=8, seed=0))
    np.testing.assert_array_equal(a, np.asarray(batch_indices(jnp.int32(5), num=64, batch_size=8, seed=0)))
    assert not np.array_equal(a, np.asarray(batch_indices(jnp.int32(5), num=64, batch_size=8, seed=1)))
