"""Datasets: the run's splits and statistics, training-batch feeds, stored (tensorstore zarr v3) datasets, the
generate job, HDF5 import, nested subsets, prefetching."""

from fno_jax.data.build import generate_dataset, validate_generate_config
from fno_jax.data.darcy_import import import_darcy
from fno_jax.data.hdf5_import import import_hdf5
from fno_jax.data.loader import Feed, loader_of, make_feed
from fno_jax.data.order import batch_indices, epoch_order
from fno_jax.data.prefetch import Prefetcher
from fno_jax.data.stats import input_stats
from fno_jax.data.store import (
    ARRAYS,
    SPLITS,
    CorruptDatasetError,
    DatasetFormatError,
    DatasetNotFoundError,
    DatasetWriteError,
    DatasetWriter,
    IncompatibleDatasetError,
    IncompleteDatasetError,
    StoredDataset,
    open_dataset,
    write_dataset,
)
from fno_jax.data.subsets import nested_order, nested_subset
from fno_jax.data.training_set import Splits, TrainingSet, load_splits, load_splits_for_runs, open_checked_dataset

__all__ = [
    "ARRAYS",
    "SPLITS",
    "CorruptDatasetError",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "DatasetWriteError",
    "DatasetWriter",
    "Feed",
    "IncompatibleDatasetError",
    "IncompleteDatasetError",
    "Prefetcher",
    "Splits",
    "StoredDataset",
    "TrainingSet",
    "batch_indices",
    "epoch_order",
    "generate_dataset",
    "import_darcy",
    "import_hdf5",
    "input_stats",
    "load_splits",
    "load_splits_for_runs",
    "loader_of",
    "make_feed",
    "nested_order",
    "nested_subset",
    "open_checked_dataset",
    "open_dataset",
    "validate_generate_config",
    "write_dataset",
]
