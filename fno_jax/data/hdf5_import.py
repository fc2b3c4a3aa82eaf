"""Import datasets stored as HDF5 files in the paper's layout into the fno-jax dataset format.

The paper's generators (`utils/gen_data_{poisson,advdiff,helmholtz}.py` in the paper's released code,
ShashankSubramanian/neuraloperators-TL-scaling) write one file per split, e.g. `_train_k1_5_32k.h5`,
`_val_k1_5_4k.h5`, `_test_k1_5_4k.h5` (N samples, n x n grid, arrays indexed [..., y, x]):

    fields  [N, 2, n, n]   channel 0 = source f, channel 1 = solution u
    tensor  [N, k]         per-sample coefficients of the family, in the order of its own channel layout
                           (`solvers.families`), already in the units the PDE uses:
        poisson              k = 3: K11, K22, K12      (the full diffusion tensor: the 0.01 scale
                                                         is included in the stored numbers)
        advection_diffusion  k = 5: K11, K22, K12, v1, v2  (K and v already scaled)
        helmholtz            k = 2: D, omega            (D = 0.01 in the paper's data)

(advection-diffusion files also hold `other`, the advection-to-diffusion ratios; it is not needed and not read).
The family is named (`pde`, `--pde`: required, since two families may carry the same number of coefficients) and
the file's k is checked against it. Each column becomes the entries of its channel in the batch dict
(`solvers.schema.CHANNELS`): diffusion = [[K11, K12], [K12, K22]] (Helmholtz: D * identity), velocity = (v1, v2),
omega; coefficients the family lacks are zeros.

Volume fraction. The files do not store it, but the generators write every split in blocks of equal volume
fraction: for vf in (0.2, 0.4, 0.6, 0.8), N // 4 samples (the last block takes the remainder, `num_ex`). The
import recovers each sample's vf from its row in its file (`block_volume_fractions`), so `nested_subset` draws the
same share of every vf, as the paper's strided subsampling of these block-ordered files does. Files written in
another order: pass `volume_fractions=None` (vf stored as NaN; nested subsets then use a plain seeded order).

Two ways in:
  * the paper's three files, one per split (train, val, test), kept in file order;
  * one file, split into (train, val, test) by counts or fractions (80/10/10 by default) in a seeded random order.

Command line:

    python -m fno_jax.data.hdf5_import --pde poisson _train_k1_5_32k.h5 _val_k1_5_4k.h5 _test_k1_5_4k.h5 OUT_DIR
    python -m fno_jax.data.hdf5_import --pde poisson FILE OUT_DIR [--split 0.8 0.1 0.1] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fno_jax.data.store import SPLITS, StoredDataset, write_dataset
from solvers.families import FAMILIES
from solvers.schema import CHANNELS, COEFFICIENTS

__all__ = ["PAPER_VOLUME_FRACTIONS", "block_volume_fractions", "import_hdf5", "split_counts", "split_of_file"]

# utils/gen_data_*.py: `vfs = [0.2, 0.4, 0.6, 0.8]`, one block per value, in this order, in every split's file.
PAPER_VOLUME_FRACTIONS: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)

PathLike = str | os.PathLike[str]


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


def block_volume_fractions(count: int, fractions: Sequence[float] = PAPER_VOLUME_FRACTIONS) -> np.ndarray:
    """[count] the vf of each row of a generator's file: len(fractions) blocks of count // len(fractions) rows in
    order, the last block taking the remainder (`num_ex` in utils/gen_data_*.py)."""
    k = len(fractions)
    if k == 0 or count < k:
        raise ValueError(f"a file of {count} samples cannot hold {k} volume-fraction blocks {tuple(fractions)}")
    block = np.minimum(np.arange(count) // (count // k), k - 1)
    return np.asarray(fractions, np.float64)[block]


def split_of_file(path: PathLike) -> str:
    """'train', 'val' or 'test': the split a paper's file is for, from its name (`_train_k1_5_32k.h5`)."""
    name = os.path.basename(os.fspath(path))
    found = [s for s in SPLITS if re.search(rf"(^|[^a-z]){s}([^a-z]|$)", name.lower())]
    if len(found) != 1:
        raise ValueError(
            f"cannot tell the split of {name!r} from its name: it must contain exactly one of {SPLITS} (the "
            "paper's files are _train_..._32k.h5, _val_..._4k.h5, _test_..._4k.h5); pass files={'train': ...} instead"
        )
    return found[0]


@dataclasses.dataclass(frozen=True)
class _Source:
    """Where each split's samples come from: a file and its rows (in stored order), with their volume fractions."""

    files: dict[str, str]
    rows: dict[str, np.ndarray]
    volume_fraction: dict[str, np.ndarray]


def _inspect(path: str) -> tuple[int, int, int]:
    """(N, n, k) of a file, checked against the layout in the module docstring."""
    import h5py

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no HDF5 file at {path}")
    with h5py.File(path, "r") as f:
        for name in ("fields", "tensor"):
            if name not in f:
                raise ValueError(
                    f"{path} has no dataset {name!r} (found {sorted(f.keys())}); expected "
                    "'fields' [N, 2, n, n] and 'tensor' [N, k]"
                )
        fields_shape, tensor_shape = f["fields"].shape, f["tensor"].shape
    if len(fields_shape) != 4 or fields_shape[1] != 2 or fields_shape[2] != fields_shape[3]:
        raise ValueError(
            f"{path}: 'fields' has shape {fields_shape}, expected [N, 2, n, n] (channel 0 source, 1 solution)"
        )
    if len(tensor_shape) != 2 or tensor_shape[0] != fields_shape[0]:
        raise ValueError(
            f"{path}: 'tensor' has shape {tensor_shape}, expected [N, k] with N = {fields_shape[0]} as in 'fields'"
        )
    return fields_shape[0], fields_shape[2], tensor_shape[1]


def _check_pde(pde: str, k: int, path: str) -> str:
    if pde not in FAMILIES:
        raise ValueError(f"pde must name the file's PDE family, one of {sorted(FAMILIES)}; got {pde!r}")
    if k != FAMILIES[pde].num_coefficients:
        raise ValueError(
            f"{path}: 'tensor' holds {k} coefficients per sample but {pde} needs "
            f"{FAMILIES[pde].num_coefficients}; check --pde"
        )
    return pde


def _vf(count: int, volume_fractions: Sequence[float] | None) -> np.ndarray:
    return np.full(count, np.nan) if volume_fractions is None else block_volume_fractions(count, volume_fractions)


def _one_file(path: str, total: int, splits, seed: int | None, volume_fractions) -> _Source:
    """One file split into (train, val, test): a seeded permutation (or file order), cut by `split_counts`."""
    counts = split_counts(total, splits)
    order = np.arange(total) if seed is None else np.random.default_rng(seed).permutation(total)
    vf = _vf(total, volume_fractions)
    starts = np.cumsum([0, *(counts[s] for s in SPLITS)])
    rows = {s: order[starts[i] : starts[i + 1]] for i, s in enumerate(SPLITS)}
    return _Source({s: path for s in SPLITS}, rows, {s: vf[r] for s, r in rows.items()})


def _three_files(files: Mapping[str, str], counts: Mapping[str, int], volume_fractions) -> _Source:
    """The paper's files, one per split, each in file order."""
    rows = {s: np.arange(counts[s]) for s in SPLITS}
    return _Source(dict(files), rows, {s: _vf(counts[s], volume_fractions) for s in SPLITS})


def _reader(source: _Source, pde: str):
    """make_batch(split, start, count) for `write_dataset`: rows [start, start + count) of the split."""
    import h5py

    def make_batch(split: str, start: int, count: int) -> dict[str, Any]:
        rows = source.rows[split][start : start + count]
        # h5py reads fancy selections in increasing order only.
        sorted_rows, inverse = np.unique(rows, return_inverse=True)
        with h5py.File(source.files[split], "r") as f:
            fields = f["fields"][sorted_rows][inverse]
            tensor = f["tensor"][sorted_rows][inverse]
        return {
            "source": fields[:, 0],
            "solution": fields[:, 1],
            **_coefficient_arrays(pde, tensor),
            "pde": np.full((count,), FAMILIES[pde].pde_id, np.int32),
            "volume_fraction": source.volume_fraction[split][start : start + count],
        }

    return make_batch


def _coefficient_arrays(pde: str, tensor: np.ndarray) -> dict[str, np.ndarray]:
    """The batch dict's coefficients from the file's columns: column j fills the entries of the family's channel j."""
    count = tensor.shape[0]
    out = {c.name: np.zeros((count, *c.shape), tensor.dtype) for c in COEFFICIENTS.values()}
    for j, name in enumerate(FAMILIES[pde].coefficients):
        channel = CHANNELS[name]
        for place in channel.places:
            out[channel.coefficient][(slice(None), *place)] = tensor[:, j]
    return out


def _split_files(files: PathLike | Mapping[str, PathLike] | Sequence[PathLike]) -> dict[str, str] | str:
    """One path (to be split), or {split: path} for one file per split (a sequence: splits from the names)."""
    if isinstance(files, str | os.PathLike):
        return os.fspath(files)
    if not isinstance(files, Mapping):
        paths = [os.fspath(p) for p in files]
        if len(paths) == 1:
            return paths[0]
        files = {split_of_file(p): p for p in paths}
        if len(files) != len(paths):
            raise ValueError(f"two files are for the same split: {paths}; give one file per split (train, val, test)")
    if set(files) != set(SPLITS):
        raise ValueError(f"one file per split is needed, for exactly {SPLITS}; got files for {sorted(files)}")
    return {s: os.fspath(files[s]) for s in SPLITS}


def import_hdf5(
    files: PathLike | Mapping[str, PathLike] | Sequence[PathLike],
    out_dir: PathLike,
    *,
    pde: str,
    splits: Mapping[str, float] | Sequence[float] = (0.8, 0.1, 0.1),
    seed: int | None = 0,
    volume_fractions: Sequence[float] | None = PAPER_VOLUME_FRACTIONS,
    chunk: int = 64,
    dtype: str = "float32",
) -> StoredDataset:
    """Imports HDF5 files (layout in the module docstring) as a dataset at `out_dir`.

    Args:
      files: the paper's three files, one per split: {"train": ..., "val": ..., "test": ...}, or a sequence of the
        three paths (each name says its split); or one file (a path), split by `splits`.
      out_dir: the dataset directory to write (resumable like every dataset write).
      pde: the files' PDE family (a name of `solvers.families.FAMILIES`); their k is checked against it.
      splits: one file only: counts (ints) or fractions (floats) for (train, val, test), or a dict by name.
      seed: one file only: samples are assigned to splits in a random order drawn with this seed; None keeps the
        file's order (train first, then val, then test).
      volume_fractions: the vf of each file's blocks, in order (the paper's generators: 0.2, 0.4, 0.6, 0.8);
        None stores NaN (unknown).
      chunk, dtype: as in `DatasetWriter`.

    Returns:
      The written dataset, opened. Its task spec is {"name": pde, "imported_from": the file name(s)}.
    """
    resolved = _split_files(files)
    paths = [resolved] if isinstance(resolved, str) else [resolved[s] for s in SPLITS]
    shapes = [_inspect(p) for p in paths]
    if len({shape[1:] for shape in shapes}) != 1:
        raise ValueError(f"the files differ in resolution or coefficients (N, n, k): {dict(zip(paths, shapes))}")
    resolution, k = shapes[0][1:]
    pde = _check_pde(pde, k, paths[0])
    if isinstance(resolved, str):
        source = _one_file(resolved, shapes[0][0], splits, seed, volume_fractions)
        identity = {"split_seed": seed}
    else:
        source = _three_files(resolved, {s: shape[0] for s, shape in zip(SPLITS, shapes)}, volume_fractions)
        identity, seed = {"split_seed": None}, None
    names = [os.path.basename(p) for p in paths]
    return write_dataset(
        out_dir,
        _reader(source, pde),
        spec={"name": pde, "imported_from": names[0] if len(names) == 1 else names},
        resolution=resolution,
        counts={s: len(source.rows[s]) for s in SPLITS},
        seed=-1 if seed is None else seed,
        extra={
            "source_files": [os.path.abspath(p) for p in paths],
            "volume_fractions": None if volume_fractions is None else list(volume_fractions),
            **identity,
        },
        chunk=chunk,
        dtype=dtype,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fno_jax.data.hdf5_import",
        description="Import HDF5 files (fields [N,2,n,n], tensor [N,k]) as an fno-jax dataset: the paper's three "
        "files (one per split) or one file split by fractions.",
    )
    parser.add_argument("files", nargs="+", help="the HDF5 file(s): one, or the train, val and test files")
    parser.add_argument("out_dir", help="the dataset directory to write")
    parser.add_argument("--pde", choices=sorted(FAMILIES), required=True, help="the files' PDE family")
    parser.add_argument(
        "--split",
        nargs=3,
        type=float,
        default=(0.8, 0.1, 0.1),
        metavar=("TRAIN", "VAL", "TEST"),
        help="one file: fractions of it for train, val, test",
    )
    parser.add_argument("--seed", type=int, default=0, help="one file: split assignment seed; -1 = file order")
    parser.add_argument(
        "--no_volume_fraction",
        action="store_true",
        help="the files are not in the generators' blocks of volume fraction 0.2, 0.4, 0.6, 0.8: store vf as NaN",
    )
    parser.add_argument("--chunk", type=int, default=64)
    args = parser.parse_args(argv)
    if len(args.files) not in (1, 3):
        parser.error(f"give one file, or the three files of train, val and test; got {len(args.files)}")
    dataset = import_hdf5(
        args.files,
        args.out_dir,
        pde=args.pde,
        splits=tuple(args.split),
        seed=None if args.seed < 0 else args.seed,
        volume_fractions=None if args.no_volume_fraction else PAPER_VOLUME_FRACTIONS,
        chunk=args.chunk,
    )
    counts = {s: dataset.num(s) for s in SPLITS}
    print(f"wrote {dataset.path}: {dataset.task['name']} at {dataset.resolution}, {counts}")


if __name__ == "__main__":
    main()
