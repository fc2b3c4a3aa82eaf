"""Data parallelism over a 1-D `("data",)` device mesh.

One per-device program (`steps.train_step` with `axis_name="data"`, gradients averaged by `lax.pmean`) is run over
every device of every process, either as `jax.jit` of `jax.shard_map` (default) or as the classic `jax.pmap`
(`train.parallel = "pmap"`). Params and optimizer state are replicated; the global batch is split across devices in
contiguous blocks (device d of D holds samples [d B/D, (d+1) B/D) of the step's global batch); the state is donated.

Data placement. By default a split lives on every device, replicated, and each step gathers its global batch by
index, so the data order (a function of seed and step only) and hence the trained params are the same for any device
or process count. Across processes every host must then hold the whole split. `host_rows` and `put_sharded` are the
alternative for splits too big for that: each process reads only its contiguous block of rows and the split becomes
one global array sharded over the sample axis; the same index gather (now a cross-device gather compiled by XLA)
keeps the same data order. Sharded splits need the shard_map form (pmap takes per-device copies).
"""

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"
PARALLEL_MODES = ("shard_map", "pmap")


def _put_global(x, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array that every process holds whole (works across processes)."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def _stack_local(x, devices: list) -> jax.Array:
    """`x` copied to each of `devices` (all local) as one array [len(devices), ...]: pmap's replicated layout."""
    x = np.asarray(x)
    stacked = np.broadcast_to(x[None], (len(devices), *x.shape))
    return jax.device_put(stacked, NamedSharding(Mesh(np.array(devices), (AXIS,)), P(AXIS)))


def _fed_batch(step, data):
    del step
    return data


class DataParallel:
    """Compiles per-device steps over all devices (of all processes); `mode` is "shard_map" or "pmap"."""

    def __init__(self, mode: str = "shard_map", devices: list | None = None):
        if mode not in PARALLEL_MODES:
            raise ValueError(f"train.parallel={mode!r} is not one of {PARALLEL_MODES}; pick one of them.")
        self.mode = mode
        self.devices = list(devices) if devices is not None else jax.devices()
        if not self.devices:
            raise ValueError("devices=[] holds no device; pass None to use all devices of all processes.")
        self.local_devices = [d for d in self.devices if d.process_index == jax.process_index()]
        self.mesh = Mesh(np.array(self.devices), (AXIS,))
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P(AXIS))

    @property
    def num_devices(self) -> int:
        """Devices of all processes taking part (the size of the `data` axis)."""
        return len(self.devices)

    @property
    def num_processes(self) -> int:
        return len({d.process_index for d in self.devices})

    def check_batch_size(self, batch_size: int, what: str = "train.batch_size") -> None:
        """Raise ValueError unless the global batch splits evenly over the devices."""
        if batch_size % self.num_devices:
            lower = batch_size - batch_size % self.num_devices
            raise ValueError(
                f"{what}={batch_size} is not divisible by the {self.num_devices} devices in use; "
                f"use a multiple of {self.num_devices} (e.g. {max(lower, self.num_devices)})."
            )

    def check_data_shard(self, num: int, what: str = "data.num_train") -> None:
        """Raise ValueError unless a split of `num` samples shards evenly over processes and devices."""
        if num % self.num_devices:
            lower = num - num % self.num_devices
            raise ValueError(
                f"{what}={num} samples cannot be sharded over the {self.num_devices} devices in use "
                f"({self.num_processes} process(es)): the device count does not divide the dataset; use a "
                f"multiple of {self.num_devices} (e.g. {max(lower, self.num_devices)}) or replicated data."
            )

    # ---- placement -------------------------------------------------------------------------------------------
    def replicate(self, tree):
        """Host pytree -> replicated global arrays (for pmap: stacked [local devices, ...] per process)."""
        if self.mode == "pmap":
            return jax.tree_util.tree_map(lambda x: _stack_local(x, self.local_devices), tree)
        return jax.tree_util.tree_map(lambda x: _put_global(x, self.replicated), tree)

    def unreplicate(self, tree):
        """Replicated state -> one copy (host-transferable, layout-independent)."""
        if self.mode == "pmap":
            return jax.tree_util.tree_map(lambda x: x[0], tree)
        return tree

    def put_data(self, data: Mapping[str, np.ndarray], *, for_training: bool) -> dict[str, jax.Array]:
        """A dataset split that every process holds whole, replicated on every device.

        Training data takes the layout of the train step (stacked per device under pmap); evaluation data is
        always a replicated global array, since evaluation runs as one jit over the mesh.
        """
        if for_training and self.mode == "pmap":
            return self.replicate(dict(data))
        return jax.tree_util.tree_map(lambda x: _put_global(x, self.replicated), dict(data))

    def host_rows(self, num: int, what: str = "data.num_train") -> slice:
        """The contiguous rows [start, stop) of a `num`-sample split that this process reads for `put_sharded`.

        Process p holds the rows of its own devices: the mesh splits the sample axis into `num_devices` equal
        blocks in device order, and the devices of one process are consecutive in `jax.devices()`.
        """
        self.check_data_shard(num, what)
        per_device = num // self.num_devices
        mine = [i for i, d in enumerate(self.devices) if d.process_index == jax.process_index()]
        if not mine:
            raise ValueError("this process owns none of the devices in use; it cannot hold a data shard.")
        if mine != list(range(mine[0], mine[-1] + 1)):
            raise ValueError(f"this process's devices {mine} are not consecutive in the mesh; pass devices sorted.")
        return slice(mine[0] * per_device, (mine[-1] + 1) * per_device)

    def put_sharded(self, local: Mapping[str, np.ndarray], num: int, what: str = "data.num_train"):
        """Global arrays [num, ...] sharded over the sample axis, from this process's rows `host_rows(num)` only.

        Use with the shard_map form: its steps gather each global batch by index, across devices.
        """
        if self.mode == "pmap":
            raise ValueError(
                "put_sharded needs train.parallel='shard_map': pmap steps take per-device copies of the data."
            )
        rows = self.host_rows(num, what)
        out = {}
        for key, x in local.items():
            x = np.asarray(x)
            if x.shape[0] != rows.stop - rows.start:
                raise ValueError(
                    f"{key} holds {x.shape[0]} rows but this process must supply rows [{rows.start}, {rows.stop}) "
                    f"of {num}; read them with DataParallel.host_rows({num})."
                )

            def block(index, x=x):
                sample = index[0]
                start = (sample.start or 0) - rows.start
                stop = (sample.stop if sample.stop is not None else num) - rows.start
                return x[(slice(start, stop), *index[1:])]

            out[key] = jax.make_array_from_callback((num, *x.shape[1:]), self.batch_sharding, block)
        return out

    # ---- compiled steps --------------------------------------------------------------------------------------
    def put_batch(self, local: Mapping[str, np.ndarray], batch_size: int):
        """A host-fed global batch from this process's rows `host_rows(batch_size)` of it.

        shard_map: global arrays sharded over the sample axis; pmap: host arrays [local devices, B/D, ...].
        """
        if self.mode == "pmap":
            n_local = sum(d.process_index == jax.process_index() for d in self.devices)
            return {k: np.asarray(v).reshape(n_local, -1, *np.shape(v)[1:]) for k, v in local.items()}
        return self.put_sharded(local, batch_size, what="train.batch_size")

    def compile_train(
        self,
        per_device_step: Callable[..., tuple[Any, dict]],
        select_batch: Callable[[jax.Array, Any], dict] | None,
    ) -> Callable:
        """`fn(state, data) -> (state, metrics)`; `select_batch(step, data)` returns the global batch of a step.

        With `select_batch=None` the data argument is the step's batch itself, fed from the host (`put_batch`).
        `per_device_step(state, batch, axis_name=...)` is the pure per-device update; it sees its block of B/D
        samples and averages gradients with `lax.pmean(..., "data")`. The state is donated.
        """
        n = self.num_devices
        if select_batch is None:
            select_batch = _fed_batch
        if self.mode == "pmap":

            def pmapped(state, data):
                if select_batch is _fed_batch:  # pmap already split the host batch over the devices
                    return per_device_step(state, data, axis_name=AXIS)
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
        self.check_batch_size(batch_size, "eval batch size")

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
