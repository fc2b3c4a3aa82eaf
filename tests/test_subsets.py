"""Nested, volume-fraction-stratified subsets."""

import numpy as np
import pytest

from fno_jax.data import nested_order, nested_subset

VFS = np.array([0.2, 0.4, 0.6, 0.8])


def split_vf(size=200, seed=3):
    # Unequal group sizes, with one small group, to exercise the round robin.
    rng = np.random.default_rng(seed)
    vf = rng.choice(VFS, size=size, p=[0.4, 0.3, 0.25, 0.05]).astype(np.float32)
    return vf


def test_subsets_are_nested_sorted_and_unique():
    vf = split_vf()
    previous = np.array([], dtype=np.int64)
    for n in (1, 4, 8, 16, 32, 64, 128, 200):
        subset = nested_subset(vf, n, seed=0)
        assert subset.shape == (n,)
        assert np.all(np.diff(subset) > 0)
        assert set(previous) <= set(subset)
        previous = subset
    np.testing.assert_array_equal(previous, np.arange(200))


def test_every_group_present_and_balanced():
    vf = split_vf()
    small = int(np.sum(vf == np.float32(0.8)))
    for n in (4, 8, 16, 4 * small):
        counts = [int(np.sum(vf[nested_subset(vf, n, seed=1)] == np.float32(v))) for v in VFS]
        assert min(counts) >= 1
        # Round robin: while no group is exhausted, group sizes differ by at most one.
        assert max(counts) - min(counts) <= 1, (n, counts)


def test_deterministic_and_seed_dependent():
    vf = split_vf()
    np.testing.assert_array_equal(nested_subset(vf, 16, seed=5), nested_subset(vf, 16, seed=5))
    assert not np.array_equal(nested_subset(vf, 16, seed=5), nested_subset(vf, 16, seed=6))
    np.testing.assert_array_equal(nested_order(vf, 2), nested_order(vf.astype(np.float64), 2))


def test_unknown_volume_fraction_is_a_plain_seeded_order():
    vf = np.full(50, np.nan)
    order = nested_order(vf, seed=4)
    np.testing.assert_array_equal(order, np.random.default_rng(4).permutation(50))
    a, b = nested_subset(vf, 10, seed=4), nested_subset(vf, 20, seed=4)
    assert set(a) <= set(b)
    np.testing.assert_array_equal(a, np.sort(order[:10]))


@pytest.mark.parametrize("n", [0, -1, 201])
def test_bad_sizes(n):
    with pytest.raises(ValueError, match="split size 200"):
        nested_subset(split_vf(), n, seed=0)


def test_bad_input_shape():
    with pytest.raises(ValueError, match="1-D"):
        nested_subset(np.zeros((3, 3)), 2, seed=0)
