"""Import of Darcy datasets in the usual layouts (Li et al.'s .mat v5 / v7.3 on the node grid with its boundary,
PDEBench's .hdf5 on interior points, plain a/u arrays) and training on them."""

import h5py
import jax
import numpy as np
import pytest
import scipy.io

from fno_jax.data.darcy_import import DarcyImportError, import_darcy, main
from solvers import darcy_residual
from solvers.tasks import Darcy

N, INTERIOR = 12, 15


@pytest.fixture(scope="module")
def samples():
    """(a, u) on the full node grid [N, 17, 17] (boundary ring: a extended, u = 0) and the task's own batch."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        batch = jax.tree.map(np.asarray, Darcy().sample(jax.random.key(3), N, INTERIOR, dtype=np.float64))
    finally:
        jax.config.update("jax_enable_x64", previous)
    a = np.pad(batch["permeability"], ((0, 0), (1, 1), (1, 1)), mode="edge")
    u = np.pad(batch["solution"], ((0, 0), (1, 1), (1, 1)))
    return a, u, batch


def _all(ds):
    parts = [ds.read(s, slice(None)) for s in ("train", "val", "test")]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _check_interior(ds, batch, rtol=1e-6):
    assert ds.task["name"] == "darcy" and ds.resolution == INTERIOR
    got = _all(ds)
    np.testing.assert_allclose(got["permeability"], batch["permeability"], rtol=rtol)
    np.testing.assert_allclose(got["solution"], batch["solution"], rtol=rtol, atol=1e-9)
    np.testing.assert_allclose(got["volume_fraction"], batch["volume_fraction"], atol=1e-7)
    assert np.all(got["source"] == 1.0) and np.all(got["pde"] == 3)
    # The stored u solves the stored a's finite-volume system on fno-jax's Dirichlet grid (float32 storage).
    residual = darcy_residual(got["solution"], got["permeability"], got["source"], bc="dirichlet")
    assert float(np.max(np.linalg.norm(residual, axis=(1, 2)) / np.linalg.norm(got["source"], axis=(1, 2)))) < 1e-4


def test_li_et_al_matlab_v5_strips_the_boundary_in_file_order(tmp_path, samples):
    a, u, batch = samples
    scipy.io.savemat(tmp_path / "piececonst.mat", {"coeff": a, "sol": u, "Kcoeff": a})
    ds = import_darcy(tmp_path / "piececonst.mat", tmp_path / "out", splits=(8, 2, 2), seed=None)
    _check_interior(ds, batch)
    assert ds.num("train") == 8 and ds.metadata["extra"]["boundary_stripped"]


def test_matlab_v73_is_read_transposed_and_split_in_a_seeded_order(tmp_path, samples):
    a, u, batch = samples
    with h5py.File(tmp_path / "big.mat", "w") as f:  # MATLAB v7.3 stores arrays with reversed axes
        f["coeff"], f["sol"] = a.transpose(2, 1, 0), u.transpose(2, 1, 0)
    ds = import_darcy(tmp_path / "big.mat", tmp_path / "out", splits=(0.5, 0.25, 0.25), seed=4)
    order = np.random.default_rng(4).permutation(N)
    _check_interior(ds, {k: v[order] for k, v in batch.items()})


def test_pdebench_layout_keeps_interior_points_and_stride_subsamples(tmp_path, samples):
    _, _, batch = samples
    with h5py.File(tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5", "w") as f:
        f["nu"], f["tensor"] = batch["permeability"], batch["solution"][:, None]
        f["x-coordinate"] = np.arange(INTERIOR)
    ds = import_darcy(tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5", tmp_path / "out", boundary="keep", seed=None)
    _check_interior(ds, batch)
    # stride 2 on a 33-node grid with its boundary: every other node, then the ring off: 15 interior nodes.
    fine = np.zeros((N, 33, 33))
    fine[:, ::2, ::2] = np.pad(batch["solution"], ((0, 0), (1, 1), (1, 1)))
    fine_a = np.ones((N, 33, 33))
    fine_a[:, ::2, ::2] = np.pad(batch["permeability"], ((0, 0), (1, 1), (1, 1)), mode="edge")
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["a"], f["u"] = fine_a, fine
    strided = import_darcy(tmp_path / "plain.h5", tmp_path / "strided", stride=2, seed=None)
    _check_interior(strided, batch)


def test_bad_files_are_refused_with_what_was_found(tmp_path, samples):
    a, u, _ = samples
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"], f["y"] = a, u
    with pytest.raises(DarcyImportError, match=r"holds \['x', 'y'\].*--a_key"):
        import_darcy(tmp_path / "other.h5", tmp_path / "out")
    ds = import_darcy(tmp_path / "other.h5", tmp_path / "named", a_key="x", u_key="y", seed=None)
    assert ds.resolution == INTERIOR
    with h5py.File(tmp_path / "negative.h5", "w") as f:
        f["a"], f["u"] = -a, u
    with pytest.raises(DarcyImportError, match="a must be finite and > 0"):
        import_darcy(tmp_path / "negative.h5", tmp_path / "bad")
    assert not (tmp_path / "bad" / "metadata.json").exists()  # nothing taken for a whole dataset
    with h5py.File(tmp_path / "shapes.h5", "w") as f:
        f["a"], f["u"] = a, u[:, :5]
    with pytest.raises(DarcyImportError, match="one solution"):
        import_darcy(tmp_path / "shapes.h5", tmp_path / "out2")


def test_command_line_then_training_on_the_imported_dataset(tmp_path, samples, capsys):
    a, u, _ = samples
    scipy.io.savemat(tmp_path / "d.mat", {"coeff": np.concatenate([a] * 3), "sol": np.concatenate([u] * 3)})
    main([str(tmp_path / "d.mat"), str(tmp_path / "ds"), "--split", "0.5", "0.25", "0.25"])
    assert "darcy at 15 x 15" in capsys.readouterr().out
    from fno_jax.config import default_config
    from fno_jax.train import train_and_evaluate

    c = default_config()
    c.task, c.data.source, c.data.resolution = "darcy", str(tmp_path / "ds"), INTERIOR
    c.data.num_train, c.data.num_val, c.data.num_test = 16, 8, 8
    c.model.update(width=4, modes=4, depth=1, fc_dim=8, padding=3)
    c.train.update(batch_size=8, num_steps=4, eval_every=2, checkpoint_every=4, log_every=2, max_evals=4)
    summary = train_and_evaluate(c, str(tmp_path / "run"))
    assert np.isfinite(summary["test_rel_l2"]) and np.isfinite(summary["test_rel_residual"])
