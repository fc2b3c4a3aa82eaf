"""Import Darcy-flow datasets in the usual layouts (a and u fields) into the fno-jax dataset format.

The FNO benchmark's files and PDEBench's store the permeability a(x) and the solution u(x) of
-div(a grad u) = f, u = 0 on the boundary of the unit square, as two [N, s, s] arrays:

    Li et al. (ICLR 2021)   piececonst_r421_N1024_smooth1.mat   coeff, sol   [N, 421, 421], the nodes x_i = i / 420
                            including the boundary; MATLAB v5 (scipy.io) or v7.3 (HDF5, arrays stored transposed)
    PDEBench                2D_DarcyFlow_beta1.0_Train.hdf5     nu [N, 128, 128], tensor [N, 1, 128, 128]
    plain                   any .h5 / .hdf5 / .mat with          a, u   [N, s, s]

The keys are found in that order (or named with `a_key` / `u_key`). Arrays are indexed [..., y, x] as stored.
fno-jax's Dirichlet grid (`solvers.grid`) holds the interior nodes x_i = (i + 1) h, h = L / (n + 1), so a grid that
includes the boundary loses its outer ring (`boundary="strip"`; "auto" strips when u is zero on the whole ring, as
on Li et al.'s node grid) and an interior grid is kept (`boundary="keep"`: PDEBench's cell centres, which then stand
for those nodes). `stride` subsamples the nodes first (Li et al. train at 421 -> 85 with stride 5: 83 interior nodes).

The source f is not stored in these files; it is constant (`source`: 1 for both, PDEBench's beta otherwise).
The volume fraction of a sample is the share of its nodes where a is at least the geometric mean of its smallest
and largest value (for a two-valued field, the share at the high value), so nested subsets stratify by it as for
generated Darcy data. Splits: one file cut by counts or fractions in a seeded order (`fno_jax.data.hdf5_import`'s
rules), or one file per split.

    python -m fno_jax.data.darcy_import piececonst_r421_N1024_smooth1.mat data/darcy85 --stride 5
    python -m fno_jax.data.darcy_import 2D_DarcyFlow_beta1.0_Train.hdf5 data/pdebench_darcy --boundary keep
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fno_jax.data.hdf5_import import split_counts
from fno_jax.data.store import SPLITS, StoredDataset, write_dataset
from fno_jax.runtime.cli_errors import UserError, exit_on_expected_errors
from solvers.families import FAMILIES

__all__ = ["KEY_PAIRS", "import_darcy"]

# (a, u) names, in the order they are looked for.
KEY_PAIRS: tuple[tuple[str, str], ...] = (("coeff", "sol"), ("nu", "tensor"), ("a", "u"), ("permeability", "solution"))
BOUNDARIES = ("auto", "strip", "keep")

PathLike = str | os.PathLike[str]


class DarcyImportError(UserError, ValueError):
    """A file that is not a Darcy dataset in a layout this module reads; the message says what was found."""


@dataclasses.dataclass
class _File:
    """One opened file: its (a, u) arrays as [N, s, s] views, read lazily where the format allows."""

    path: str
    a: Any
    u: Any
    transposed: bool  # MATLAB v7.3: stored [s, s, N] (reversed axes)
    handle: Any = None

    @property
    def count(self) -> int:
        return int(self.a.shape[-1] if self.transposed else self.a.shape[0])

    @property
    def size(self) -> int:
        return int(self.a.shape[0] if self.transposed else self.a.shape[-1])

    def rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(a, u) [len(rows), s, s] float64 in the order of `rows`."""
        order, inverse = np.unique(rows, return_inverse=True)  # h5py reads increasing selections only
        if self.transposed:
            a = np.transpose(self.a[..., order], (2, 1, 0))
            u = np.transpose(self.u[..., order], (2, 1, 0))
        else:
            a, u = self.a[order], self.u[order]
        a = np.asarray(a, np.float64)[inverse]
        u = np.asarray(u, np.float64)[inverse]
        return a, u.reshape(a.shape)


def _pick(names: Sequence[str], a_key: str | None, u_key: str | None, path: str) -> tuple[str, str]:
    if a_key or u_key:
        if not (a_key and u_key):
            raise DarcyImportError(f"{path}: name both a_key and u_key (got a_key={a_key!r}, u_key={u_key!r}).")
        missing = [k for k in (a_key, u_key) if k not in names]
        if missing:
            raise DarcyImportError(f"{path} has no {missing} (found {sorted(names)}).")
        return a_key, u_key
    for pair in KEY_PAIRS:
        if all(k in names for k in pair):
            return pair
    raise DarcyImportError(
        f"{path} holds {sorted(names)}, none of the Darcy layouts {[list(p) for p in KEY_PAIRS]} (a, u); name the "
        "arrays with --a_key and --u_key."
    )


def _open(path: str, a_key: str | None, u_key: str | None) -> _File:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no Darcy dataset file at {path}")
    import h5py

    if h5py.is_hdf5(path):  # .h5, .hdf5, and MATLAB v7.3 .mat files
        handle = h5py.File(path, "r")
        matlab = path.lower().endswith(".mat")
        a_name, u_name = _pick(list(handle.keys()), a_key, u_key, path)
        file = _File(path, handle[a_name], handle[u_name], transposed=matlab, handle=handle)
    else:
        try:
            from scipy.io import loadmat
        except ImportError:
            raise DarcyImportError(
                f"{path} is a MATLAB v5 file; reading it needs scipy (pip install scipy), or save it as v7.3 (HDF5)."
            ) from None
        try:
            data = loadmat(path)
        except ValueError as err:
            raise DarcyImportError(f"{path} is neither HDF5 nor a MATLAB file scipy can read: {err}") from None
        names = [k for k in data if not k.startswith("__")]
        a_name, u_name = _pick(names, a_key, u_key, path)
        file = _File(path, data[a_name], data[u_name], transposed=False)
    _check_shapes(file)
    return file


def _check_shapes(file: _File) -> None:
    a, u = file.a, file.u
    shape = tuple(a.shape)
    if len(shape) != 3 or (shape[1] != shape[2] if not file.transposed else shape[0] != shape[1]):
        raise DarcyImportError(f"{file.path}: a has shape {shape}; expected [N, s, s] (a square grid per sample).")
    if int(np.prod(u.shape)) != int(np.prod(shape)):
        raise DarcyImportError(
            f"{file.path}: u has shape {tuple(u.shape)} but a has {shape}; expected one solution [s, s] per "
            "permeability (PDEBench's [N, 1, s, s] is read as [N, s, s])."
        )


def _strip(boundary: str, u: np.ndarray, path: str) -> bool:
    """Whether to drop the outer ring of nodes."""
    if boundary == "strip":
        return True
    if boundary == "keep":
        return False
    ring = np.concatenate([u[:, 0, :], u[:, -1, :], u[:, :, 0], u[:, :, -1]], axis=1)
    scale = float(np.max(np.abs(u))) or 1.0
    return bool(np.max(np.abs(ring)) <= 1e-10 * scale)


def _volume_fraction(a: np.ndarray) -> np.ndarray:
    low = a.min(axis=(1, 2), keepdims=True)
    high = a.max(axis=(1, 2), keepdims=True)
    return np.mean(a >= np.sqrt(low * high), axis=(1, 2))


def _open_splits(files, splits, seed, a_key, u_key):
    """({split: opened file}, {split: its rows}, the split seed or None): one file per split in file order, or one
    file split by `splits` in an order drawn with `seed` (None: file order)."""
    if isinstance(files, Mapping):
        if set(files) != set(SPLITS):
            raise ValueError(f"one file per split is needed, for exactly {SPLITS}; got files for {sorted(files)}")
        opened = {s: _open(os.fspath(files[s]), a_key, u_key) for s in SPLITS}
        return opened, {s: np.arange(opened[s].count) for s in SPLITS}, None
    one = _open(os.fspath(files), a_key, u_key)
    counts = split_counts(one.count, splits)
    order = np.arange(one.count) if seed is None else np.random.default_rng(seed).permutation(one.count)
    starts = np.cumsum([0, *(counts[s] for s in SPLITS)])
    rows = {s: order[starts[i] : starts[i + 1]] for i, s in enumerate(SPLITS)}
    return {s: one for s in SPLITS}, rows, seed


def _check_options(boundary: str, stride: int) -> None:
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}.")
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}.")


def _interior_grid(first, train_rows: np.ndarray, stride: int, boundary: str) -> tuple[bool, int]:
    """(strip the boundary nodes?, interior nodes per side), from the first training rows after `stride`."""
    _, probe_u = first.rows(train_rows[:8] if len(train_rows) else np.arange(min(8, first.count)))
    probe_u = probe_u[:, ::stride, ::stride]
    strip = _strip(boundary, probe_u, first.path)
    resolution = probe_u.shape[-1] - (2 if strip else 0)
    if resolution < 3:
        raise DarcyImportError(f"{first.path}: {resolution} interior nodes per side after stride {stride}; use less.")
    return strip, resolution


def _batch_reader(opened, rows, stride: int, cut: slice, source: float):
    """make_batch(split, start, count) of `write_dataset`: rows [start, start + count) of a split, strided, cut to
    the interior, checked (a finite and > 0, u finite), in the dataset's schema."""
    pde_id = FAMILIES["darcy"].pde_id

    def make_batch(split: str, start: int, count: int) -> dict[str, Any]:
        a, u = opened[split].rows(rows[split][start : start + count])
        a = a[:, ::stride, ::stride][:, cut, cut]
        u = u[:, ::stride, ::stride][:, cut, cut]
        if not (np.all(np.isfinite(a)) and np.all(a > 0) and np.all(np.isfinite(u))):
            raise DarcyImportError(f"{opened[split].path}: a must be finite and > 0 and u finite (split {split}).")
        return {
            "source": np.full_like(u, source),
            "solution": u,
            "diffusion": np.zeros((count, 2, 2)),
            "velocity": np.zeros((count, 2)),
            "omega": np.zeros((count,)),
            "permeability": a,
            "pde": np.full((count,), pde_id, np.int32),
            "volume_fraction": _volume_fraction(a),
        }

    return make_batch


def _close(opened) -> None:
    """Close each opened file once (one file may serve every split)."""
    for f in {id(f): f for f in opened.values()}.values():
        if f.handle is not None:
            f.handle.close()


def import_darcy(
    files: PathLike | Mapping[str, PathLike],
    out_dir: PathLike,
    *,
    splits: Mapping[str, float] | Sequence[float] = (0.8, 0.1, 0.1),
    seed: int | None = 0,
    stride: int = 1,
    boundary: str = "auto",
    source: float = 1.0,
    length: float = 1.0,
    a_key: str | None = None,
    u_key: str | None = None,
    chunk: int = 64,
    dtype: str = "float32",
) -> StoredDataset:
    """Imports a Darcy dataset (module docstring) as a dataset at `out_dir` for `config.task = "darcy"`.

    Args:
      files: one file (a path), split by `splits` in an order drawn with `seed` (None: file order); or
        {"train": ..., "val": ..., "test": ...}, one file per split, each in file order.
      stride: keep every stride-th node of the stored grid (before the boundary is stripped).
      boundary: "auto", "strip" (the grid includes the boundary nodes) or "keep" (it holds interior points only).
      source: the constant f of the files' equation.
      length: side L of the square.
      a_key, u_key: the arrays' names, when not one of KEY_PAIRS.
      chunk, dtype: as in `DatasetWriter`.

    Returns:
      The written dataset, opened; its task spec is {"name": "darcy", "bc": "dirichlet", "imported_from": names}.
    """
    _check_options(boundary, stride)
    opened, rows, split_seed = _open_splits(files, splits, seed, a_key, u_key)
    sizes = {f.size for f in opened.values()}
    if len(sizes) != 1:
        raise DarcyImportError(f"the split files differ in grid size: { {s: f.size for s, f in opened.items()} }")
    strip, resolution = _interior_grid(opened["train"], rows["train"], stride, boundary)
    make_batch = _batch_reader(opened, rows, stride, slice(1, -1) if strip else slice(None), source)
    names = sorted({os.path.basename(f.path) for f in opened.values()})
    try:
        return write_dataset(
            out_dir,
            make_batch,
            spec={"name": "darcy", "bc": "dirichlet", "imported_from": names[0] if len(names) == 1 else names},
            resolution=resolution,
            counts={s: len(rows[s]) for s in SPLITS},
            seed=-1 if split_seed is None else split_seed,
            length=float(length),
            extra={
                "source_files": sorted({os.path.abspath(f.path) for f in opened.values()}),
                "split_seed": split_seed,
                "stride": stride,
                "boundary_stripped": strip,
                "source": float(source),
            },
            chunk=chunk,
            dtype=dtype,
        )
    finally:
        _close(opened)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fno_jax.data.darcy_import",
        description="Import a Darcy-flow dataset (a and u fields: Li et al.'s .mat, PDEBench's .hdf5, or a/u arrays) "
        "as an fno-jax dataset for config.task='darcy'.",
    )
    parser.add_argument("files", nargs="+", help="one file, or the train, val and test files (in that order)")
    parser.add_argument("out_dir", help="the dataset directory to write")
    parser.add_argument("--split", nargs=3, type=float, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VAL", "TEST"))
    parser.add_argument("--seed", type=int, default=0, help="one file: split assignment seed; -1 = file order")
    parser.add_argument("--stride", type=int, default=1, help="keep every stride-th node (Li et al.: 5, 421 -> 85)")
    parser.add_argument("--boundary", choices=BOUNDARIES, default="auto")
    parser.add_argument("--source", type=float, default=1.0, help="the constant source f of the files")
    parser.add_argument("--a_key")
    parser.add_argument("--u_key")
    parser.add_argument("--chunk", type=int, default=64)
    args = parser.parse_args(argv)
    if len(args.files) not in (1, 3):
        parser.error(f"give one file, or the three files of train, val and test; got {len(args.files)}")
    files = args.files[0] if len(args.files) == 1 else dict(zip(SPLITS, args.files))
    with exit_on_expected_errors(parser.prog):
        dataset = import_darcy(
            files,
            args.out_dir,
            splits=tuple(args.split),
            seed=None if args.seed < 0 else args.seed,
            stride=args.stride,
            boundary=args.boundary,
            source=args.source,
            a_key=args.a_key,
            u_key=args.u_key,
            chunk=args.chunk,
        )
    counts = {s: dataset.num(s) for s in SPLITS}
    print(f"wrote {dataset.path}: darcy at {dataset.resolution} x {dataset.resolution} interior nodes, {counts}")


if __name__ == "__main__":
    main()
