"""Import datasets stored as HDF5 files in the paper's layout into the fno-jax dataset format.

File layout (one file per PDE, N samples, n x n grid, arrays indexed [..., y, x]):

    fields  [N, 2, n, n]   channel 0 = source f, channel 1 = solution u
    tensor  [N, k]         per-sample coefficients, already in the units the PDE uses:
        poisson              k = 3: K11, K22, K12      (the full diffusion tensor: the 0.01 scale
                                                         is included in the stored numbers)
        advection_diffusion  k = 5: K11, K22, K12, v1, v2  (K and v already scaled)
        helmholtz            k = 2: D, omega            (D = 0.01 in the paper's data)

They become the batch dict of the fno-jax format: diffusion = [[K11, K12], [K12, K22]]
(Helmholtz: D * identity), velocity = (v1, v2) or zeros, omega or zeros, pde code. The files do not
record the source's volume fraction, so `volume_fraction` is stored as NaN; `nested_subset` then
uses a plain seeded nested order.

Command line:

    python -m fno_jax.data.hdf5_import FILE OUT_DIR [--pde poisson] [--split 0.8 0.1 0.1] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fno_jax.data.store import SPLITS, StoredDataset, write_dataset
from solvers.families import FAMILIES

# The file's `tensor` holds a family's coefficients in the order of its own channel layout.
_PDE_FROM_K = {family.num_coefficients: name for name, family in FAMILIES.items()}


def split_counts(total: int, splits: Mapping[str, float] | Sequence[float]) -> dict[str, int]:
    """Samples per split from counts (ints) or fractions (floats) of `total`.

    A sequence is read in the order (train, val, test). Fractions are floored; when they sum to 1,
    the samples the flooring leaves over go to train.
    """
    if not isinstance(splits, Mapping):
        if len(splits) > len(SPLITS):
            raise ValueError(f"splits takes at most {len(SPLITS)} values {SPLITS}, got {splits}")
        splits = dict(zip(SPLITS, splits))
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"splits has unknown names {sorted(unknown)}; use {SPLITS}")
    values = [splits.get(s, 0) for s in SPLITS]
    if any(v < 0 for v in values):
        raise ValueError(f"splits must be non-negative, got {dict(splits)}")
    if all(isinstance(v, int | np.integer) for v in values):
        counts = [int(v) for v in values]
    else:
        if sum(values) > 1 + 1e-9:
            raise ValueError(f"split fractions must sum to at most 1, got {dict(splits)}")
        counts = [int(np.floor(v * total + 1e-9)) for v in values]
        if abs(sum(values) - 1) < 1e-9:
            counts[0] += total - sum(counts)
    if sum(counts) > total or sum(counts) == 0:
        raise ValueError(
            f"splits {dict(splits)} ask for {sum(counts)} samples but the file has {total}; "
            "give counts that add up to at most the file's size"
        )
    return dict(zip(SPLITS, counts))


def _coefficient_arrays(pde: str, tensor: np.ndarray) -> dict[str, np.ndarray]:
    count = tensor.shape[0]
    diffusion = np.zeros((count, 2, 2), tensor.dtype)
    velocity = np.zeros((count, 2), tensor.dtype)
    omega = np.zeros((count,), tensor.dtype)
    if pde == "helmholtz":
        diffusion[:, 0, 0] = diffusion[:, 1, 1] = tensor[:, 0]
        omega[:] = tensor[:, 1]
    else:
        diffusion[:, 0, 0] = tensor[:, 0]
        diffusion[:, 1, 1] = tensor[:, 1]
        diffusion[:, 0, 1] = diffusion[:, 1, 0] = tensor[:, 2]
        if pde == "advection_diffusion":
            velocity[:] = tensor[:, 3:5]
    return {"diffusion": diffusion, "velocity": velocity, "omega": omega}


def import_hdf5(
    h5_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    pde: str | None = None,
    splits: Mapping[str, float] | Sequence[float] = (0.8, 0.1, 0.1),
    seed: int | None = 0,
    chunk: int = 64,
    dtype: str = "float32",
) -> StoredDataset:
    """Imports an HDF5 file (layout in the module docstring) as a dataset at `out_dir`.

    Args:
      h5_path: the HDF5 file with datasets `fields` [N, 2, n, n] and `tensor` [N, k].
      out_dir: the dataset directory to write (resumable like every dataset write).
      pde: "poisson", "advection_diffusion" or "helmholtz"; None infers it from k (3, 5, 2).
      splits: counts (ints) or fractions (floats) for (train, val, test), or a dict by name.
      seed: samples are assigned to splits in a random order drawn with this seed; None keeps the
        file's order (train first, then val, then test).
      chunk, dtype: as in `DatasetWriter`.

    Returns:
      The written dataset, opened. Its task spec is {"name": pde, "imported_from": file name}.
    """
    import h5py

    h5_path = os.fspath(h5_path)
    if not os.path.isfile(h5_path):
        raise FileNotFoundError(f"no HDF5 file at {h5_path}")
    with h5py.File(h5_path, "r") as f:
        for name in ("fields", "tensor"):
            if name not in f:
                raise ValueError(
                    f"{h5_path} has no dataset {name!r} (found {sorted(f.keys())}); expected "
                    "'fields' [N, 2, n, n] and 'tensor' [N, k]"
                )
        fields_shape, tensor_shape = f["fields"].shape, f["tensor"].shape
    if len(fields_shape) != 4 or fields_shape[1] != 2 or fields_shape[2] != fields_shape[3]:
        raise ValueError(
            f"{h5_path}: 'fields' has shape {fields_shape}, expected [N, 2, n, n] (channel 0 source, 1 solution)"
        )
    if len(tensor_shape) != 2 or tensor_shape[0] != fields_shape[0]:
        raise ValueError(
            f"{h5_path}: 'tensor' has shape {tensor_shape}, expected [N, k] with N = {fields_shape[0]} as in 'fields'"
        )
    total, resolution, k = fields_shape[0], fields_shape[2], tensor_shape[1]
    if pde is None:
        if k not in _PDE_FROM_K:
            raise ValueError(
                f"{h5_path}: cannot infer the PDE from {k} coefficients per sample (3 = poisson, "
                "5 = advection_diffusion, 2 = helmholtz); pass pde=..."
            )
        pde = _PDE_FROM_K[k]
    if pde not in FAMILIES:
        raise ValueError(f"pde must be one of {sorted(FAMILIES)}, got {pde!r}")
    if k != FAMILIES[pde].num_coefficients:
        raise ValueError(
            f"{h5_path}: 'tensor' holds {k} coefficients per sample but {pde} needs "
            f"{FAMILIES[pde].num_coefficients}; check --pde"
        )
    counts = split_counts(total, splits)
    order = np.arange(total) if seed is None else np.random.default_rng(seed).permutation(total)
    offsets = {"train": 0, "val": counts["train"], "test": counts["train"] + counts["val"]}

    def make_batch(split: str, start: int, count: int) -> dict[str, Any]:
        rows = order[offsets[split] + start : offsets[split] + start + count]
        # h5py reads fancy selections in increasing order only.
        sorted_rows, inverse = np.unique(rows, return_inverse=True)
        with h5py.File(h5_path, "r") as f:
            fields = f["fields"][sorted_rows][inverse]
            tensor = f["tensor"][sorted_rows][inverse]
        return {
            "source": fields[:, 0],
            "solution": fields[:, 1],
            **_coefficient_arrays(pde, tensor),
            "pde": np.full((count,), FAMILIES[pde].pde_id, np.int32),
            "volume_fraction": np.full((count,), np.nan),
        }

    return write_dataset(
        out_dir,
        make_batch,
        spec={"name": pde, "imported_from": os.path.basename(h5_path)},
        resolution=resolution,
        counts=counts,
        seed=-1 if seed is None else seed,
        chunk=chunk,
        dtype=dtype,
        extra={"source_file": os.path.abspath(h5_path), "split_seed": seed},
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fno_jax.data.hdf5_import",
        description="Import an HDF5 file (fields [N,2,n,n], tensor [N,k]) as an fno-jax dataset.",
    )
    parser.add_argument("file", help="the HDF5 file")
    parser.add_argument("out_dir", help="the dataset directory to write")
    parser.add_argument("--pde", choices=sorted(FAMILIES), default=None)
    parser.add_argument(
        "--split",
        nargs=3,
        type=float,
        default=(0.8, 0.1, 0.1),
        metavar=("TRAIN", "VAL", "TEST"),
        help="fractions of the file for train, val, test",
    )
    parser.add_argument("--seed", type=int, default=0, help="split assignment seed; -1 = file order")
    parser.add_argument("--chunk", type=int, default=64)
    args = parser.parse_args(argv)
    dataset = import_hdf5(
        args.file,
        args.out_dir,
        pde=args.pde,
        splits=tuple(args.split),
        seed=None if args.seed < 0 else args.seed,
        chunk=args.chunk,
    )
    counts = {s: dataset.num(s) for s in SPLITS}
    print(f"wrote {dataset.path}: {dataset.task['name']} at {dataset.resolution}, {counts}")


if __name__ == "__main__":
    main()
