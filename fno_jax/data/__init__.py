"""Datasets: stored (tensorstore zarr v3) datasets, HDF5 import, nested subsets, prefetching."""

from fno_jax.data.hdf5_import import import_hdf5
from fno_jax.data.prefetch import Prefetcher, prefetch
from fno_jax.data.store import (
    ARRAYS,
    SPLITS,
    CorruptDatasetError,
    DatasetFormatError,
    DatasetNotFoundError,
    DatasetWriter,
    IncompatibleDatasetError,
    IncompleteDatasetError,
    StoredDataset,
    open_dataset,
    write_dataset,
)
from fno_jax.data.subsets import nested_order, nested_subset

__all__ = [
    "ARRAYS",
    "SPLITS",
    "CorruptDatasetError",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "DatasetWriter",
    "IncompatibleDatasetError",
    "IncompleteDatasetError",
    "Prefetcher",
    "StoredDataset",
    "import_hdf5",
    "nested_order",
    "nested_subset",
    "open_dataset",
    "prefetch",
    "write_dataset",
]
