"""Stored datasets: a directory of tensorstore zarr v3 arrays plus a JSON metadata file.

Layout of a dataset directory ``DIR``::

    DIR/<split>/<array>      zarr v3 array per split (train, val, test) and batch-dict key
    DIR/progress.json        written first, rewritten after every chunk: parameters + chunks done
    DIR/metadata.json        written LAST, atomically; its presence marks the dataset complete; sealed with a
                             checksum of its content (`fno_jax.storage.integrity`)

Arrays (leading dimension N = samples in the split, n = resolution, arrays indexed [..., y, x]):

    source [N, n, n], solution [N, n, n], each coefficient of the schema (`solvers.schema.COEFFICIENTS`:
    diffusion [N, 2, 2], velocity [N, 2], omega [N]), pde [N] (int32) and volume_fraction [N] (float dtype of the
    dataset).

Every array is chunked by samples (``chunk`` samples per chunk, whole trailing dimensions),
zstd-compressed and given a crc32c checksum per chunk (datasets written before checksums have
none and still read). Opening checks metadata.json's checksum and fields, and each array's shape,
dtype and codecs against it: a damaged byte anywhere is an error, never different data. Writing
happens chunk by chunk; ``progress.json`` records the chunks done so an
interrupted write resumes by running the same command again. Reading is JSON + tensorstore only:
opening a dataset never executes code stored with it.

``DIR`` may be ``gs://bucket/path``: the JSON files go through `fno_jax.storage.paths`, the arrays through
tensorstore's own gcs driver. Chunks are written whole (never read-modify-write), and metadata.json still comes last.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorstore as ts

from fno_jax.runtime.cli_errors import UserError
from fno_jax.storage import paths
from fno_jax.storage.integrity import ChecksumError, seal, verify
from fno_jax.storage.json_io import to_json, write_json_atomic
from fno_jax.storage.version import package_version
from solvers.families import FAMILIES
from solvers.schema import CHANNELS, COEFFICIENTS

FORMAT_NAME = "fno-jax-dataset"
FORMAT_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "val", "test")
# The batch dict's arrays every dataset holds: fields, every per-sample coefficient of the schema (`solvers.schema`),
# then per-sample labels. A dataset of a family with a field coefficient (Darcy's permeability) holds it too
# (`arrays_for`).
ARRAYS: tuple[str, ...] = (
    "source",
    "solution",
    *(name for name, c in COEFFICIENTS.items() if not c.field),
    "pde",
    "volume_fraction",
)


def arrays_for(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """The arrays of a dataset of the task `spec`: ARRAYS and the field coefficients of its families."""
    names = [s.get("name") for s in spec.get("tasks", [spec])] if isinstance(spec, Mapping) else []
    fields = [
        CHANNELS[channel].coefficient
        for name in names
        if name in FAMILIES
        for channel in FAMILIES[name].coefficients
        if CHANNELS[channel].field
    ]
    return (*ARRAYS, *dict.fromkeys(fields))


METADATA_FILE = "metadata.json"
PROGRESS_FILE = "progress.json"

_FLOAT_DTYPES = ("float32", "float64")
# Parameters that define a dataset's contents; two writes agree iff these agree.
_PARAMETER_FIELDS = ("task", "resolution", "length", "seed", "counts", "chunk", "dtype")


class DatasetNotFoundError(UserError, FileNotFoundError):
    """The dataset directory does not exist."""


class IncompleteDatasetError(UserError, ValueError):
    """The dataset directory has no metadata.json: its write never finished."""


class DatasetFormatError(UserError, ValueError):
    """metadata.json is unreadable or from an unknown format/version."""


class CorruptDatasetError(UserError, ValueError):
    """A stored chunk is missing or cannot be decoded."""


class IncompatibleDatasetError(UserError, ValueError):
    """The dataset does not fit the model (resolution or input channels)."""


class DatasetWriteError(UserError, OSError):
    """A dataset could not be written (a full disk, an unwritable directory); the chunks stored so far are kept and
    the same write, run again, resumes after them."""


def _array_shape(name: str, count: int, resolution: int) -> tuple[int, ...]:
    if name in ("source", "solution"):
        return (count, resolution, resolution)
    if name in COEFFICIENTS and COEFFICIENTS[name].field:
        return (count, resolution, resolution)
    if name in COEFFICIENTS:
        return (count, *COEFFICIENTS[name].shape)
    return (count,)


def _array_dtype(name: str, dtype: str) -> str:
    return "int32" if name == "pde" else dtype


def _read_json(path: str) -> dict[str, Any]:
    value = json.loads(paths.read_bytes(path))
    if not isinstance(value, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return value


def _array_spec(
    root: str, split: str, name: str, shape: tuple[int, ...] | None, dtype: str | None, chunk: int
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "driver": "zarr3",
        "kvstore": paths.tensorstore_kvstore(paths.join(root, split, name)),
        # A missing chunk is an error, not silently the fill value; hence also store chunks equal
        # to the fill value (all-zero omega of a Poisson set, say): none is legitimately absent.
        "fill_missing_data_reads": False,
        "store_data_equal_to_fill_value": True,
    }
    if shape is not None:
        spec["metadata"] = {
            "shape": list(shape),
            "data_type": dtype,
            "chunk_grid": {
                "name": "regular",
                "configuration": {"chunk_shape": [chunk, *shape[1:]]},
            },
            "codecs": [
                {"name": "bytes", "configuration": {"endian": "little"}},
                {"name": "zstd", "configuration": {"level": 3}},
                {"name": "crc32c"},
            ],
        }
    return spec


def _parameters(
    spec: Mapping[str, Any],
    resolution: int,
    length: float,
    seed: int,
    counts: Mapping[str, int],
    chunk: int,
    dtype: str,
) -> dict[str, Any]:
    return to_json(
        {
            "task": dict(spec),
            "resolution": int(resolution),
            "length": float(length),
            "seed": int(seed),
            "counts": {s: int(counts[s]) for s in SPLITS},
            "chunk": int(chunk),
            "dtype": dtype,
        }
    )


def _first_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    for field in _PARAMETER_FIELDS:
        if old.get(field) != new.get(field):
            return field
    return None


def _check_arguments(
    spec: Mapping[str, Any], resolution: int, counts: Mapping[str, int], chunk: int, dtype: str
) -> dict[str, int]:
    """The writer's arguments checked (a ValueError says which is wrong); returns the counts of all splits."""
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ValueError(f"spec must be a dict with a 'name' entry (the task spec), got {spec!r}")
    if int(resolution) < 1:
        raise ValueError(f"resolution must be a positive integer, got {resolution}")
    if int(chunk) < 1:
        raise ValueError(f"chunk must be a positive integer (samples per chunk), got {chunk}")
    if dtype not in _FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {_FLOAT_DTYPES}, got {dtype!r}")
    unknown = set(counts) - set(SPLITS)
    if unknown:
        raise ValueError(f"counts has unknown splits {sorted(unknown)}; use {SPLITS}")
    full_counts = {s: int(counts.get(s, 0)) for s in SPLITS}
    if any(c < 0 for c in full_counts.values()) or sum(full_counts.values()) == 0:
        raise ValueError(f"counts must be >= 0 with at least one sample, got {full_counts}")
    return full_counts


class DatasetWriter:
    """Writes a dataset chunk by chunk; resumable; ``finalize`` writes metadata.json last.

    Opening a writer on
      - a new or empty directory creates the arrays and progress.json;
      - an interrupted write with the same parameters resumes it (``done(split, start)`` tells which
        chunks are already stored);
      - a complete dataset with the same parameters does nothing (``complete`` is True);
      - a dataset (complete or not) with other parameters raises ValueError naming the path and the
        first differing field; nothing is overwritten.

    Args:
      path: dataset directory.
      spec: task spec (JSON-serialisable dict with at least "name").
      resolution: grid size n of source/solution ([N, n, n]).
      counts: samples per split, e.g. {"train": 1024, "val": 128, "test": 128}; absent splits: 0.
      seed: the seed the data was drawn with (recorded; also part of the identity).
      length: domain size L.
      chunk: samples per stored chunk; writes happen in whole chunks.
      dtype: float dtype of the float arrays, "float32" or "float64" (pde is always int32).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        spec: Mapping[str, Any],
        resolution: int,
        counts: Mapping[str, int],
        seed: int,
        length: float = 1.0,
        chunk: int = 64,
        dtype: str = "float32",
    ) -> None:
        self.path = os.fspath(path)
        self.counts = _check_arguments(spec, resolution, counts, chunk, dtype)
        try:
            self.parameters = _parameters(spec, resolution, length, seed, self.counts, chunk, dtype)
        except TypeError as e:
            raise ValueError(f"spec must be JSON-serialisable: {e}") from e
        self.chunk = int(chunk)
        self.resolution = int(resolution)
        self.dtype = dtype
        self.complete = False
        self._done: dict[str, list[int]] = {s: [] for s in SPLITS}
        self._arrays: dict[tuple[str, str], ts.TensorStore] = {}
        self.names = arrays_for(spec)
        if self._resume_or_start():
            for split in SPLITS:
                for name in self.names:
                    self._arrays[split, name] = self._open_array(split, name)

    def _resume_or_start(self) -> bool:
        """Finds the directory's state: complete (False: nothing to open), unfinished (its done chunks read), or new
        (created, progress.json written); True when the arrays are to be opened."""
        metadata_path = paths.join(self.path, METADATA_FILE)
        progress_path = paths.join(self.path, PROGRESS_FILE)
        if paths.exists(metadata_path):
            self._check_same(_read_json(metadata_path), "complete dataset")
            self.complete = True
            return False
        if paths.exists(progress_path):
            progress = _read_json(progress_path)
            self._check_same(progress.get("parameters", {}), "unfinished dataset")
            self._done = {s: sorted(int(i) for i in progress["done"].get(s, [])) for s in SPLITS}
        elif paths.isdir(self.path) and paths.listdir(self.path):
            raise ValueError(
                f"{self.path} exists, is not empty and holds no dataset (no {PROGRESS_FILE} or "
                f"{METADATA_FILE}); choose a new path for the dataset"
            )
        else:
            try:
                paths.makedirs(self.path)
            except OSError as err:
                raise self._write_error(err, "the directory") from err
            self._save_progress()
        return True

    def _open_array(self, split: str, name: str) -> ts.TensorStore:
        """Creates an array, or reopens it as stored when an interrupted write made it (with the codecs of the
        fno-jax that started the write), checking its shape and dtype."""
        shape = _array_shape(name, self.counts[split], self.resolution)
        dtype = _array_dtype(name, self.dtype)
        exists = paths.exists(paths.join(self.path, split, name, "zarr.json"))
        try:
            spec = _array_spec(self.path, split, name, None if exists else shape, dtype, self.chunk)
            array = ts.open(spec, create=not exists, open=exists).result()
        except (OSError, ValueError) as err:
            raise self._write_error(err, f"array {name!r} of split {split!r}") from err
        if tuple(array.shape) != shape or array.dtype.name != dtype:
            raise ValueError(
                f"{self.path}/{split}/{name} holds shape {tuple(array.shape)} {array.dtype.name}, not {shape} {dtype}; "
                f"the unfinished dataset is damaged: write to a new path (or delete {self.path} yourself)."
            )
        return array

    def _check_same(self, existing: Mapping[str, Any], what: str) -> None:
        field = _first_difference(existing, self.parameters)
        if field is not None:
            raise ValueError(
                f"{self.path} holds a {what} with different parameters: {field!r} is "
                f"{existing.get(field)!r} there but {self.parameters[field]!r} was asked for. "
                f"Nothing was overwritten; write to a new path (or delete {self.path} yourself)."
            )

    def _save_progress(self) -> None:
        try:
            write_json_atomic(
                paths.join(self.path, PROGRESS_FILE),
                {"parameters": self.parameters, "done": self._done},
            )
        except OSError as err:
            raise self._write_error(err, PROGRESS_FILE) from err

    def chunk_starts(self, split: str) -> list[int]:
        """First sample index of every chunk of a split."""
        return list(range(0, self.counts[split], self.chunk))

    def done(self, split: str, start: int) -> bool:
        """Whether the chunk beginning at `start` of `split` is already stored."""
        return self.complete or start in self._done[split]

    def write_chunk(self, split: str, start: int, batch: Mapping[str, Any]) -> None:
        """Stores one chunk: samples [start, start + chunk) of `split` (shorter at the end).

        `batch` is a batch dict (see ARRAYS) of host or device arrays whose leading dimension is the
        chunk's sample count; floats are cast to the dataset dtype, pde to int32.
        """
        if self.complete:
            raise ValueError(f"{self.path} is already complete; nothing to write")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if start % self.chunk or not 0 <= start < self.counts[split]:
            raise ValueError(
                f"start must be a multiple of chunk={self.chunk} inside [0, "
                f"{self.counts[split]}) for split {split!r}, got {start}"
            )
        self._write_span(split, start, min(self.chunk, self.counts[split] - start), batch)

    def write_chunks(self, split: str, start: int, batch: Mapping[str, Any]) -> None:
        """Stores consecutive chunks at once: samples [start, start + B) with B the batch's length, which must end on
        a chunk boundary or at the end of the split. One write and one progress record for all of them (the
        chunks are compressed in parallel); a crash before the record rewrites them all on the next run."""
        if self.complete:
            raise ValueError(f"{self.path} is already complete; nothing to write")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        count = len(batch["source"]) if "source" in batch else 0
        end = start + count
        if start % self.chunk or not 0 <= start < self.counts[split] or count < 1 or end > self.counts[split]:
            raise ValueError(
                f"chunks must start at a multiple of chunk={self.chunk} inside [0, {self.counts[split]}) and hold "
                f"at least one sample within the split {split!r}; got start {start} with {count} samples"
            )
        if end % self.chunk and end != self.counts[split]:
            raise ValueError(
                f"chunks of split {split!r} must end on a multiple of chunk={self.chunk} or at its end "
                f"{self.counts[split]}; got samples [{start}, {end})"
            )
        self._write_span(split, start, count, batch)

    def _write_span(self, split: str, start: int, count: int, batch: Mapping[str, Any]) -> None:
        missing = [k for k in self.names if k not in batch]
        if missing:
            raise ValueError(f"batch lacks arrays {missing}; a batch dict of this task holds {self.names}")
        host = {}
        for name in self.names:
            value = np.asarray(batch[name], dtype=_array_dtype(name, self.dtype))
            expected = _array_shape(name, count, self.resolution)
            if value.shape != expected:
                raise ValueError(
                    f"batch[{name!r}] has shape {value.shape}, expected {expected} for the "
                    f"chunk at {start} of split {split!r} (resolution {self.resolution})"
                )
            host[name] = value
        try:
            futures = [self._arrays[split, name][start : start + count].write(host[name]) for name in self.names]
            for future in futures:
                future.result()
        except (OSError, ValueError) as err:  # tensorstore reports I/O failures as ValueError
            raise self._write_error(err, f"samples [{start}, {start + count}) of split {split!r}") from err
        # Recorded only after every array is stored: a crash before this line rewrites the chunks.
        self._done[split] = sorted({*self._done[split], *range(start, start + count, self.chunk)})
        self._save_progress()

    def _write_error(self, err: Exception, what: str) -> DatasetWriteError:
        stored = sum(len(v) for v in self._done.values())
        total = sum(len(self.chunk_starts(s)) for s in SPLITS)
        return DatasetWriteError(
            f"cannot write {what} of dataset {self.path} ({type(err).__name__}: {str(err)[:300]}); {stored} of "
            f"{total} chunks are stored and kept. If the disk is full or the directory not writable, fix that and "
            "run the same command again: the write resumes after the stored chunks."
        )

    def read(self, split: str, index: slice | Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """Reads back stored samples before the dataset is complete (e.g. to compute statistics)."""
        if self.complete:
            return open_dataset(self.path).read(split, index)
        return _read_arrays(self.path, split, {k: self._arrays[split, k] for k in self.names}, index)

    def missing_chunks(self) -> dict[str, list[int]]:
        """Chunk starts not yet stored, per split."""
        if self.complete:
            return {s: [] for s in SPLITS}
        return {s: [i for i in self.chunk_starts(s) if i not in set(self._done[s])] for s in SPLITS}

    def finalize(
        self, norm_stats: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Writes metadata.json (atomically, last), marking the dataset complete; returns it.

        `norm_stats` is the dict of normalization statistics (NormStats.to_dict()), `extra` any
        further JSON-serialisable information. Raises ValueError while chunks are missing.
        """
        metadata_path = paths.join(self.path, METADATA_FILE)
        if self.complete:
            return _read_json(metadata_path)
        missing = {s: v for s, v in self.missing_chunks().items() if v}
        if missing:
            raise ValueError(f"{self.path} cannot be finalized: chunks not yet written (split: starts) {missing}")
        metadata = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            **self.parameters,
            "arrays": {
                name: {
                    "shape": list(_array_shape(name, -1, self.resolution)[1:]),
                    "dtype": _array_dtype(name, self.dtype),
                }
                for name in self.names
            },
            "complete": {s: True for s in SPLITS},
            "package_version": package_version(),
            "normalization": to_json(dict(norm_stats or {})),
            "extra": to_json(dict(extra or {})),
        }
        metadata = seal(to_json(metadata))
        try:
            write_json_atomic(metadata_path, metadata)
        except OSError as err:
            raise self._write_error(err, METADATA_FILE) from err
        self.complete = True
        return metadata


def write_dataset(
    path: str | os.PathLike[str],
    make_batch: Callable[[str, int, int], Mapping[str, Any]],
    *,
    norm_stats: Mapping[str, Any] | Callable[[dict[str, np.ndarray]], Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
    **writer_args: Any,
) -> StoredDataset:
    """Writes (or resumes, or finds complete) a dataset and returns it opened.

    `writer_args` are `DatasetWriter`'s (spec, resolution, counts, seed, length, chunk, dtype).
    `make_batch(split, start, count)` returns the batch dict for samples [start, start + count) of
    `split`; it is called once per chunk not yet stored, in split order then sample order, so its
    output must depend only on its arguments (e.g. fold the PRNG key with split and start) for a
    resumed write to equal an uninterrupted one. `norm_stats` is a dict, or a function of the whole
    stored train split (host numpy batch dict) returning one, evaluated after all chunks are stored.
    """
    writer = DatasetWriter(path, **writer_args)
    if not writer.complete:
        for split in SPLITS:
            for start in writer.chunk_starts(split):
                if writer.done(split, start):
                    continue
                count = min(writer.chunk, writer.counts[split] - start)
                writer.write_chunk(split, start, make_batch(split, start, count))
        stats = norm_stats
        if callable(stats):
            stats = stats(writer.read("train", slice(None)))
        writer.finalize(stats, extra)
    return open_dataset(path)


def _read_arrays(
    root: str,
    split: str,
    arrays: Mapping[str, ts.TensorStore],
    index: slice | Sequence[int] | np.ndarray,
) -> dict[str, np.ndarray]:
    if not isinstance(index, slice):
        index = np.asarray(index, dtype=np.int64)
        if index.ndim != 1:
            raise ValueError(f"indices must be a slice or a 1-D sequence, got shape {index.shape}")
    futures = {name: arr[index].read() for name, arr in arrays.items()}
    out = {}
    for name, future in futures.items():
        try:
            out[name] = future.result()
        except ValueError as e:
            raise CorruptDatasetError(
                f"cannot read array {name!r} of split {split!r} in dataset {root}: a stored chunk "
                f"is missing or damaged ({e}). Regenerate the dataset (delete {root} and re-run "
                "the command that wrote it)."
            ) from e
    return out


class StoredDataset:
    """A complete stored dataset, opened for reading (see `open_dataset`)."""

    def __init__(self, path: str, metadata: dict[str, Any], cache_bytes: int = 256 << 20) -> None:
        self.path = path
        self.metadata = metadata
        self._arrays: dict[tuple[str, str], ts.TensorStore] = {}
        # Decoded chunks are kept in a cache shared by all arrays: consecutive batches smaller than
        # a chunk then decode each chunk once. A complete dataset never changes, so cached chunks
        # need no re-validation after opening.
        self._context = ts.Context({"cache_pool": {"total_bytes_limit": int(cache_bytes)}})

    def _array(self, split: str, name: str) -> ts.TensorStore:
        if (split, name) not in self._arrays:
            try:
                spec = _array_spec(self.path, split, name, None, None, 1)
                spec["recheck_cached_data"] = "open"
                array = ts.open(spec, open=True, context=self._context).result()
            except ValueError as e:
                raise CorruptDatasetError(
                    f"cannot open array {name!r} of split {split!r} in dataset {self.path} ({e}). "
                    f"Regenerate the dataset (delete {self.path} and re-run the command that "
                    "wrote it)."
                ) from e
            _check_array(self.path, split, name, array, self.metadata)
            self._arrays[split, name] = array
        return self._arrays[split, name]

    @property
    def resolution(self) -> int:
        return int(self.metadata["resolution"])

    @property
    def task(self) -> dict[str, Any]:
        """The task spec the data was drawn from."""
        return self.metadata["task"]

    @property
    def normalization(self) -> dict[str, Any]:
        """The stored normalization statistics dict (NormStats.to_dict() form)."""
        return self.metadata.get("normalization", {})

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")

    def num(self, split: str) -> int:
        """Number of samples in a split."""
        self._check_split(split)
        return int(self.metadata["counts"][split])

    @property
    def names(self) -> tuple[str, ...]:
        """The arrays this dataset holds (ARRAYS, and its family's field coefficients)."""
        return tuple(self.metadata.get("arrays") or ARRAYS)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The arrays a model's inputs (and their statistics) are made of: all but the solution and labels."""
        return tuple(n for n in self.names if n not in ("solution", "volume_fraction"))

    def read(
        self, split: str, index: slice | Sequence[int] | np.ndarray, arrays: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Samples of a split selected by a slice or 1-D integer indices, as a host batch dict (of `arrays`, default
        all of them)."""
        self._check_split(split)
        arrays = self.names if arrays is None else arrays
        unknown = sorted(set(arrays) - set(self.names))
        if unknown:
            raise ValueError(f"unknown dataset arrays {unknown}; this dataset holds {list(self.names)}")
        arrays = {name: self._array(split, name) for name in arrays}
        n = self.num(split)
        if not isinstance(index, slice):
            idx = np.asarray(index)
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise ValueError(
                    f"indices must lie in [0, {n}) for split {split!r} of {self.path}, got "
                    f"values from {idx.min()} to {idx.max()}"
                )
        return _read_arrays(self.path, split, arrays, index)

    def check_compatible(
        self,
        *,
        resolution: int | None = None,
        layout: str | None = None,
        in_channels: int | None = None,
    ) -> None:
        """Raises IncompatibleDatasetError unless a model with these settings can use the data.

        `resolution` must equal the stored one; `layout` (poisson, advection_diffusion, helmholtz,
        mixed) must be the dataset's task name, or "mixed", which holds every PDE; `in_channels`
        must be the channel count of the dataset's layout (source + coefficients).
        """
        if resolution is not None and int(resolution) != self.resolution:
            raise IncompatibleDatasetError(
                f"dataset {self.path} has resolution {self.resolution} but the model expects "
                f"{resolution}; generate a dataset at resolution {resolution} or set "
                f"data.resolution={self.resolution}"
            )
        from fno_jax.model.channels import LAYOUTS

        name = self.task.get("name")
        if layout is not None:
            if layout not in LAYOUTS:
                raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
            if layout != "mixed" and layout != name:
                raise IncompatibleDatasetError(
                    f"dataset {self.path} holds task {name!r} but the model's channel layout is "
                    f"{layout!r}; use a {layout!r} dataset or a model with layout {name!r}"
                )
        if in_channels is not None and (layout or name) in LAYOUTS:
            expected = len(LAYOUTS[layout or name])
            if int(in_channels) != expected:
                raise IncompatibleDatasetError(
                    f"dataset {self.path} (task {name!r}) gives {expected} input channels but the "
                    f"model takes {in_channels}; use a model for the {layout or name!r} layout"
                )


def open_dataset(path: str | os.PathLike[str]) -> StoredDataset:
    """Opens a complete dataset for reading; clear errors when it is missing/incomplete/unknown."""
    path = os.fspath(path)
    if not paths.isdir(path):
        raise DatasetNotFoundError(
            f"no dataset at {path}: the directory does not exist. Check the path, or generate the dataset there first."
        )
    metadata_path = paths.join(path, METADATA_FILE)
    if not paths.exists(metadata_path):
        raise IncompleteDatasetError(
            f"dataset {path} is incomplete (no {METADATA_FILE}): its write did not finish. "
            "Re-run the generate command to finish it."
        )
    try:
        metadata = _read_json(metadata_path)
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        raise DatasetFormatError(
            f"{metadata_path} is not valid JSON ({e}); regenerate the dataset at a new path"
        ) from e
    if metadata.get("format") != FORMAT_NAME:
        raise DatasetFormatError(
            f"{path} is not an fno-jax dataset (format {metadata.get('format')!r}, expected {FORMAT_NAME!r})"
        )
    if metadata.get("version") != FORMAT_VERSION:
        raise DatasetFormatError(
            f"dataset {path} has format version {metadata.get('version')!r}, but this fno-jax "
            f"({package_version()}) reads version {FORMAT_VERSION}; use the fno-jax version that "
            "wrote it or regenerate the dataset"
        )
    _check_metadata(metadata_path, metadata)
    return StoredDataset(path, metadata)


_METADATA_KEYS = frozenset(
    ("format", "version", *_PARAMETER_FIELDS, "arrays", "complete", "package_version", "normalization", "extra")
)


def _check_metadata(metadata_path: str, metadata: dict[str, Any]) -> None:
    """Raises DatasetFormatError unless metadata.json matches its checksum and holds fields of the right types."""
    try:
        verify(metadata, metadata_path)
    except ChecksumError as e:
        raise DatasetFormatError(f"{e} Regenerate the dataset, or restore the file from a copy.") from e
    unknown = sorted(set(metadata) - _METADATA_KEYS - {"checksum"})
    if unknown:
        raise DatasetFormatError(f"{metadata_path} has unknown fields {unknown}; it was not written by fno-jax.")

    def natural(value: Any, minimum: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= minimum

    counts = metadata.get("counts")
    problems = {
        "task": isinstance(metadata.get("task"), dict) and isinstance(metadata["task"].get("name"), str),
        "resolution": natural(metadata.get("resolution"), 1),
        "length": isinstance(metadata.get("length"), int | float) and metadata["length"] > 0,
        "seed": isinstance(metadata.get("seed"), int),
        "counts": isinstance(counts, dict) and all(natural(counts.get(s), 0) for s in SPLITS),
        "chunk": natural(metadata.get("chunk"), 1),
        "dtype": metadata.get("dtype") in _FLOAT_DTYPES,
        "normalization": isinstance(metadata.get("normalization", {}), dict),
        "extra": isinstance(metadata.get("extra", {}), dict),
    }
    bad = [name for name, ok in problems.items() if not ok]
    if bad:
        raise DatasetFormatError(
            f"{metadata_path} has missing or invalid fields {bad} (e.g. {bad[0]}={metadata.get(bad[0])!r}); "
            "regenerate the dataset."
        )


def _check_array(path: str, split: str, name: str, array: ts.TensorStore, metadata: dict[str, Any]) -> None:
    """Raises CorruptDatasetError unless an array's own metadata (zarr.json) is what metadata.json implies."""
    expected_shape = _array_shape(name, int(metadata["counts"][split]), int(metadata["resolution"]))
    expected_dtype = _array_dtype(name, metadata["dtype"])
    stored = array.spec().to_json().get("metadata", {})
    codecs = [c.get("name") for c in stored.get("codecs", [])]
    endian = next(
        (c.get("configuration", {}).get("endian") for c in stored.get("codecs", []) if c["name"] == "bytes"), None
    )
    chunk_shape = list(array.chunk_layout.read_chunk.shape or ())
    found = (tuple(array.shape), array.dtype.name, codecs, endian, chunk_shape)
    expected = (expected_shape, expected_dtype, codecs, "little", [int(metadata["chunk"]), *expected_shape[1:]])
    if found != expected or codecs not in (["bytes", "zstd", "crc32c"], ["bytes", "zstd"]):
        raise CorruptDatasetError(
            f"array {name!r} of split {split!r} in dataset {path} has shape, dtype, codecs or chunks {found} but its "
            f"metadata.json implies {expected}: its zarr.json is damaged. Regenerate the dataset (delete {path} and "
            "re-run the command that wrote it)."
        )
