"""Damaged bytes in stored files: always a documented error naming the file, never a crash or different data.

Hypothesis flips, sets, inserts and deletes a few bytes (or cuts the file short) of:
  * a stored dataset's metadata.json, its arrays' zarr.json and chunk files (`DatasetFormatError`,
    `CorruptDatasetError`);
  * a checkpoint's metadata, the `meta` item (`CheckpointError`);
  * an exported bundle's card.json and params.safetensors (`fno_jax.export` / `fno_jax.pretrained`; those tests
    skip while the modules are absent).
If a damaged file still loads, what it gives must equal the original (a changed space in JSON, say). Example counts
are bounded, and derandomized in CI (the hypothesis profiles in conftest.py): the whole file runs in seconds.
"""

import glob
import importlib.util
import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_data_store import write

from fno_jax.data import SPLITS, CorruptDatasetError, DatasetFormatError, open_dataset

FUZZ = settings(max_examples=60, deadline=None)

# A damage: (position, kind, value); positions wrap around the file's length.
DAMAGE = st.lists(
    st.tuples(
        st.integers(0, 2**31), st.sampled_from(["flip", "set", "insert", "delete", "truncate"]), st.integers(0, 255)
    ),
    min_size=1,
    max_size=4,
)


def damaged(data: bytes, damage) -> bytes:
    out = bytearray(data)
    for position, kind, value in damage:
        if not out:
            break
        i = position % len(out)
        if kind == "flip":
            out[i] ^= 1 << (value % 8)
        elif kind == "set":
            out[i] = value
        elif kind == "insert":
            out.insert(i, value)
        elif kind == "delete":
            del out[i]
        else:
            del out[i:]
    return bytes(out)


class Damaged:
    """Replace a file's bytes for the duration of a `with` block, then put the original back."""

    def __init__(self, path: str, damage):
        self.path, self.damage = path, damage

    def __enter__(self) -> bytes:
        with open(self.path, "rb") as f:
            self.original = f.read()
        with open(self.path, "wb") as f:
            f.write(damaged(self.original, self.damage))
        return self.original

    def __exit__(self, *exc) -> None:
        with open(self.path, "wb") as f:
            f.write(self.original)


# ---- stored datasets ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A tiny stored dataset and everything it reads back as."""
    path = str(tmp_path_factory.mktemp("fuzz") / "ds")
    ds = write(path, norm_stats={"source_scale": 0.5})
    return path, ds.metadata, {s: ds.read(s, slice(None)) for s in SPLITS}


def assert_reads_the_original_or_fails_clearly(path, metadata, data, errors, name) -> None:
    try:
        ds = open_dataset(path)
        got = {s: ds.read(s, slice(None)) for s in SPLITS}
    except errors as e:
        assert name in str(e), f"the error does not name {name}: {e}"
        return
    assert {k: v for k, v in ds.metadata.items() if k != "checksum"} == {
        k: v for k, v in metadata.items() if k != "checksum"
    }
    for split in SPLITS:
        for array, values in data[split].items():
            np.testing.assert_array_equal(got[split][array], values, err_msg=f"{split}/{array}")


@FUZZ
@given(damage=DAMAGE)
def test_damaged_dataset_metadata_is_an_error_or_the_same_dataset(dataset, damage):
    path, metadata, data = dataset
    with Damaged(os.path.join(path, "metadata.json"), damage):
        assert_reads_the_original_or_fails_clearly(path, metadata, data, DatasetFormatError, path)


@FUZZ
@given(which=st.integers(0, 2**31), damage=DAMAGE)
def test_damaged_dataset_chunk_or_array_metadata_is_an_error_or_the_same_data(dataset, which, damage):
    path, metadata, data = dataset
    files = sorted(f for f in glob.glob(os.path.join(path, "*", "*", "**"), recursive=True) if os.path.isfile(f))
    files = [f for f in files if os.path.basename(f) != "metadata.json" and "progress" not in f]
    target = files[which % len(files)]
    with Damaged(target, damage):
        errors = (CorruptDatasetError, DatasetFormatError)
        assert_reads_the_original_or_fails_clearly(path, metadata, data, errors, path)


# ---- checkpoint metadata ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory):
    """A workdir with one checkpoint (a small params tree and a RunMeta; no training)."""
    import jax.numpy as jnp

    from fno_jax.checkpoint import Checkpointer, load_meta
    from fno_jax.model.normalization import NormStats
    from fno_jax.storage.workdir import RunMeta

    workdir = str(tmp_path_factory.mktemp("fuzz_ckpt"))
    meta = RunMeta(
        model={"width": 8, "modes": 4, "depth": 2, "fc_dim": 16},
        layout="poisson",
        norm_stats=NormStats(0.0123, (0.02, 0.03, 0.004)),
        task_spec={"name": "poisson", "eigenvalue_range": [1.0, 5.0]},
        config={"seed": 0},
        provenance={"package_version": "test"},
    )
    ckpt = Checkpointer(workdir)
    ckpt.save(3, {"params": {"w": jnp.arange(4.0)}, "opt_state": {"m": jnp.zeros(4)}}, meta)
    ckpt.close()
    return workdir, load_meta(workdir)[1]


@FUZZ
@given(damage=DAMAGE)
def test_damaged_checkpoint_metadata_is_an_error_or_the_same_metadata(checkpointed, damage):
    from fno_jax.checkpoint import CheckpointError, load_meta

    workdir, meta = checkpointed
    with Damaged(os.path.join(workdir, "checkpoints", "3", "meta", "metadata"), damage):
        try:
            step, got = load_meta(workdir)
        except CheckpointError as e:
            assert f"{workdir}/checkpoints/3" in str(e)
            return
    assert (step, got) == (3, meta)


# ---- exported bundles (fno_jax.export, fno_jax.pretrained) --------------------------------------------------------

needs_bundles = pytest.mark.skipif(
    importlib.util.find_spec("fno_jax.export") is None or importlib.util.find_spec("fno_jax.pretrained") is None,
    reason="fno_jax.export / fno_jax.pretrained are not part of this tree yet",
)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A bundle exported from a one-step tiny run, and what `fno_jax.pretrained.load` gives for it."""
    from conftest import run_python, tiny_config

    from fno_jax import pretrained
    from fno_jax.train import train_and_evaluate

    root = tmp_path_factory.mktemp("fuzz_bundle")
    workdir, out = str(root / "run"), str(root / "bundle")
    train_and_evaluate(tiny_config(**{"train.num_steps": 1}), workdir)
    run_python(["-m", "fno_jax.export", "--workdir", workdir, "--out", out])
    _, params, card = pretrained.load(out)
    return out, params, card


def assert_bundle_loads_the_original_or_fails_clearly(out, params, card) -> None:
    from conftest import params_equal

    from fno_jax import pretrained

    try:
        _, got_params, got_card = pretrained.load(out)
    except (ValueError, OSError) as e:  # the documented errors are of these kinds; a KeyError or a crash is not
        assert out in str(e), f"the error does not name the bundle: {e}"
        return
    assert params_equal(got_params, params)
    assert json.loads(json.dumps(got_card, default=str)) == json.loads(json.dumps(card, default=str))


@needs_bundles
@FUZZ
@given(damage=DAMAGE)
def test_damaged_bundle_card_is_an_error_or_the_same_model(bundle, damage):
    out, params, card = bundle
    with Damaged(os.path.join(out, "card.json"), damage):
        assert_bundle_loads_the_original_or_fails_clearly(out, params, card)


@needs_bundles
@FUZZ
@given(damage=DAMAGE)
def test_damaged_bundle_params_are_an_error_or_the_same_model(bundle, damage):
    out, params, card = bundle
    with Damaged(os.path.join(out, "params.safetensors"), damage):
        assert_bundle_loads_the_original_or_fails_clearly(out, params, card)


def test_damage_strategy_changes_files():
    """The damages are real: every kind changes the bytes (so the tests above cannot pass vacuously)."""
    data = bytes(range(64))
    for kind in ("flip", "set", "insert", "delete", "truncate"):
        assert damaged(data, [(5, kind, 7 if kind != "set" else 200)]) != data
