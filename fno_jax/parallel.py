"""Data parallelism over a 1-D `("data",)` device mesh.

One per-device program (`steps.train_step` with `axis_name="data"`, gradients averaged by `lax.pmean`) is run over
every device of every process, either as `jax.jit` of `jax.shard_map` (default) or as the classic `jax.pmap`
(`train.parallel = "pmap"`). Params and optimizer state are replicated; the global batch is split across devices.
The datasets used here live on the devices, replicated, and each step gathers its batch by index, so the data order
(a function of seed and step only) is the same for any device count.
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"
PARALLEL_MODES = ("shard_map", "pmap")


def _put_global(x, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array that every process holds whole (works across hosts)."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


class DataParallel:
    """Compiles per-device steps over all devices; `mode` is "shard_map" or "pmap"."""

    def __init__(self, mode: str = "shard_map", devices: list | None = None):
        if mode not in PARALLEL_MODES:
            raise ValueError(f"train.parallel={mode!r} is not one of {PARALLEL_MODES}.")
        self.mode = mode
        self.devices = list(devices) if devices is not None else jax.devices()
        self.mesh = Mesh(np.array(self.devices), (AXIS,))
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P(AXIS))

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    def check_batch_size(self, batch_size: int, what: str = "train.batch_size") -> None:
        if batch_size % self.num_devices:
            lower = batch_size - batch_size % self.num_devices
            raise ValueError(
                f"{what}={batch_size} is not divisible by the {self.num_devices} devices in use; "
                f"use a multiple of {self.num_devices} (e.g. {max(lower, self.num_devices)})."
            )

    # ---- placement -------------------------------------------------------------------------------------------
    def replicate(self, tree):
        """Host pytree -> replicated global arrays (for pmap: stacked per local device)."""
        if self.mode == "pmap":
            local = [d for d in self.devices if d.process_index == jax.process_index()]
            return jax.device_put_replicated(tree, local)
        return jax.tree_util.tree_map(lambda x: _put_global(x, self.replicated), tree)

    def unreplicate(self, tree):
        """Replicated state -> one copy (host-transferable, layout-independent)."""
        if self.mode == "pmap":
            return jax.tree_util.tree_map(lambda x: x[0], tree)
        return tree

    def put_data(self, data: dict[str, np.ndarray], *, for_training: bool) -> dict[str, jax.Array]:
        """A dataset split, replicated on every device (each step gathers its own batch).

        Training data takes the layout of the train step (stacked per device under pmap); evaluation data is
        always a replicated global array, since evaluation runs as one jit over the mesh.
        """
        if for_training and self.mode == "pmap":
            return self.replicate(data)
        return jax.tree_util.tree_map(lambda x: _put_global(x, self.replicated), data)

    # ---- compiled steps --------------------------------------------------------------------------------------
    def compile_train(
        self,
        per_device_step: Callable[..., tuple[Any, dict]],
        select_batch: Callable[[jax.Array, Any], dict],
    ) -> Callable:
        """`fn(state, data) -> (state, metrics)`; `select_batch(step, data)` returns the global batch of a step.

        `per_device_step(state, batch, axis_name=...)` is the pure per-device update. The state is donated.
        """
        n = self.num_devices
        if self.mode == "pmap":

            def pmapped(state, data):
                batch = select_batch(state["step"], data)
                part = jax.lax.axis_index(AXIS)
                local = jax.tree_util.tree_map(
                    lambda x: jax.lax.dynamic_slice_in_dim(x, part * (x.shape[0] // n), x.shape[0] // n),
                    batch,
                )
                return per_device_step(state, local, axis_name=AXIS)

            return jax.pmap(pmapped, axis_name=AXIS, donate_argnums=(0,), devices=self.devices)

        sharded = jax.shard_map(
            functools.partial(per_device_step, axis_name=AXIS),
            mesh=self.mesh,
            in_specs=(P(), P(AXIS)),
            out_specs=(P(), P()),
            check_vma=False,
        )

        def step(state, data):
            batch = select_batch(state["step"], data)
            batch = jax.lax.with_sharding_constraint(batch, self.batch_sharding)
            return sharded(state, batch)

        return jax.jit(step, donate_argnums=(0,), out_shardings=(self.replicated, self.replicated))

    def compile_eval(self, eval_fn: Callable, batch_size: int) -> Callable:
        """`fn(params, data, start) -> sums` over samples [start, start + batch_size) of a split (masked past its end).

        Runs as one jit over the mesh with the batch split across devices, whatever the train mode.
        """

        def run(params, data, start):
            num = jax.tree_util.tree_leaves(data)[0].shape[0]
            index = start + jax.numpy.arange(batch_size)
            mask = index < num
            index = jax.numpy.minimum(index, num - 1)
            batch = jax.tree_util.tree_map(lambda x: x[index], data)
            batch, mask = jax.lax.with_sharding_constraint((batch, mask), self.batch_sharding)
            return eval_fn(params, batch, mask)

        return jax.jit(run, out_shardings=self.replicated)

    def eval_params(self, params):
        """Params laid out for `compile_eval` (replicated over the mesh)."""
        params = self.unreplicate(params)
        if self.mode == "pmap":
            return jax.tree_util.tree_map(lambda x: _put_global(np.asarray(x), self.replicated), params)
        return params
