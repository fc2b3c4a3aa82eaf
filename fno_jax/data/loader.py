"""How training batches reach the train step: one `Feed` for a group of K >= 1 runs (`fno_jax.training.runs`).

Three feeds give the same batches for the same (seed, step) (`fno_jax.data.order`):
  device  the runs' training sets live on every device; each step gathers each run's batch by index inside the
          compiled step;
  host    each step's batches are read on the host (from memory or a stored dataset) and prefetched in a thread;
          each process reads only the rows its own devices train on;
  stream  each step draws a fresh batch from the task on the device (`fno_jax.data.generate.stream_batch`); the runs
          of a group share their data seed, so they draw one batch.
Run k of a group reads its own training subset in the order of its own seed; with K > 1 a step's batches are
[K, B, ...] (the run axis first), with K = 1 [B, ...].
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from fno_jax.config import layout_of
from fno_jax.data import generate
from fno_jax.data.order import UNLABELLED, batch_indices, epoch_order
from fno_jax.data.prefetch import Prefetcher
from fno_jax.data.training_set import Splits, TrainingSet
from fno_jax.model import channels

# data.loader="auto": training sets up to this size (all runs of a group together) live on the devices; larger ones
# are fed from the host.
DEVICE_RESIDENT_MAX_BYTES = 4 * 2**30


def loader_of(config: ml_collections.ConfigDict, trains: Sequence[TrainingSet]) -> str:
    """`data.loader`, with "auto" resolved: host-fed when several processes read a stored dataset (each reads only
    its rows) or the runs' training sets together exceed DEVICE_RESIDENT_MAX_BYTES, else device-resident."""
    if config.data.loader != "auto":
        return config.data.loader
    if jax.process_count() > 1 and trains[0].dataset is not None:
        return "host"
    total = sum(train.nbytes(config.data.resolution) for train in trains)
    return "device" if total <= DEVICE_RESIDENT_MAX_BYTES else "host"


class Feed:
    """`select(step, data) -> batch` (traced inside the step, `step` the state's step: [K] for K > 1 runs; None when
    `data` is already the batch) and the data argument of each step."""

    select: Callable[[jax.Array, Any], dict] | None = None

    def data(self, step: int) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        """Stops background work (a prefetch thread); safe on every exit."""


class _DeviceFeed(Feed):
    """The runs' training sets on every device ([K, N, ...] for K > 1); run k gathers its batch in its order. With
    a residual term (`terms`) each run's unlabelled inputs are there too, and every step also gathers a batch of
    them (`batch["unlabelled"]`) in an order of their own."""

    def __init__(self, splits: Sequence[Splits], parallel, axis, *, batch_size: int, seeds: Sequence[int], terms):
        data: dict[str, Any] = {"seeds": axis.stack_host(list(np.int32(seeds)))}
        num = splits[0].train.num if splits[0].train is not None else 0
        if "data" in terms:
            data["arrays"] = axis.stack_host([s.train.read(np.arange(num)) for s in splits])
        if "residual" in terms:
            data["unlabelled"] = axis.stack_host([s.unlabelled for s in splits])
        num_unlabelled = len(splits[0].unlabelled["source"]) if "residual" in terms else 0
        self._data = parallel.put_train_data(data)

        def one(step, seed, arrays, unlabelled):
            batch = _select_rows(step, arrays, seed, num=num, batch_size=batch_size) if arrays is not None else {}
            if unlabelled is not None:
                rows = batch_indices(step, num=num_unlabelled, batch_size=batch_size, seed=seed, stream=UNLABELLED)
                batch["unlabelled"] = {key: value[rows] for key, value in unlabelled.items()}
            return batch

        self.select = lambda step, data: axis.map(one)(step, data["seeds"], data.get("arrays"), data.get("unlabelled"))

    def data(self, step: int) -> Any:
        return self._data


class _StreamFeed(Feed):
    """A fresh batch per step from (data seed, step), shared by the runs of a group (broadcast over the run axis)."""

    def __init__(self, task, layout: str, axis, *, seed: int, batch_size: int, resolution: int):
        one = functools.partial(
            _select_stream, task=task, layout=layout, seed=seed, batch_size=batch_size, resolution=resolution
        )
        if axis.stacked:
            broadcast = lambda x: jax.numpy.broadcast_to(x, (axis.size, *x.shape))
            self.select = lambda steps, data: jax.tree_util.tree_map(broadcast, one(steps[0], data))
        else:
            self.select = one

    def data(self, step: int) -> Any:
        return {}


class _HostFeed(Feed):
    """The runs' batches of steps [start, stop) read on the host in the order of `batch_indices`, prefetched."""

    def __init__(self, trains, parallel, axis, *, batch_size: int, seeds: Sequence[int], start: int, stop: int):
        self._trains, self._parallel, self._axis, self._batch_size = trains, parallel, axis, batch_size
        self._per_epoch = trains[0].num // batch_size
        self._mine = parallel.host_rows(batch_size, what="train.batch_size")
        self._orders = [jax.jit(functools.partial(epoch_order, num=trains[0].num, seed=seed)) for seed in seeds]
        self._cache: dict[int, list[np.ndarray]] = {}
        self._batches = Prefetcher(self._fetch, range(start, stop), buffer_size=2)

    def _fetch(self, step: int):
        epoch = step // self._per_epoch
        if epoch not in self._cache:
            self._cache = {epoch: [np.asarray(jax.device_get(order(epoch))) for order in self._orders]}
        first = (step % self._per_epoch) * self._batch_size
        rows = [order[first : first + self._batch_size][self._mine] for order in self._cache[epoch]]
        local = self._axis.stack_host([train.read(r) for train, r in zip(self._trains, rows, strict=True)])
        return self._parallel.put_batch(local, self._batch_size, batch_axis=self._axis.batch_axis)

    def data(self, step: int) -> Any:
        return next(self._batches)

    def close(self) -> None:
        self._batches.close()


def make_feed(
    configs: Sequence[ml_collections.ConfigDict],
    splits: Sequence[Splits],
    task,
    parallel,
    axis,
    *,
    start: int,
    stop: int,
    terms: Sequence[str] = ("data",),
) -> Feed:
    """The feed of a group of runs (`configs`, one per run, sharing everything but seed and learning rate; `splits`
    their data) that trains steps [start, stop); `axis` is the group's `RunAxis`; `terms` the loss terms it feeds
    ("data": labelled batches, "residual": unlabelled ones, `fno_jax.training.steps.train_step`)."""
    config = configs[0]
    t, d = config.train, config.data
    seeds = [int(c.seed) for c in configs]
    if d.source == "stream":
        seed = generate.data_seed(config)
        return _StreamFeed(task, layout_of(config), axis, seed=seed, batch_size=t.batch_size, resolution=d.resolution)
    trains = [s.train for s in splits]
    if "residual" in terms or loader_of(config, trains) == "device":
        return _DeviceFeed(splits, parallel, axis, batch_size=t.batch_size, seeds=seeds, terms=terms)
    return _HostFeed(trains, parallel, axis, batch_size=t.batch_size, seeds=seeds, start=start, stop=stop)


def _select_rows(step, data, seed, *, num, batch_size):
    index = batch_indices(step, num=num, batch_size=batch_size, seed=seed)
    return {k: value[index] for k, value in data.items()}


def _select_stream(step, data, *, task, layout, seed, batch_size, resolution):
    del data
    batch = generate.stream_batch(task, seed, step, batch_size, resolution)
    out = {"source": batch["source"], "coeffs": channels.coefficients(batch, layout), "solution": batch["solution"]}
    if channels.field_channels(layout):
        out["fields"] = channels.fields(batch, layout)
    return out
