"""Datasets: stored (tensorstore zarr v3) datasets, the generate job, HDF5 import, nested subsets, prefetching."""

from fno_jax.data.build import generate_dataset, validate_generate_config
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
    "generate_dataset",
    "import_hdf5",
    "nested_order",
    "nested_subset",
    "open_dataset",
    "prefetch",
    "validate_generate_config",
    "write_dataset",
]
