"""A run's data: its training set (a nested subset of a pool), its validation and test splits, and the
normalization statistics of its inputs, from generated data, a stored dataset or a stream.

The statistics are those of the whole pool's inputs (the paper's: computed once per dataset over its training
split, inputs only), so runs that train on different subsets N of one pool normalize alike. A stored dataset
carries them in its metadata; otherwise process 0 alone computes them and hands them to the other processes bit
for bit (`fno_jax.runtime.distributed.from_main_process`), so no other host reads the training inputs for them.

Training arrays are `{"source": [B, n, n], "coeffs": [B, C-1], "solution": [B, n, n]}` (the coefficients of the
run's channel layout, `fno_jax.model.channels.coefficients`); the model inputs are assembled from them on the device.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping, Sequence

import ml_collections
import numpy as np

from fno_jax.config import ConfigError
from fno_jax.data import generate
from fno_jax.data.stats import input_stats
from fno_jax.data.store import StoredDataset, open_dataset
from fno_jax.data.subsets import nested_subset
from fno_jax.model import channels
from fno_jax.model.normalization import NormStats
from fno_jax.runtime.distributed import from_main_process

# What a stored dataset must supply for training arrays and for input statistics.
# Samples read at a time when a statistic runs over a stored split (bounded memory).
_STATS_CHUNK = 1024
# Generated samples behind a stream run's statistics (a stream has no fixed training set).
STREAM_STATS_SAMPLES = 1024


def training_arrays(batch: Mapping[str, np.ndarray], layout: str) -> dict[str, np.ndarray]:
    """A raw task batch as training arrays of `layout` (host numpy): source, coeffs [B, C_s], solution and, when the
    layout has field channels, fields [B, n, n, F]."""
    coeffs = np.asarray(channels.coefficients(batch, layout))
    out = {"source": np.asarray(batch["source"]), "coeffs": coeffs, "solution": np.asarray(batch["solution"])}
    if channels.field_channels(layout):
        out["fields"] = np.asarray(channels.fields(batch, layout))
    return out


def _for_training(dataset: StoredDataset) -> tuple[str, ...]:
    """The stored arrays training arrays are made of: the inputs and the solution."""
    return (*dataset.inputs, "solution")


class TrainingSet:
    """The run's training samples on the host: row r is sample `indices[r]` of a pool held in memory (generated) or
    in a stored dataset (read on demand, so a split larger than memory never has to be loaded)."""

    def __init__(self, layout: str, indices: np.ndarray, *, arrays=None, dataset: StoredDataset | None = None):
        self.layout = layout
        self.indices = np.asarray(indices)
        self.arrays = arrays
        self.dataset = dataset

    @property
    def num(self) -> int:
        return len(self.indices)

    def read(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Rows of the training set as training arrays, in the order given."""
        rows = np.asarray(rows)
        if self.arrays is not None:
            return {k: v[rows] for k, v in self.arrays.items()}
        index = self.indices[rows]
        # Tensorstore reads sorted indices fastest; the rows come back in the order asked for.
        order = np.argsort(index, kind="stable")
        batch = self.dataset.read("train", index[order], arrays=_for_training(self.dataset))
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return {k: v[inverse] for k, v in training_arrays(batch, self.layout).items()}

    def nbytes(self, resolution: int) -> int:
        fields = len(channels.field_channels(self.layout))
        return self.num * ((2 + fields) * resolution * resolution + channels.num_channels(self.layout)) * 4


@dataclasses.dataclass(frozen=True)
class Splits:
    """The run's training set (None for a stream; empty for a label-free run), val/test splits as training arrays,
    the statistics of the training inputs the run normalizes with (its downstream statistics), and its unlabelled
    inputs {"source", "coeffs"} for a residual loss (None when it has none)."""

    train: TrainingSet | None
    val: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    stats: NormStats
    unlabelled: dict[str, np.ndarray] | None = None


def open_checked_dataset(config: ml_collections.ConfigDict, task, layout: str) -> StoredDataset:
    """The stored dataset `config.data.source`, checked against the config (resolution, task, ranges, sizes)."""
    d = config.data
    dataset = open_dataset(d.source)
    dataset.check_compatible(resolution=d.resolution, layout=layout)
    spec = dataset.task
    if config.task != "mixed" and spec.get("name") not in (config.task, None):
        raise ConfigError(
            f"dataset {d.source} holds task {spec.get('name')!r} but config.task={config.task!r}; "
            f"set config.task={spec.get('name')!r} or use a {config.task!r} dataset."
        )
    if spec.get("name") == config.task and "imported_from" not in spec:
        # Same PDE but other coefficient ranges or domain size would train (and record in the checkpoint's
        # task_spec) something other than what the config says. Imported datasets carry no ranges to compare.
        expected = json.loads(json.dumps(task.spec()))
        if spec != expected:
            raise ConfigError(
                f"dataset {d.source} was generated with task spec {spec} but the config asks for {expected}; set "
                "config.task_ranges and config.data.length to the dataset's values or generate a dataset for these."
            )
    for split, wanted in (("val", d.num_val), ("test", d.num_test)):
        if wanted > dataset.num(split):
            raise ConfigError(
                f"config.data.num_{split}={wanted} exceeds the {dataset.num(split)} samples of split {split!r} in "
                f"{d.source}; lower it or generate a bigger dataset."
            )
    if d.num_train > dataset.num("train") and config.train.num_steps != 0:
        raise ConfigError(
            f"config.data.num_train={d.num_train} exceeds the {dataset.num('train')} training samples in "
            f"{d.source}; lower it or generate a bigger dataset."
        )
    return dataset


def load_splits(config: ml_collections.ConfigDict, task, layout: str, dataset: StoredDataset | None = None) -> Splits:
    """The run's data per `config.data.source` (`dataset`: the stored dataset it names, already checked)."""
    return load_splits_for_runs([config], task, layout, dataset)[0]


def load_splits_for_runs(
    configs: Sequence[ml_collections.ConfigDict], task, layout: str, dataset: StoredDataset | None
) -> list[Splits]:
    """The data of a group of runs that differ only in `seed`, learning rate and `data.pool_seed`: one validation and
    test split (made or read once); per pool seed one training pool and the statistics of its inputs; per run the
    nested training subset its seed draws from its pool."""
    config = configs[0]
    if config.data.source in ("generate", "stream"):
        return _generated_splits(configs, task, layout)
    dataset = dataset if dataset is not None else open_checked_dataset(config, task, layout)
    return _stored_splits(config, layout, dataset, [int(c.seed) for c in configs])


def _generated_splits(configs: Sequence[ml_collections.ConfigDict], task, layout: str) -> list[Splits]:
    config = configs[0]
    d = config.data
    make = functools.partial(generate.generate_split, task, resolution=d.resolution, chunk=d.generate_chunk)
    seed = generate.data_seed(config)
    val = training_arrays(make(seed, "val", d.num_val), layout)
    test = training_arrays(make(seed, "test", d.num_test), layout)
    if d.source == "stream":
        stream = make(seed, "train", STREAM_STATS_SAMPLES)
        stats = shared_stats(lambda: input_stats([stream], layout, d.length), layout)
        return [Splits(None, val, test, stats) for _ in configs]
    pools: dict[int, tuple[dict | None, dict | None, NormStats]] = {}
    out = []
    for c in configs:
        pool_seed = generate.pool_seed(c)
        if pool_seed not in pools:
            size = d.num_train_pool or d.num_train
            pool = make(pool_seed, "train", size) if size else None
            unlabelled = make(pool_seed, "unlabelled", d.num_unlabelled) if d.num_unlabelled else None
            # Statistics of the labelled pool's inputs (so every N of a group alike); a label-free run's of its
            # unlabelled inputs (under test-time adaptation without either: of the test inputs it adapts on).
            source = pool if pool is not None else unlabelled
            source = source if source is not None else make(seed, "test", d.num_test)
            stats = shared_stats(lambda source=source: input_stats([source], layout, d.length), layout)
            pools[pool_seed] = pool, unlabelled, stats
        pool, unlabelled, stats = pools[pool_seed]
        train = _subset(pool, d.num_train, int(c.seed), layout)
        inputs = _inputs(test) if c.train.test_time else (_inputs(training_arrays(unlabelled, layout))
                                                          if unlabelled is not None else None)  # fmt: skip
        out.append(Splits(train, val, test, stats, inputs))
    return out


def _subset(pool: dict | None, num: int, seed: int, layout: str) -> TrainingSet:
    """The nested subset of `num` samples `seed` draws from a pool (none: an empty training set)."""
    if pool is None or num == 0:
        return TrainingSet(layout, np.zeros(0, np.int64), arrays=None)
    indices = nested_subset(pool["volume_fraction"], min(num, len(pool["source"])), seed)
    return TrainingSet(layout, indices, arrays=training_arrays({k: v[indices] for k, v in pool.items()}, layout))


def _inputs(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inputs of training arrays (no solutions): what a residual loss reads."""
    return {k: v for k, v in arrays.items() if k != "solution"}


def _stored_splits(
    config: ml_collections.ConfigDict, layout: str, dataset: StoredDataset, seeds: Sequence[int]
) -> list[Splits]:
    d = config.data
    val = training_arrays(dataset.read("val", slice(0, d.num_val), arrays=_for_training(dataset)), layout)
    test = training_arrays(dataset.read("test", slice(0, d.num_test), arrays=_for_training(dataset)), layout)
    stats = _stored_stats(dataset, layout, d.length)
    pool_size = dataset.num("train")
    num = min(d.num_train, pool_size)
    vf = None
    if num < pool_size:
        vf = dataset.read("train", slice(None), arrays=("volume_fraction",))["volume_fraction"]
    inputs = _inputs(test) if config.train.test_time else None
    out = []
    for seed in seeds:
        indices = nested_subset(vf, num, seed) if vf is not None and num else np.arange(num)
        out.append(Splits(TrainingSet(layout, indices, dataset=dataset), val, test, stats, inputs))
    return out


def shared_stats(compute: Callable[[], NormStats], layout: str) -> NormStats:
    """`compute()` run by process 0 alone, the same `NormStats` (bitwise) returned on every process."""
    size = channels.num_channels(layout)  # the source scale, then one scale per coefficient channel

    def as_vector():
        stats = compute()
        return np.array([stats.source_scale, *stats.coeff_scale], np.float64)

    values = from_main_process(as_vector, size)
    return NormStats(source_scale=float(values[0]), coeff_scale=tuple(float(v) for v in values[1:]))


def _stored_stats(dataset: StoredDataset, layout: str, length: float) -> NormStats:
    """The statistics of the whole stored train split's inputs: those stored with the dataset when they are of this
    layout (computed once, when it was written; every process reads them from metadata.json), else read chunk by
    chunk by process 0 and shared."""
    if dataset.metadata.get("extra", {}).get("layout") == layout and dataset.normalization:
        return NormStats.from_dict(dataset.normalization)

    def compute() -> NormStats:
        total = dataset.num("train")
        chunks = (
            dataset.read("train", slice(s, min(s + _STATS_CHUNK, total)), arrays=dataset.inputs)
            for s in range(0, total, _STATS_CHUNK)
        )
        return input_stats(chunks, layout, length)

    return shared_stats(compute, layout)
