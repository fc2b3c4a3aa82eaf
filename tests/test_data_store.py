"""Stored datasets: bit-exact round trips, resumable writes, clear errors, prefetching."""

import json
import os
import time

import numpy as np
import pytest

from fno_jax.data import (
    ARRAYS,
    CorruptDatasetError,
    DatasetFormatError,
    DatasetNotFoundError,
    DatasetWriteError,
    IncompatibleDatasetError,
    IncompleteDatasetError,
    Prefetcher,
    open_dataset,
    write_dataset,
)
from fno_jax.storage import json_io

RES = 8
COUNTS = {"train": 40, "val": 16, "test": 8}
CHUNK = 16
SPEC = {"name": "poisson", "eigenvalue_range": [1.0, 5.0], "length": 1.0}
NUM_CHUNKS = 3 + 1 + 1  # train: 16 + 16 + 8; val: 16; test: 8


def make_batch(split, start, count, dtype=np.float32):
    """Deterministic in (split, start, count), with values that test every bit of the dtypes."""
    rng = np.random.default_rng([("train", "val", "test").index(split), start, count])
    return {
        "source": rng.standard_normal((count, RES, RES)).astype(dtype),
        "solution": rng.standard_normal((count, RES, RES)).astype(dtype),
        "diffusion": rng.standard_normal((count, 2, 2)).astype(dtype),
        "velocity": rng.standard_normal((count, 2)).astype(dtype),
        # All zeros, like a Poisson set: chunks equal to the fill value must be stored too.
        "omega": np.zeros((count,), dtype),
        "pde": rng.integers(-(2**31), 2**31 - 1, size=count, dtype=np.int32),
        "volume_fraction": rng.choice([0.2, 0.4, 0.6, 0.8], size=count).astype(dtype),
    }


def expected_split(split, dtype=np.float32):
    parts = [make_batch(split, s, min(CHUNK, COUNTS[split] - s), dtype) for s in range(0, COUNTS[split], CHUNK)]
    return {k: np.concatenate([p[k] for p in parts]) for k in ARRAYS}


def write(path, make=make_batch, **overrides):
    kwargs = dict(spec=SPEC, resolution=RES, counts=COUNTS, seed=7, chunk=CHUNK)
    kwargs.update(overrides)
    return write_dataset(path, make, **kwargs)


class CountingMaker:
    def __init__(self, fail_after=None, dtype=np.float32):
        self.calls = []
        self.fail_after = fail_after
        self.dtype = dtype

    def __call__(self, split, start, count):
        if self.fail_after is not None and len(self.calls) == self.fail_after:
            raise RuntimeError("simulated interruption")
        self.calls.append((split, start, count))
        return make_batch(split, start, count, self.dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_is_bit_exact(tmp_path, dtype):
    np_dtype = np.dtype(dtype)
    ds = write(tmp_path / "ds", CountingMaker(dtype=np_dtype), dtype=dtype)
    for split, count in COUNTS.items():
        assert ds.num(split) == count
        got = ds.read(split, slice(None))
        want = expected_split(split, np_dtype)
        for name in ARRAYS:
            assert got[name].dtype == (np.int32 if name == "pde" else np_dtype), name
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    want = expected_split("train", np_dtype)
    idx = [0, 3, 17, 39]
    got = ds.read("train", idx)
    for name in ARRAYS:
        np.testing.assert_array_equal(got[name], want[name][idx])
    got = ds.read("train", slice(10, 30))
    np.testing.assert_array_equal(got["source"], want["source"][10:30])
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 40\)"):
        ds.read("train", [0, 40])


def test_metadata_contents(tmp_path):
    stats = {"source_scale": 0.5, "coeff_scale": [0.01, 0.02, 0.003]}
    ds = write(tmp_path / "ds", norm_stats=stats, extra={"note": "x"})
    m = ds.metadata
    assert (m["format"], m["version"]) == ("fno-jax-dataset", 1)
    assert m["task"] == SPEC and m["resolution"] == RES and m["seed"] == 7
    assert m["counts"] == COUNTS and m["dtype"] == "float32" and m["chunk"] == CHUNK
    assert m["normalization"] == stats and ds.normalization == stats
    assert m["complete"] == {"train": True, "val": True, "test": True}
    assert m["extra"] == {"note": "x"}
    assert isinstance(m["package_version"], str)


def test_norm_stats_callable_sees_the_train_split(tmp_path):
    seen = {}

    def stats(train):
        seen.update(train)
        return {"source_scale": float(np.median(train["source"]))}

    ds = write(tmp_path / "ds", norm_stats=stats)
    want = expected_split("train")
    np.testing.assert_array_equal(seen["source"], want["source"])
    assert ds.normalization == {"source_scale": float(np.median(want["source"]))}


def test_interrupted_write_is_incomplete_then_resumed(tmp_path):
    path = tmp_path / "ds"
    first = CountingMaker(fail_after=3)
    with pytest.raises(RuntimeError, match="simulated"):
        write(path, first)
    assert len(first.calls) == 3
    with pytest.raises(IncompleteDatasetError, match="(?i)re-run the generate command") as e:
        open_dataset(path)
    assert str(path) in str(e.value)

    second = CountingMaker()
    ds = write(path, second)
    # Only the chunks the first run did not store are made again.
    assert len(second.calls) == NUM_CHUNKS - 3
    assert not set(second.calls) & set(first.calls)
    for split in COUNTS:
        got, want = ds.read(split, slice(None)), expected_split(split)
        for name in ARRAYS:
            np.testing.assert_array_equal(got[name], want[name])


def assert_dataset_equals_the_uninterrupted_one(ds) -> None:
    for split in COUNTS:
        got, want = ds.read(split, slice(None)), expected_split(split)
        for name in ARRAYS:
            np.testing.assert_array_equal(got[name], want[name])


def test_unwritable_chunk_location_names_the_path_and_the_write_resumes_once_fixed(tmp_path):
    """A real I/O failure inside tensorstore: a file stands where chunk 1 of train/solution needs a directory."""
    path = tmp_path / "ds"
    with pytest.raises(RuntimeError, match="simulated"):
        write(path, CountingMaker(fail_after=1))  # chunk 0 of train stored
    blocker = path / "train" / "solution" / "c" / "1"
    blocker.write_text("in the way")
    first = CountingMaker()
    with pytest.raises(DatasetWriteError) as info:
        write(path, first)
    message = str(info.value)
    assert f"samples [16, 32) of split 'train' of dataset {path}" in message and "Not a directory" in message
    assert "1 of 5 chunks are stored and kept" in message and "run the same command again" in message
    assert isinstance(info.value, OSError)
    blocker.unlink()  # fixed
    second = CountingMaker()
    ds = write(path, second)
    assert second.calls[0] == first.calls[0] == ("train", 16, 16) and len(second.calls) == NUM_CHUNKS - 1
    assert_dataset_equals_the_uninterrupted_one(ds)


def test_full_disk_during_a_dataset_write_resumes_once_there_is_space(tmp_path, monkeypatch):
    """ENOSPC on the fourth progress record (after three chunks are stored)."""
    import errno

    from fno_jax.data import store

    calls = []

    def disk_full_on_the_fourth(path, obj, **kwargs):
        calls.append(path)
        if len(calls) == 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return json_io.write_json_atomic(path, obj, **kwargs)

    monkeypatch.setattr(store, "write_json_atomic", disk_full_on_the_fourth)
    path = tmp_path / "ds"
    with pytest.raises(DatasetWriteError, match=rf"cannot write progress.json of dataset {path} .*No space left"):
        write(path, CountingMaker())
    with pytest.raises(IncompleteDatasetError):
        open_dataset(path)
    monkeypatch.undo()  # space again
    second = CountingMaker()
    ds = write(path, second)
    assert len(second.calls) == NUM_CHUNKS - 2  # the third chunk was stored but not recorded: written again
    assert_dataset_equals_the_uninterrupted_one(ds)


def test_deleted_metadata_is_incomplete_and_rerun_only_finalizes(tmp_path):
    path = tmp_path / "ds"
    write(path)
    os.remove(path / "metadata.json")
    with pytest.raises(IncompleteDatasetError, match=str(path)):
        open_dataset(path)
    maker = CountingMaker()
    ds = write(path, maker)
    assert maker.calls == []
    np.testing.assert_array_equal(ds.read("val", slice(None))["source"], expected_split("val")["source"])


def test_complete_with_same_parameters_does_nothing(tmp_path):
    path = tmp_path / "ds"
    write(path)
    before = (path / "metadata.json").read_bytes()
    maker = CountingMaker()
    write(path, maker)
    assert maker.calls == []
    assert (path / "metadata.json").read_bytes() == before


@pytest.mark.parametrize(
    ("field", "override"),
    [
        ("seed", {"seed": 8}),
        ("resolution", {"resolution": 16}),
        ("counts", {"counts": {"train": 48, "val": 16, "test": 8}}),
        ("task", {"spec": {**SPEC, "eigenvalue_range": [1.0, 10.0]}}),
        ("chunk", {"chunk": 8}),
        ("dtype", {"dtype": "float64"}),
    ],
)
def test_refuses_to_overwrite_complete_dataset_with_other_parameters(tmp_path, field, override):
    path = tmp_path / "ds"
    write(path)
    files = {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    maker = CountingMaker()
    with pytest.raises(ValueError, match="new path") as e:
        write(path, maker, **override)
    assert str(path) in str(e.value) and repr(field) in str(e.value)
    assert maker.calls == []
    assert {p: p.read_bytes() for p in path.rglob("*") if p.is_file()} == files


def test_refuses_to_resume_unfinished_dataset_with_other_parameters(tmp_path):
    path = tmp_path / "ds"
    with pytest.raises(RuntimeError):
        write(path, CountingMaker(fail_after=2))
    with pytest.raises(ValueError, match="'seed'"):
        write(path, CountingMaker(), seed=1)


def test_refuses_non_dataset_directory(tmp_path):
    (tmp_path / "other.txt").write_text("hello")
    with pytest.raises(ValueError, match="holds no dataset"):
        write(tmp_path)


def test_missing_directory(tmp_path):
    path = tmp_path / "nope"
    with pytest.raises(DatasetNotFoundError, match=str(path)) as e:
        open_dataset(path)
    assert isinstance(e.value, FileNotFoundError)


def test_unknown_format_version(tmp_path):
    path = tmp_path / "ds"
    write(path)
    meta = json.loads((path / "metadata.json").read_text())
    meta["version"] = 99
    (path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetFormatError, match="version 99") as e:
        open_dataset(path)
    assert str(path) in str(e.value)


def test_unreadable_metadata(tmp_path):
    path = tmp_path / "ds"
    write(path)
    (path / "metadata.json").write_text("{not json")
    with pytest.raises(DatasetFormatError, match="not valid JSON"):
        open_dataset(path)


@pytest.mark.parametrize("damage", ["garbage", "delete"])
def test_corrupt_or_missing_chunk(tmp_path, damage):
    path = tmp_path / "ds"
    write(path)
    chunk_file = path / "train" / "solution" / "c" / "1" / "0" / "0"
    assert chunk_file.is_file()
    if damage == "garbage":
        chunk_file.write_bytes(b"\x00garbage bytes\xff" * 10)
    else:
        chunk_file.unlink()
    ds = open_dataset(path)
    # Chunk 0 is intact and still reads.
    np.testing.assert_array_equal(ds.read("train", slice(0, 16))["solution"], expected_split("train")["solution"][:16])
    with pytest.raises(CorruptDatasetError, match="Regenerate") as e:
        ds.read("train", slice(None))
    message = str(e.value)
    assert str(path) in message and "'train'" in message and "'solution'" in message


def test_check_compatible(tmp_path):
    ds = write(tmp_path / "ds")
    ds.check_compatible(resolution=RES, layout="poisson", in_channels=4)
    ds.check_compatible(layout="mixed", in_channels=7)
    with pytest.raises(IncompatibleDatasetError, match="resolution 8"):
        ds.check_compatible(resolution=16)
    with pytest.raises(IncompatibleDatasetError, match="layout"):
        ds.check_compatible(layout="helmholtz")
    with pytest.raises(IncompatibleDatasetError, match="4 input channels"):
        ds.check_compatible(in_channels=3)


def test_write_chunk_checks_shapes(tmp_path):
    from fno_jax.data import DatasetWriter

    writer = DatasetWriter(tmp_path / "ds", spec=SPEC, resolution=RES, counts=COUNTS, seed=0)
    bad = make_batch("train", 0, 40)
    bad["source"] = bad["source"][:, :4]
    with pytest.raises(ValueError, match=r"batch\['source'\] has shape"):
        writer.write_chunk("train", 0, bad)
    with pytest.raises(ValueError, match="multiple of chunk"):
        writer.write_chunk("train", 3, make_batch("train", 3, 37))
    with pytest.raises(ValueError, match="cannot be finalized"):
        writer.finalize({})


def test_prefetcher_keeps_order():
    with Prefetcher(lambda i: {"x": np.full((2,), i)}, range(5), buffer_size=2) as it:
        assert [int(b["x"][0]) for b in it] == [0, 1, 2, 3, 4]


def test_prefetcher_propagates_worker_errors():
    def fetch(i):
        if i == 2:
            raise KeyError("bad index 2")
        return i

    it = Prefetcher(fetch, range(10))
    assert next(it) == 0 and next(it) == 1
    with pytest.raises(KeyError, match="bad index 2"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_prefetcher_close_stops_an_endless_worker():
    calls = []

    def fetch(i):
        calls.append(i)
        return i

    import itertools

    it = Prefetcher(fetch, itertools.count(), buffer_size=2)
    assert next(it) == 0
    it.close()
    made = len(calls)
    time.sleep(0.1)
    assert len(calls) == made  # nothing runs after close
    assert made <= 1 + 2 + 1  # consumed + queue + one blocked in put


def test_write_chunks_stores_several_chunks_at_once(tmp_path):
    from fno_jax.data import DatasetWriter

    writer = DatasetWriter(tmp_path / "ds", spec=SPEC, resolution=RES, counts=COUNTS, seed=0, chunk=8)
    with pytest.raises(ValueError, match="must end on a multiple of chunk=8"):
        writer.write_chunks("train", 0, make_batch("train", 0, 12))
    parts = [make_batch("train", 0, 24), make_batch("train", 24, 16)]
    writer.write_chunks("train", 0, parts[0])  # chunks 0, 8, 16 in one write
    assert [s for s in writer.chunk_starts("train") if writer.done("train", s)] == [0, 8, 16]
    writer.write_chunks("train", 24, parts[1])  # to the end of the split (40)
    for split in ("val", "test"):
        writer.write_chunks(split, 0, make_batch(split, 0, COUNTS[split]))
    writer.finalize({})
    stored = open_dataset(tmp_path / "ds").read("train", slice(None))
    for name in ARRAYS:
        np.testing.assert_array_equal(stored[name], np.concatenate([p[name] for p in parts]))
