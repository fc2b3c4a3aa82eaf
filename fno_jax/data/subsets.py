"""Fixed, nested, volume-fraction-stratified subsets of a stored split.

Experiments on downstream data size train on N = 8, 16, 32, ... samples of one split. The subsets
are nested (the N = 8 samples are among the N = 16, and so on) so that the curves differ only by
the added data, and stratified by the source's volume fraction so that every vf group appears as
soon as N reaches the number of groups.

Construction: one seeded order of the whole split, taken by prefixes. Within every vf group the
members are put in a seeded random order; the groups are then interleaved round robin (rank 0 of
every group in increasing vf, then rank 1, ...; a group that runs out is skipped). The subset of
size n is the first n entries of that order, returned sorted. Samples whose vf is NaN (unknown,
e.g. imported from files that do not record it) form one group of their own, so a split with no
vf at all gets a plain seeded random order.
"""

from __future__ import annotations

import numpy as np


def nested_order(volume_fraction: np.ndarray, seed: int) -> np.ndarray:
    """The full stratified order of a split's samples; `nested_subset` takes its prefixes."""
    vf = np.asarray(volume_fraction, dtype=np.float64)
    if vf.ndim != 1 or vf.size == 0:
        raise ValueError(f"volume_fraction must be a non-empty 1-D array (one entry per sample), got shape {vf.shape}")
    rng = np.random.default_rng(seed)
    unknown = np.isnan(vf)
    groups = [np.flatnonzero(vf == value) for value in np.unique(vf[~unknown])]
    if unknown.any():
        groups.append(np.flatnonzero(unknown))
    ranks = np.empty(vf.size, dtype=np.int64)
    group_ids = np.empty(vf.size, dtype=np.int64)
    for g, members in enumerate(groups):
        shuffled = rng.permutation(members)
        ranks[shuffled] = np.arange(shuffled.size)
        group_ids[shuffled] = g
    # Sort by (rank within group, group): the round-robin interleave.
    return np.lexsort((group_ids, ranks))


def nested_subset(volume_fraction: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of the size-`n` nested, vf-stratified subset of a split.

    Args:
      volume_fraction: [N] the vf of every sample of the split (NaN where unknown).
      n: subset size, 1 <= n <= N.
      seed: fixes the order; the same seed gives subsets nested across n.

    Returns:
      [n] int64 sample indices in increasing order. For n >= the number of vf groups every group
      is present, and group sizes differ by at most one while no group is exhausted.
    """
    size = np.asarray(volume_fraction).shape[0] if np.ndim(volume_fraction) == 1 else None
    if size is not None and not 1 <= int(n) <= size:
        raise ValueError(
            f"n must be between 1 and the split size {size}, got {n}; choose a smaller subset or "
            "write a dataset with a larger split"
        )
    order = nested_order(volume_fraction, seed)
    return np.sort(order[: int(n)])
