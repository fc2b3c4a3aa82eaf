"""Import of HDF5 files (fields [N, 2, n, n], tensor [N, k]) into the stored dataset format: the paper's three files
as the three splits, or one file split 80/10/10; the volume fraction recovered from the generators' blocks."""

import h5py
import numpy as np
import pytest

from fno_jax.data import import_hdf5, nested_subset, open_dataset
from fno_jax.data.hdf5_import import block_volume_fractions, main, split_counts, split_of_file

N, RES = 20, 8


def write_h5(path, k, n=N, res=RES, fields_name="fields"):
    rng = np.random.default_rng([k, n])
    fields = rng.standard_normal((n, 2, res, res)).astype(np.float32)
    tensor = rng.uniform(0.001, 0.05, size=(n, k)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f[fields_name] = fields
        f["tensor"] = tensor
    return fields, tensor


def gather(ds):
    """All splits concatenated in (train, val, test) order."""
    parts = [ds.read(s, slice(None)) for s in ("train", "val", "test")]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def test_poisson_round_trip_in_file_order(tmp_path):
    fields, tensor = write_h5(tmp_path / "p.h5", k=3)
    ds = import_hdf5(tmp_path / "p.h5", tmp_path / "ds", pde="poisson", splits=(12, 4, 4), seed=None, chunk=8)
    assert ds.task["name"] == "poisson" and ds.resolution == RES
    assert [ds.num(s) for s in ("train", "val", "test")] == [12, 4, 4]
    got = gather(ds)
    np.testing.assert_array_equal(got["source"], fields[:, 0])
    np.testing.assert_array_equal(got["solution"], fields[:, 1])
    k11, k22, k12 = tensor.T
    np.testing.assert_array_equal(got["diffusion"][:, 0, 0], k11)
    np.testing.assert_array_equal(got["diffusion"][:, 1, 1], k22)
    np.testing.assert_array_equal(got["diffusion"][:, 0, 1], k12)
    np.testing.assert_array_equal(got["diffusion"][:, 1, 0], k12)
    assert not got["velocity"].any() and not got["omega"].any()
    np.testing.assert_array_equal(got["pde"], np.zeros(N, np.int32))
    # The file's rows are in the generator's blocks of 5: vf 0.2, 0.4, 0.6, 0.8.
    np.testing.assert_array_equal(got["volume_fraction"], np.repeat(np.float32([0.2, 0.4, 0.6, 0.8]), 5))


def test_volume_fraction_can_be_left_unknown(tmp_path):
    write_h5(tmp_path / "p.h5", k=3)
    main([str(tmp_path / "p.h5"), str(tmp_path / "ds"), "--pde", "poisson", "--no_volume_fraction"])
    vf = open_dataset(tmp_path / "ds").read("train", slice(None))["volume_fraction"]
    assert np.isnan(vf).all()
    # With vf unknown the nested subsets are still well defined.
    assert set(nested_subset(vf, 4, 0)) <= set(nested_subset(vf, 8, 0))


def test_advection_diffusion_shuffled_split_is_a_permutation(tmp_path):
    fields, tensor = write_h5(tmp_path / "a.h5", k=5)
    ds = import_hdf5(
        tmp_path / "a.h5", tmp_path / "ds", pde="advection_diffusion", splits=(0.5, 0.25, 0.25), seed=3, chunk=4
    )
    got = gather(ds)
    order = np.random.default_rng(3).permutation(N)
    np.testing.assert_array_equal(got["source"], fields[order, 0])
    np.testing.assert_array_equal(got["solution"], fields[order, 1])
    np.testing.assert_array_equal(got["velocity"], tensor[order, 3:5])
    np.testing.assert_array_equal(got["diffusion"][:, 0, 1], tensor[order, 2])
    np.testing.assert_array_equal(got["pde"], np.ones(N, np.int32))
    # Each sample keeps the vf of its row in the file.
    np.testing.assert_array_equal(got["volume_fraction"], np.repeat(np.float32([0.2, 0.4, 0.6, 0.8]), 5)[order])


def test_helmholtz_via_command_line(tmp_path, capsys):
    fields, tensor = write_h5(tmp_path / "h.h5", k=2)
    main([str(tmp_path / "h.h5"), str(tmp_path / "ds"), "--pde", "helmholtz", "--seed", "-1", "--split", "1", "0", "0"])
    assert "helmholtz" in capsys.readouterr().out
    from fno_jax.data import open_dataset

    train = open_dataset(tmp_path / "ds").read("train", slice(None))
    np.testing.assert_array_equal(train["diffusion"][:, 0, 0], tensor[:, 0])
    np.testing.assert_array_equal(train["diffusion"][:, 1, 1], tensor[:, 0])
    np.testing.assert_array_equal(train["diffusion"][:, 0, 1], np.zeros(N, np.float32))
    np.testing.assert_array_equal(train["omega"], tensor[:, 1])
    np.testing.assert_array_equal(train["pde"], np.full(N, 2, np.int32))


def test_missing_dataset_in_file(tmp_path):
    write_h5(tmp_path / "x.h5", k=3, fields_name="data")
    with pytest.raises(ValueError, match="no dataset 'fields'"):
        import_hdf5(tmp_path / "x.h5", tmp_path / "ds", pde="poisson")


def test_wrong_shapes_and_pde(tmp_path):
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["fields"] = np.zeros((4, 3, 8, 8), np.float32)
        f["tensor"] = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"expected \[N, 2, n, n\]"):
        import_hdf5(tmp_path / "bad.h5", tmp_path / "ds", pde="poisson")
    write_h5(tmp_path / "p.h5", k=3)
    with pytest.raises(ValueError, match="helmholtz needs 2"):
        import_hdf5(tmp_path / "p.h5", tmp_path / "ds", pde="helmholtz")
    write_h5(tmp_path / "k4.h5", k=4)
    with pytest.raises(ValueError, match="holds 4 coefficients per sample but poisson needs 3"):
        import_hdf5(tmp_path / "k4.h5", tmp_path / "ds", pde="poisson")
    with pytest.raises(ValueError, match="must name the file's PDE family"):
        import_hdf5(tmp_path / "p.h5", tmp_path / "ds", pde="wave")
    # The family is required: two families may carry the same number of coefficients.
    with pytest.raises(SystemExit):
        main([str(tmp_path / "p.h5"), str(tmp_path / "ds")])
    with pytest.raises(FileNotFoundError, match="no HDF5 file"):
        import_hdf5(tmp_path / "missing.h5", tmp_path / "ds", pde="poisson")


def test_split_counts():
    assert split_counts(10, (0.8, 0.1, 0.1)) == {"train": 8, "val": 1, "test": 1}
    assert split_counts(11, (0.8, 0.1, 0.1)) == {"train": 9, "val": 1, "test": 1}
    assert split_counts(10, {"train": 6, "test": 2}) == {"train": 6, "val": 0, "test": 2}
    with pytest.raises(ValueError, match="file has 10"):
        split_counts(10, (8, 2, 2))


def generator_blocks(n):
    """The paper's generators (utils/gen_data_*.py), restated: for vf in 0.2, 0.4, 0.6, 0.8, `num_ex(n, idx, 4)`
    samples in a row, i.e. n // 4 each and the remainder in the last block."""
    counts = [n // 4 if idx != 3 else n - 3 * (n // 4) for idx in range(4)]
    return np.concatenate([np.full(c, vf) for c, vf in zip(counts, (0.2, 0.4, 0.6, 0.8), strict=True)])


@pytest.mark.parametrize("n", [4, 7, 10, 4096, 32768, 32771])
def test_block_volume_fractions_follow_the_generators(n):
    np.testing.assert_array_equal(block_volume_fractions(n), generator_blocks(n))


PAPER_FILES = {"train": ("_train_k1_5_32k.h5", 10), "val": ("_val_k1_5_4k.h5", 6), "test": ("_test_k1_5_4k.h5", 8)}


def test_the_papers_three_files_are_the_three_splits_with_their_volume_fractions(tmp_path):
    written = {s: write_h5(tmp_path / name, k=3, n=n) for s, (name, n) in PAPER_FILES.items()}
    # Any order: each file's name says its split.
    paths = [str(tmp_path / PAPER_FILES[s][0]) for s in ("test", "train", "val")]
    ds = import_hdf5(paths, tmp_path / "ds", pde="poisson", chunk=4)
    assert ds.task["imported_from"] == [PAPER_FILES[s][0] for s in ("train", "val", "test")]
    for split, (fields, tensor) in written.items():
        got = ds.read(split, slice(None))
        assert ds.num(split) == PAPER_FILES[split][1]
        np.testing.assert_array_equal(got["source"], fields[:, 0])  # the file's order
        np.testing.assert_array_equal(got["solution"], fields[:, 1])
        np.testing.assert_array_equal(got["diffusion"][:, 0, 1], tensor[:, 2])
        np.testing.assert_array_equal(got["volume_fraction"], generator_blocks(len(fields)).astype(np.float32))
    # Stratified nested subsets see every vf from N = 4 on, as the paper's strided subsampling of a file does.
    train_vf = ds.read("train", slice(None))["volume_fraction"]
    assert sorted(train_vf[nested_subset(train_vf, 4, 0)]) == pytest.approx([0.2, 0.4, 0.6, 0.8])


def test_the_papers_three_files_on_the_command_line(tmp_path, capsys):
    for name, n in PAPER_FILES.values():
        write_h5(tmp_path / name, k=2, n=n)
    main(["--pde", "helmholtz", *(str(tmp_path / name) for name, _ in PAPER_FILES.values()), str(tmp_path / "ds")])
    assert "helmholtz" in capsys.readouterr().out
    ds = open_dataset(tmp_path / "ds")
    assert {s: ds.num(s) for s in PAPER_FILES} == {s: n for s, (_, n) in PAPER_FILES.items()}


def test_three_files_that_do_not_fit_are_refused(tmp_path):
    for name, n in PAPER_FILES.values():
        write_h5(tmp_path / name, k=3, n=n)
    paths = [str(tmp_path / name) for name, _ in PAPER_FILES.values()]
    assert [split_of_file(p) for p in paths] == ["train", "val", "test"]
    with pytest.raises(ValueError, match="cannot tell the split of 'poisson.h5'"):
        split_of_file("poisson.h5")
    with pytest.raises(ValueError, match="two files are for the same split"):
        import_hdf5([paths[0], paths[0], paths[2]], tmp_path / "ds", pde="poisson")
    with pytest.raises(ValueError, match="one file per split is needed"):
        import_hdf5({"train": paths[0], "val": paths[1]}, tmp_path / "ds", pde="poisson")
    write_h5(tmp_path / "_test_other_res.h5", k=3, n=8, res=16)
    with pytest.raises(ValueError, match="differ in resolution or coefficients"):
        import_hdf5([paths[0], paths[1], str(tmp_path / "_test_other_res.h5")], tmp_path / "ds", pde="poisson")
