"""Data parallelism over a 1-D `("data",)` device mesh, behind one interface (`DataParallel`).

One per-device program (`fno_jax.training.steps.train_step` with `axis_name="data"`, gradients averaged by
`lax.pmean`) runs over every device of every process, either as `jax.jit` of `jax.shard_map` (`ShardMapParallel`,
the default) or as the classic `jax.pmap` (`PmapParallel`, `train.parallel = "pmap"`). Params and optimizer state
are replicated; the global batch is split across devices in contiguous blocks (device d of D holds samples
[d B/D, (d+1) B/D) of the step's global batch); the state is donated. The run loop talks to `DataParallel` only:
where the two forms lay data out differently (pmap stacks one copy per local device), the subclass does it.

Data placement. A device-resident training split lives on every device, replicated, and each step gathers its global
batch by index, so the data order (a function of seed and step only) and hence the trained params are the same for
any device or process count. A host-fed batch (`put_batch`) is assembled from each process's own rows
(`host_rows`): process p reads only the samples of the devices it owns.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fno_jax.runtime.cli_errors import UserError

AXIS = "data"
PerDeviceStep = Callable[..., tuple[Any, dict]]
SelectBatch = Callable[[jax.Array, Any], dict]


class DeviceLayoutError(UserError, ValueError):
    """A batch size or parallel form that the devices (and processes) in use cannot take."""


def _put_global(x, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array that every process holds whole (works across processes)."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def abstract_arrays(tree, shardings) -> Any:
    """`tree`'s leaves as `jax.ShapeDtypeStruct`s carrying `shardings` (one sharding for all leaves, or a tree of them).

    What a checkpoint restore takes as its target: the arrays come back laid out for this run's devices, whatever
    devices or processes wrote them.
    """
    if isinstance(shardings, jax.sharding.Sharding):
        shardings = jax.tree_util.tree_map(lambda _: shardings, tree)

    def abstract(x, sharding):
        dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
        return jax.ShapeDtypeStruct(np.shape(x), dtype, sharding=sharding)

    return jax.tree_util.tree_map(abstract, tree, shardings)


def _fed_batch(step, data):
    del step
    return data


class DataParallel:
    """Compiles per-device steps over all devices (of all processes) and lays out what they read and write."""

    mode: str

    def __init__(self, devices: list | None = None):
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
            raise DeviceLayoutError(
                f"{what}={batch_size} is not divisible by the {self.num_devices} devices in use; "
                f"use a multiple of {self.num_devices} (e.g. {max(lower, self.num_devices)})."
            )

    def host_rows(self, num: int, what: str = "train.batch_size") -> slice:
        """The contiguous rows [start, stop) of a `num`-sample batch that this process supplies to `put_batch`.

        Process p holds the rows of its own devices: the mesh splits the sample axis into `num_devices` equal
        blocks in device order, and the devices of one process are consecutive in `jax.devices()`.
        """
        self.check_batch_size(num, what)
        per_device = num // self.num_devices
        mine = [i for i, d in enumerate(self.devices) if d.process_index == jax.process_index()]
        if not mine:
            raise ValueError("this process owns none of the devices in use; it cannot hold a data shard.")
        if mine != list(range(mine[0], mine[-1] + 1)):
            raise ValueError(f"this process's devices {mine} are not consecutive in the mesh; pass devices sorted.")
        return slice(mine[0] * per_device, (mine[-1] + 1) * per_device)

    # ---- layouts: overridden where pmap differs -------------------------------------------------------------
    def put_state(self, state):
        """A host (or single-copy) pytree as the train step's replicated state."""
        return jax.tree_util.tree_map(self._replicate, state)

    def _replicate(self, x) -> jax.Array:
        if isinstance(x, jax.Array) and x.sharding == self.replicated:
            return x  # already laid out (e.g. restored from a checkpoint onto this mesh)
        return _put_global(x, self.replicated)

    def state_to_save(self, state):
        """The train step's state as one copy of global arrays (what a checkpoint and `device_get` take)."""
        return state

    def state_shardings(self, state):
        """The shardings of `state_to_save(state)`'s leaves on this run's devices: replicated over the whole mesh.

        A restore targets these (`abstract_state`), so a checkpoint written on any device or process count loads
        here; `put_state` then takes the restored tree as it is.
        """
        return jax.tree_util.tree_map(lambda _: self.replicated, state)

    def abstract_state(self, state):
        """`state_to_save`-shaped ShapeDtypeStructs with `state_shardings`: the target of a checkpoint restore."""
        return abstract_arrays(state, self.state_shardings(state))

    def put_train_data(self, data: Mapping[str, np.ndarray]):
        """A training split every process holds whole, replicated on every device for the step's index gather."""
        return self.put_eval_data(data)

    def put_eval_data(self, data):
        """A split (any pytree of arrays) every process holds whole, as replicated global arrays (evaluation runs as
        one jit)."""
        return jax.tree_util.tree_map(lambda x: _put_global(x, self.replicated), data)

    def put_batch(self, local: Mapping[str, np.ndarray], batch_size: int, *, batch_axis: int = 0):
        """A host-fed global batch from this process's rows `host_rows(batch_size)` of it, the samples along
        `batch_axis` of every array (1 for the [K, B, ...] batches of K runs)."""
        rows = self.host_rows(batch_size)
        sharding = NamedSharding(self.mesh, self._batch_spec(batch_axis))
        out = {}
        for key, x in local.items():
            x = np.asarray(x)
            if x.shape[batch_axis] != rows.stop - rows.start:
                raise ValueError(
                    f"{key} holds {x.shape[batch_axis]} rows but this process must supply rows [{rows.start}, "
                    f"{rows.stop}) of {batch_size}; read them with DataParallel.host_rows({batch_size})."
                )

            def block(index, x=x):
                part = index[batch_axis]
                start = (part.start or 0) - rows.start
                stop = (part.stop if part.stop is not None else batch_size) - rows.start
                return x[(*index[:batch_axis], slice(start, stop), *index[batch_axis + 1 :])]

            shape = (*x.shape[:batch_axis], batch_size, *x.shape[batch_axis + 1 :])
            out[key] = jax.make_array_from_callback(shape, sharding, block)
        return out

    def put_consts(self, consts):
        """Values every device reads whole in every step (a run's normalization scales): replicated global arrays."""
        return self.put_eval_data(consts)

    def metrics_to_host(self, metrics) -> dict[str, np.ndarray]:
        """A train step's metrics as host numpy values."""
        return jax.device_get(metrics)

    def eval_params(self, state):
        """The params of the train step's state laid out for `compile_eval` (replicated over the mesh)."""
        return self.state_to_save(state)["params"]

    # ---- compiled steps --------------------------------------------------------------------------------------
    def compile_train(
        self, per_device_step: PerDeviceStep, select_batch: SelectBatch | None, *, batch_axis: int = 0
    ) -> Callable:
        """`fn(state, data, consts) -> (state, metrics)`; `select_batch(step, data)` returns the global batch of a
        step.

        With `select_batch=None` the data argument is the step's batch itself, fed from the host (`put_batch`).
        `per_device_step(state, batch, consts, axis_name=...)` is the pure per-device update; it sees its block of
        B/D samples (split along `batch_axis` of every batch array: 1 for the runs of a group, whose batches are
        [K, B, ...]) and `consts` whole (`put_consts`: e.g. normalization scales), and averages gradients with
        `lax.pmean(..., "data")`. The state is donated.
        """
        raise NotImplementedError

    def _batch_spec(self, batch_axis: int) -> P:
        return P(*([None] * batch_axis), AXIS)

    def compile_eval(self, eval_fn: Callable, batch_size: int) -> Callable:
        """`fn(params, data, start, consts) -> sums` over samples [start, start + batch_size) of a split (masked
        past its end): `eval_fn(params, batch, mask, consts)`.

        Runs as one jit over the mesh with the batch split across devices, whatever the train mode.
        """
        self.check_batch_size(batch_size, "eval batch size")

        def run(params, data, start, consts):
            num = jax.tree_util.tree_leaves(data)[0].shape[0]
            index = start + jax.numpy.arange(batch_size)
            mask = index < num
            index = jax.numpy.minimum(index, num - 1)
            batch = jax.tree_util.tree_map(lambda x: x[index], data)
            batch, mask = jax.lax.with_sharding_constraint((batch, mask), self.batch_sharding)
            return eval_fn(params, batch, mask, consts)

        return jax.jit(run, out_shardings=self.replicated)


class ShardMapParallel(DataParallel):
    """`jax.jit` of `jax.shard_map`: one global program; state and metrics are replicated global arrays."""

    mode = "shard_map"

    def compile_train(
        self, per_device_step: PerDeviceStep, select_batch: SelectBatch | None, *, batch_axis: int = 0
    ) -> Callable:
        select_batch = select_batch or _fed_batch
        spec = self._batch_spec(batch_axis)
        sharded = jax.shard_map(
            functools.partial(per_device_step, axis_name=AXIS),
            mesh=self.mesh,
            in_specs=(P(), spec, P()),
            out_specs=(P(), P()),
            check_vma=False,
        )

        def step(state, data, consts):
            batch = select_batch(state["step"], data)
            batch = jax.lax.with_sharding_constraint(batch, NamedSharding(self.mesh, spec))
            return sharded(state, batch, consts)

        return jax.jit(step, donate_argnums=(0,), out_shardings=(self.replicated, self.replicated))


class PmapParallel(DataParallel):
    """`jax.pmap` over the local devices: state, data and metrics carry a leading [local devices] axis.

    Refused across processes: pmap's per-device copies are host-local arrays, which orbax cannot save in a
    multi-process job, so such a run would fail at its first checkpoint after doing the work.
    """

    mode = "pmap"

    def __init__(self, devices: list | None = None):
        super().__init__(devices)
        if self.num_processes > 1:
            raise DeviceLayoutError(
                f"train.parallel='pmap' cannot checkpoint a run across {self.num_processes} processes (its "
                "per-device copies are host-local arrays); use train.parallel='shard_map' for multi-host runs."
            )
        self._stacked = NamedSharding(Mesh(np.array(self.local_devices), (AXIS,)), P(AXIS))

    def _stack(self, x) -> jax.Array:
        x = np.asarray(x)
        return jax.device_put(np.broadcast_to(x[None], (len(self.local_devices), *x.shape)), self._stacked)

    def put_state(self, state):
        return jax.tree_util.tree_map(self._stack, jax.device_get(state))

    def state_to_save(self, state):
        return jax.tree_util.tree_map(lambda x: x[0], state)

    def put_train_data(self, data: Mapping[str, np.ndarray]):
        return jax.tree_util.tree_map(self._stack, dict(data))

    def put_batch(self, local: Mapping[str, np.ndarray], batch_size: int, *, batch_axis: int = 0):
        self.host_rows(batch_size)  # checks the split
        n_local, a = len(self.local_devices), batch_axis

        def per_device(v):  # [..., B_local, ...] -> [devices, ..., B_local / devices, ...]
            v = np.asarray(v)
            return np.moveaxis(v.reshape(*v.shape[:a], n_local, -1, *v.shape[a + 1 :]), a, 0)

        return {k: per_device(v) for k, v in local.items()}

    def put_consts(self, consts):
        return jax.tree_util.tree_map(np.asarray, jax.device_get(consts))  # broadcast by pmap (in_axes None)

    def metrics_to_host(self, metrics) -> dict[str, np.ndarray]:
        return jax.device_get(jax.tree_util.tree_map(lambda x: x[0], metrics))

    def eval_params(self, state):
        params = self.state_to_save(state)["params"]
        return jax.tree_util.tree_map(lambda x: _put_global(np.asarray(x), self.replicated), params)

    def compile_train(
        self, per_device_step: PerDeviceStep, select_batch: SelectBatch | None, *, batch_axis: int = 0
    ) -> Callable:
        n, a = self.num_devices, batch_axis

        def pmapped(state, data, consts):
            if select_batch is None:  # pmap already split the host batch over the devices
                return per_device_step(state, data, consts, axis_name=AXIS)
            batch = select_batch(state["step"], data)
            part = jax.lax.axis_index(AXIS)
            local = jax.tree_util.tree_map(
                lambda x: jax.lax.dynamic_slice_in_dim(x, part * (x.shape[a] // n), x.shape[a] // n, axis=a), batch
            )
            return per_device_step(state, local, consts, axis_name=AXIS)

        return jax.pmap(pmapped, axis_name=AXIS, in_axes=(0, 0, None), donate_argnums=(0,), devices=self.devices)


def make_parallel(mode: str = "shard_map", devices: list | None = None) -> DataParallel:
    """The data-parallel form `mode` ("shard_map" or "pmap") over `devices` (default: all devices of all processes)."""
    if mode not in _FORMS:
        raise DeviceLayoutError(f"train.parallel={mode!r} is not one of {PARALLEL_MODES}; pick one of them.")
    return _FORMS[mode](devices)


_FORMS = {cls.mode: cls for cls in (ShardMapParallel, PmapParallel)}
PARALLEL_MODES = tuple(_FORMS)
