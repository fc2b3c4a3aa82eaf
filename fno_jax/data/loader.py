"""How training batches reach the train step: a `Feed` per run.

Three feeds give the same batches for the same (seed, step) (`fno_jax.data.order`):
  device  the training set lives on every device; each step gathers its batch by index inside the compiled step;
  host    each step's batch is read on the host (from memory or a stored dataset) and prefetched in a thread;
          each process reads only the rows its own devices train on;
  stream  each step draws a fresh batch from the task on the device (`fno_jax.data.generate.stream_batch`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from fno_jax.config import layout_of
from fno_jax.data import generate
from fno_jax.data.order import batch_indices, epoch_order
from fno_jax.data.prefetch import Prefetcher
from fno_jax.data.training_set import TRAIN_KEYS, Splits, TrainingSet
from fno_jax.model import channels

# data.loader="auto": training sets up to this size live on the devices; larger ones are fed from the host.
DEVICE_RESIDENT_MAX_BYTES = 4 * 2**30


def loader_of(config: ml_collections.ConfigDict, train: TrainingSet) -> str:
    """`data.loader`, with "auto" resolved: host-fed when several processes read a stored dataset (each reads only
    its rows) or the training set exceeds DEVICE_RESIDENT_MAX_BYTES, else device-resident."""
    if config.data.loader != "auto":
        return config.data.loader
    if jax.process_count() > 1 and train.dataset is not None:
        return "host"
    return "device" if train.nbytes(config.data.resolution) <= DEVICE_RESIDENT_MAX_BYTES else "host"


class Feed:
    """`select(step, data) -> batch` (traced inside the step; None when `data` is already the batch) and the data
    argument of each step."""

    select: Callable[[jax.Array, Any], dict] | None = None

    def data(self, step: int) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        """Stops background work (a prefetch thread); safe on every exit."""


class _DeviceFeed(Feed):
    def __init__(self, train: TrainingSet, parallel, *, batch_size: int, seed: int):
        self.select = functools.partial(_select_rows, num=train.num, batch_size=batch_size, seed=seed)
        self._data = parallel.put_train_data(train.read(np.arange(train.num)))

    def data(self, step: int) -> Any:
        return self._data


class _StreamFeed(Feed):
    def __init__(self, task, layout: str, *, seed: int, batch_size: int, resolution: int):
        self.select = functools.partial(
            _select_stream, task=task, layout=layout, seed=seed, batch_size=batch_size, resolution=resolution
        )

    def data(self, step: int) -> Any:
        return {}


class _HostFeed(Feed):
    """Batches of steps [start, stop) read on the host in the order of `batch_indices`, prefetched."""

    def __init__(self, train: TrainingSet, parallel, *, batch_size: int, seed: int, start: int, stop: int):
        self._train, self._parallel, self._batch_size = train, parallel, batch_size
        self._per_epoch = train.num // batch_size
        self._mine = parallel.host_rows(batch_size, what="train.batch_size")
        self._order = jax.jit(functools.partial(epoch_order, num=train.num, seed=seed))
        self._cache: dict[int, np.ndarray] = {}
        self._batches = Prefetcher(self._fetch, range(start, stop), buffer_size=2)

    def _fetch(self, step: int):
        epoch = step // self._per_epoch
        if epoch not in self._cache:
            self._cache = {epoch: np.asarray(jax.device_get(self._order(epoch)))}
        first = (step % self._per_epoch) * self._batch_size
        rows = self._cache[epoch][first : first + self._batch_size][self._mine]
        return self._parallel.put_batch(self._train.read(rows), self._batch_size)

    def data(self, step: int) -> Any:
        return next(self._batches)

    def close(self) -> None:
        self._batches.close()


def make_feed(config: ml_collections.ConfigDict, splits: Splits, task, parallel, *, start: int, stop: int) -> Feed:
    """The feed of a run that trains steps [start, stop)."""
    t, d = config.train, config.data
    if d.source == "stream":
        seed = generate.data_seed(config)
        return _StreamFeed(task, layout_of(config), seed=seed, batch_size=t.batch_size, resolution=d.resolution)
    if loader_of(config, splits.train) == "device":
        return _DeviceFeed(splits.train, parallel, batch_size=t.batch_size, seed=config.seed)
    return _HostFeed(splits.train, parallel, batch_size=t.batch_size, seed=config.seed, start=start, stop=stop)


class _PackedDeviceFeed(Feed):
    """K runs' training sets [K, N, ...] on every device; step s of run k gathers run k's batch of its order."""

    def __init__(self, trains: list[TrainingSet], parallel, *, batch_size: int, seeds: list[int]):
        num = trains[0].num
        per_run = [t.read(np.arange(num)) for t in trains]
        arrays = {k: np.stack([p[k] for p in per_run]) for k in TRAIN_KEYS}
        self._data = parallel.put_train_data({"arrays": arrays, "seeds": np.asarray(seeds, np.int32)})
        select = functools.partial(_select_rows, num=num, batch_size=batch_size)
        self.select = lambda steps, data: jax.vmap(select)(steps, data["arrays"], seed=data["seeds"])

    def data(self, step: int) -> Any:
        return self._data


class _PackedStreamFeed(Feed):
    """K runs drawing the same stream batch (one data seed): drawn once per step, broadcast over the run axis."""

    def __init__(self, task, layout: str, *, runs: int, seed: int, batch_size: int, resolution: int):
        one = functools.partial(
            _select_stream, task=task, layout=layout, seed=seed, batch_size=batch_size, resolution=resolution
        )
        broadcast = lambda x: jax.numpy.broadcast_to(x, (runs, *x.shape))
        self.select = lambda steps, data: jax.tree_util.tree_map(broadcast, one(steps[0], data))

    def data(self, step: int) -> Any:
        return {}


def make_packed_feed(config: ml_collections.ConfigDict, splits: list[Splits], task, parallel, seeds: list[int]) -> Feed:
    """The feed of K runs trained as one program (`fno_jax.training.packed`): batches [K, B, ...], run k's from its own
    training subset in its own order; device-resident or streamed (packed runs are small by construction)."""
    t, d = config.train, config.data
    if d.source == "stream":
        return _PackedStreamFeed(
            task,
            layout_of(config),
            runs=len(seeds),
            seed=generate.data_seed(config),
            batch_size=t.batch_size,
            resolution=d.resolution,
        )
    return _PackedDeviceFeed([s.train for s in splits], parallel, batch_size=t.batch_size, seeds=seeds)


def _select_rows(step, data, *, num, batch_size, seed):
    index = batch_indices(step, num=num, batch_size=batch_size, seed=seed)
    return {k: data[k][index] for k in TRAIN_KEYS}


def _select_stream(step, data, *, task, layout, seed, batch_size, resolution):
    del data
    batch = generate.stream_batch(task, seed, step, batch_size, resolution)
    return {"source": batch["source"], "coeffs": channels.coefficients(batch, layout), "solution": batch["solution"]}
