"""The generate job: a run's train/val/test splits written once to a stored dataset.

    python -m experiments.main --config=experiments/configs/generate.py:poisson --workdir=DATASET_DIR

`generate_dataset(config, path)` stores exactly the splits that a training run with `data.source="generate"` and
the same `seed`, `task`, `task_ranges`, `data.resolution`, `data.length` and `data.generate_chunk` makes in memory
(`fno_jax.data.generate.generate_split`): sample i of split s is sample i of the concatenated chunks
`task.sample(fold_in(split_key(seed, s), c), generate_chunk, n)`. The stored train split is the run's train pool
(`data.num_train_pool`, or `data.num_train` when that is 0), so a run reading the dataset (`data.source=DIR`) with
`num_train <= pool` trains on the same nested subset, in the same order, as the generating run.

The zarr chunk (`dataset.chunk` samples) only sets the storage and resume granularity; sample values depend on
`data.generate_chunk` alone, which is recorded in the metadata and checked when an interrupted write is resumed.
Chunks are made in blocks of `generate_chunk` x local devices samples (one chunk per device, concurrently).

Rerunning the same command after an interruption finishes the dataset; on a complete dataset it does nothing.
The train split's normalization statistics (`NormStats.to_dict()` over the task's own channel layout) are stored in
the metadata.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from fno_jax.config import ConfigError
from fno_jax.data.generate import generate_split
from fno_jax.data.stats import input_stats
from fno_jax.data.store import SPLITS, DatasetWriteError, DatasetWriter, StoredDataset, open_dataset
from fno_jax.runtime.progress import Progress
from fno_jax.storage import paths
from fno_jax.storage.json_io import write_json_atomic
from solvers.families import FAMILIES, TASK_NAMES, make_task

# Stored chunk size when the config has no `dataset.chunk`: 64 samples = 4 MiB per field at 128 x 128 float32.
DEFAULT_STORE_CHUNK = 64
# Written beside the arrays before the first chunk: what the sample values depend on beyond the writer's parameters.
GENERATOR_FILE = "generator.json"

_DATA_KEYS = ("resolution", "length", "num_train", "num_val", "num_test", "generate_chunk")
_RANGE_KEYS = tuple(family.range_field for family in FAMILIES.values())


def _get(config: Any, path: str) -> Any:
    node = config
    for part in path.split("."):
        try:
            node = node[part]
        except (KeyError, AttributeError, TypeError):
            raise ConfigError(
                f"config.{path} is missing; start from experiments/configs/generate.py (e.g. "
                "generate.py:poisson) or fno_jax.config.default_config()."
            ) from None
    return node


def _int(config: Any, path: str, minimum: int) -> int:
    value = _get(config, path)
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"config.{path}={value!r} must be an integer >= {minimum}.")
    return int(value)


def train_pool_size(config: ml_collections.ConfigDict) -> int:
    """Samples of the stored train split: `data.num_train_pool` when set (a training config), else `num_train`."""
    pool = config.data.get("num_train_pool", 0) or 0
    return int(pool) or int(config.data.num_train)


def validate_generate_config(config: ml_collections.ConfigDict) -> None:
    """Raises `ConfigError` (a ValueError) naming the key and the fix for a config that cannot make a dataset.

    Needs `seed`, `task`, `task_ranges.{eigenvalue_range, ratio_range, omega_range}`, `data.{resolution, length,
    num_train, num_val, num_test, generate_chunk}`; `dataset.chunk` is optional. Other keys (a training config's
    `model`, `train`, ...) are ignored, so a training config gives the dataset its own run would generate.
    """
    if not isinstance(config, ml_collections.ConfigDict | Mapping):
        raise ConfigError(f"config must be an ml_collections.ConfigDict, got {type(config).__name__}.")
    _int(config, "seed", 0)
    task = _get(config, "task")
    if task not in TASK_NAMES:
        raise ConfigError(f"config.task={task!r} is not one of {TASK_NAMES}.")
    for key in _RANGE_KEYS:
        value = _get(config, f"task_ranges.{key}")
        if not isinstance(value, tuple | list) or len(value) != 2:
            raise ConfigError(f"config.task_ranges.{key}={value!r} must be a pair (low, high).")
    for key in _DATA_KEYS:
        _get(config, f"data.{key}")
    n = _int(config, "data.resolution", 8)
    length = _get(config, "data.length")
    if isinstance(length, bool) or not isinstance(length, int | float) or not length > 0:
        raise ConfigError(f"config.data.length={length!r} must be a positive number (the domain side).")
    for key in ("num_train", "num_val", "num_test", "generate_chunk"):
        _int(config, f"data.{key}", 1)
    pool = config.data.get("num_train_pool", 0) or 0
    if pool and pool < config.data.num_train:
        raise ConfigError(
            f"config.data.num_train={config.data.num_train} exceeds config.data.num_train_pool={pool}; "
            "raise the pool or lower num_train."
        )
    if config.get("dataset") is not None and config.dataset.get("chunk") is not None:
        _int(config, "dataset.chunk", 1)
    try:
        made = make_task(task, config.task_ranges, float(length), config.get("task_options"))
    except (ValueError, TypeError) as e:
        raise ConfigError(f"config.task_ranges/task_options do not make a {task!r} task: {e}") from e
    if n % 2 and getattr(made, "bc", "periodic") != "dirichlet":
        raise ConfigError(f"config.data.resolution={n} must be an even number >= 8 (the paper uses 128).")


def _store_chunk(config: ml_collections.ConfigDict) -> int:
    if config.get("dataset") is not None and config.dataset.get("chunk") is not None:
        return int(config.dataset.chunk)
    return DEFAULT_STORE_CHUNK


def _float_dtype() -> str:
    # generate_split returns JAX's default float; store that so the stored values are the in-memory ones exactly.
    return str(jnp.asarray(0.0).dtype)


class _BlockSource:
    """Samples [start, start + count) of a split, made in aligned blocks of `generate_chunk` x devices samples.

    Writes go in sample order, so each block is made once and kept until the writer moves past it; stored chunks
    that straddle two blocks read from both. The next block still to be written is made in a background thread
    while the current one is compressed and stored (values are unchanged: a block depends on its index alone).
    """

    def __init__(self, task, seed: int, resolution: int, generate_chunk: int, writer: DatasetWriter):
        self.task, self.seed, self.resolution, self.chunk = task, seed, resolution, generate_chunk
        self.writer = writer
        self.block = generate_chunk * jax.local_device_count()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self._blocks: dict[tuple[str, int], Future] = {}

    def _make(self, split: str, b: int) -> dict[str, np.ndarray]:
        start = b * self.block
        num = min(self.block, self.writer.counts[split] - start)
        return generate_split(self.task, self.seed, split, num, self.resolution, chunk=self.chunk, start=start)

    def _needed(self, split: str, b: int) -> bool:
        """Whether block b of the split exists and overlaps a stored chunk not yet written."""
        lo, hi = b * self.block, min((b + 1) * self.block, self.writer.counts[split])
        c = self.writer.chunk
        return lo < hi and any(not self.writer.done(split, s) for s in range(lo // c * c, hi, c))

    def _get_block(self, split: str, b: int) -> dict[str, np.ndarray]:
        self._blocks = {k: f for k, f in self._blocks.items() if k[0] == split and k[1] >= b}
        if (split, b) not in self._blocks:
            self._blocks[split, b] = self._pool.submit(self._make, split, b)
        if (split, b + 1) not in self._blocks and self._needed(split, b + 1):
            self._blocks[split, b + 1] = self._pool.submit(self._make, split, b + 1)
        return self._blocks[split, b].result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __call__(self, split: str, start: int, count: int) -> dict[str, np.ndarray]:
        parts, pos, end = [], start, start + count
        while pos < end:
            b = pos // self.block
            block = self._get_block(split, b)
            lo, hi = pos - b * self.block, min(end - b * self.block, self.block)
            parts.append({k: v[lo:hi] for k, v in block.items()})
            pos = b * self.block + hi
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _check_generator(path: str, generator: dict[str, Any], writer: DatasetWriter) -> None:
    """Refuses to resume (or accept as done) a dataset whose chunks were made with another generate_chunk."""
    if writer.complete:
        stored = open_dataset(path).metadata.get("extra", {}).get("generator")
    else:
        file = paths.join(path, GENERATOR_FILE)
        if not paths.exists(file):
            try:
                write_json_atomic(file, generator)  # a write killed half-way never leaves half a file
            except OSError as err:
                raise DatasetWriteError(
                    f"cannot write {file} ({err}); if the disk is full or the directory not writable, fix that and "
                    "run the same command again."
                ) from err
            return
        stored = paths.read_json(file)
    if stored is not None and stored != generator:
        raise ConfigError(
            f"{path} was generated with {stored} but this config asks for {generator}; the sample values would "
            f"differ. Rerun with config.data.generate_chunk={stored.get('generate_chunk')}, or write to a new path."
        )


def _train_stats(writer: DatasetWriter, layout: str, length: float) -> dict[str, Any]:
    """NormStats of the stored train split's inputs, read back a stored chunk at a time (bounded memory)."""
    total, chunk = writer.counts["train"], writer.chunk
    chunks = (writer.read("train", slice(s, min(s + chunk, total))) for s in writer.chunk_starts("train"))
    return input_stats(chunks, layout, length).to_dict()


def generate_dataset(config: ml_collections.ConfigDict, path: str | os.PathLike[str]) -> StoredDataset:
    """Writes (or finishes, or finds complete) the dataset of `config` at `path` and returns it opened.

    Args:
      config: a generate config (experiments/configs/generate.py) or a training config; see
        `validate_generate_config` for the keys read.
      path: the dataset directory (new, or one this same config started).

    Returns:
      The complete `StoredDataset`: splits train (`train_pool_size(config)` samples), val (`data.num_val`), test
      (`data.num_test`), arrays [N, n, n] source/solution etc. as in fno_jax.data.store, normalization statistics of
      the train split in `.normalization`.

    Raises:
      ConfigError: a missing or invalid key (the message names it and the fix), or an unfinished dataset at
        `path` made with another `data.generate_chunk`.
      ValueError: `path` holds another dataset or unrelated files (nothing is overwritten).
    """
    validate_generate_config(config)
    if not isinstance(path, str | os.PathLike) or not os.fspath(path):
        raise ValueError(f"path must be a dataset directory (str or os.PathLike), got {path!r}.")
    if jax.process_count() > 1:
        raise ValueError(
            f"generate_dataset runs on one process (it uses all {jax.local_device_count()} local devices), but "
            f"{jax.process_count()} processes were started; run the generate job on a single host."
        )
    path = os.fspath(path)
    d = config.data
    task = make_task(config.task, config.task_ranges, float(d.length), config.get("task_options"))
    counts = {"train": train_pool_size(config), "val": int(d.num_val), "test": int(d.num_test)}
    writer = DatasetWriter(
        path,
        spec=task.spec(),
        resolution=int(d.resolution),
        counts=counts,
        seed=int(config.seed),
        length=float(d.length),
        chunk=_store_chunk(config),
        dtype=_float_dtype(),
    )
    generator = {"generate_chunk": int(d.generate_chunk)}
    _check_generator(path, generator, writer)
    if writer.complete:
        logging.info("dataset %s is already complete", path)
        return open_dataset(path)

    make_batch = _BlockSource(task, int(config.seed), int(d.resolution), int(d.generate_chunk), writer)
    try:
        for split in SPLITS:
            _write_split(writer, make_batch, split)
    finally:
        make_batch.close()
    stats = _train_stats(writer, config.task, float(d.length))
    writer.finalize(stats, {"generator": generator, "layout": config.task})
    logging.info("dataset %s complete: %s", path, counts)
    return open_dataset(path)


def _write_split(writer: DatasetWriter, make_batch: _BlockSource, split: str) -> None:
    """The chunks of `split` not yet stored, made and written in spans of whole blocks, with a progress bar."""
    starts, total = writer.chunk_starts(split), writer.counts[split]
    todo = [s for s in starts if not writer.done(split, s)]
    if not todo:
        return
    logging.info(
        "[%s] %d/%d chunks stored; writing %d samples to %s on %d devices",
        split, len(starts) - len(todo), len(starts), sum(min(writer.chunk, total - s) for s in todo),
        writer.path, jax.local_device_count(),
    )  # fmt: skip
    bar = Progress(len(starts), label=f"[{split}]", start=len(starts) - len(todo))
    t0, samples = time.perf_counter(), 0
    for start, count in _spans(todo, writer.chunk, total, max(1, make_batch.block // writer.chunk)):
        writer.write_chunks(split, start, make_batch(split, start, count))
        samples += count
        last = start + count >= todo[-1] + 1
        bar.update(-(-(start + count) // writer.chunk), force=last, samples_per_s=samples / _since(t0))
    bar.close()
    logging.info("[%s] %d/%d chunks, %.1f samples/s", split, len(starts), len(starts), samples / _since(t0))


def _spans(todo: list[int], chunk: int, total: int, most: int) -> list[tuple[int, int]]:
    """(start, count) of runs of at most `most` consecutive chunks among the chunk starts `todo`: written at once."""
    spans: list[tuple[int, int]] = []
    for start in todo:
        count = min(chunk, total - start)
        if spans and spans[-1][0] + spans[-1][1] == start and spans[-1][1] < most * chunk:
            spans[-1] = (spans[-1][0], spans[-1][1] + count)
        else:
            spans.append((start, count))
    return spans


def _since(t0: float) -> float:
    return max(time.perf_counter() - t0, 1e-9)
