"""The run axis: K runs trained as one program, each value of a run stacked along a leading axis.

A group of K runs (`fno_jax.training.trainer`) keeps one pytree per kind of value (params, optimizer states, steps,
normalization scales, batches, metrics) with the runs stacked along axis 0, and maps the per-run functions (init,
train step, eval step, prediction) over it with `jax.vmap`. One run is K = 1, which carries **no** axis: its values
and programs are exactly those of a lone run (a vmap over a single run may sum in another order), so a group of one
is bitwise the run trained alone.

    axis = RunAxis(3)
    stacked = axis.stack([tree0, tree1, tree2])     # leaves [3, ...]
    trees = axis.unstack(stacked)                   # back to 3 trees (one compiled program)
    step = axis.map(one_run_step)                   # vmap over axis 0 of every argument (in_axes as jax.vmap)
    axis.runs_of(host_metrics)                      # per-run numpy trees from a host tree
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["RunAxis"]


@jax.jit
def _stack(trees: list) -> Any:
    """K trees of one structure as one tree with a leading run axis, in one program."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


@functools.partial(jax.jit, static_argnums=1)
def _unstack(tree, runs: int) -> list:
    """The `runs` trees of a stacked tree, in one program: indexing leaf by leaf dispatches (and compiles) one
    small op per leaf and run, seconds per checkpoint on a CPU."""
    return [jax.tree_util.tree_map(lambda x, k=k: x[k], tree) for k in range(runs)]


@dataclasses.dataclass(frozen=True)
class RunAxis:
    """The K runs of a group (see the module docstring). Properties: size (K >= 1)."""

    size: int

    def __post_init__(self):
        if int(self.size) < 1:
            raise ValueError(f"a group holds at least one run, got {self.size}.")

    @property
    def stacked(self) -> bool:
        """Whether values carry a leading run axis (K > 1)."""
        return self.size > 1

    @property
    def batch_axis(self) -> int:
        """The axis of a training batch's arrays along which its samples lie ([K, B, ...] or [B, ...])."""
        return 1 if self.stacked else 0

    def stack(self, trees: Sequence[Any]) -> Any:
        """One tree of the K runs' trees: leaves [K, ...] (K = 1: the tree itself)."""
        if len(trees) != self.size:
            raise ValueError(f"expected {self.size} trees (one per run), got {len(trees)}.")
        return _stack(list(trees)) if self.stacked else trees[0]

    def unstack(self, tree: Any) -> list[Any]:
        """The K runs' trees of a stacked tree, as device arrays (K = 1: [tree])."""
        return _unstack(tree, self.size) if self.stacked else [tree]

    def stack_host(self, trees: Sequence[Any]) -> Any:
        """`stack` for host (numpy) trees, without a device program."""
        if len(trees) != self.size:
            raise ValueError(f"expected {self.size} trees (one per run), got {len(trees)}.")
        if not self.stacked:
            return trees[0]
        return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)

    def runs_of(self, tree: Any) -> list[Any]:
        """The K runs' trees of a stacked host (numpy) tree, by indexing (K = 1: [tree])."""
        if not self.stacked:
            return [tree]
        return [jax.tree_util.tree_map(lambda x, k=k: np.asarray(x)[k], tree) for k in range(self.size)]

    def map(self, fn: Callable, in_axes: Any = 0) -> Callable:
        """`fn` mapped over the run axis (`jax.vmap(fn, in_axes)`); K = 1: `fn` itself."""
        return jax.vmap(fn, in_axes=in_axes) if self.stacked else fn

    def per_run(self, shape_tree: Any) -> Any:
        """ShapeDtypeStructs of one run's values from a stacked tree (its leading axis dropped when K > 1)."""
        drop = 1 if self.stacked else 0
        abstract = lambda x: jax.ShapeDtypeStruct(np.shape(x)[drop:], jnp.result_type(x))
        return jax.tree_util.tree_map(abstract, shape_tree)


# A lone run: no run axis.
ONE_RUN = RunAxis(1)
