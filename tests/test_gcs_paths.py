"""The path layer (`fno_jax.storage.paths`) and the lease (`fno_jax.storage.lease`) on local paths and on `gs://`
against a local GCS emulator (tests/gcs_emulator.py): the same calls, the same results; what GCS lacks (append,
rename, flock) done with conditional writes, copies and a lease; and the orbax, tensorstore and tensorboardX paths it
relies on. Whole runs, datasets, bundles and sweeps on gs:// are tests/test_gcs.py."""

import json
import os
import subprocess
import sys
import threading
import time

import gcs_emulator as emulator_fixtures
import numpy as np
import pytest
from conftest import REPO

from fno_jax.storage import lease, paths

requires_preconditions = emulator_fixtures.requires_preconditions


@pytest.fixture(params=["local", "gcs"])
def root(request, tmp_path):
    """A fresh directory: a local one, or a gs:// prefix on the emulator."""
    if request.param == "local":
        return str(tmp_path)
    return request.getfixturevalue("gcs_root")


# ---- names (pure) ---------------------------------------------------------------------------------------------


def test_names_leave_gcs_urls_alone():
    assert paths.is_remote("gs://b/x") and not paths.is_remote("/tmp/x") and not paths.is_remote("gs:/b")
    assert paths.abspath("gs://b/run/") == "gs://b/run"
    assert paths.abspath("run") == os.path.join(os.getcwd(), "run")
    assert paths.join("gs://b/run", "checkpoints", "3") == "gs://b/run/checkpoints/3"
    assert paths.dirname("gs://b/run/config.json") == "gs://b/run"
    assert paths.dirname("gs://b/run") == "gs://b"
    assert paths.split_gcs("gs://b/run/x/") == ("b", "run/x")
    with pytest.raises(paths.GcsPathError, match="names no bucket"):
        paths.split_gcs("gs:///x")
    with pytest.raises(paths.GcsPathError, match="names no bucket"):
        paths.abspath("gs:///run")  # what every workdir, dataset and bundle path goes through first
    assert paths.tensorstore_kvstore("gs://b/ds/train") == {"driver": "gcs", "bucket": "b", "path": "ds/train/"}
    assert paths.tensorstore_kvstore("ds") == {"driver": "file", "path": os.path.abspath("ds")}


# ---- the same calls on both -----------------------------------------------------------------------------------


def test_files_round_trip(root):
    run = paths.join(root, "run")
    paths.makedirs(run)
    paths.write_json(paths.join(run, "config.json"), {"seed": 1, "model": {"width": 8}})
    paths.write_text(paths.join(run, "notes.txt"), "héllo\n")
    paths.write_bytes(paths.join(run, "sub", "w.bin"), b"\x00\x01")
    paths.write_text(paths.join(run, "notes.txt"), "replaced\n")  # a whole-file write replaces, never appends

    assert paths.read_json(paths.join(run, "config.json")) == {"seed": 1, "model": {"width": 8}}
    assert paths.read_text(paths.join(run, "notes.txt")) == "replaced\n"
    assert paths.read_bytes(paths.join(run, "sub", "w.bin")) == b"\x00\x01"
    assert paths.exists(run) and paths.isdir(run) and paths.isdir(paths.join(run, "sub"))
    assert not paths.exists(paths.join(run, "absent")) and not paths.isdir(paths.join(run, "notes.txt"))
    assert paths.listdir(run) == ["config.json", "notes.txt", "sub"]  # no temporary file left behind
    assert paths.glob(paths.join(run, "*.json")) == [paths.join(run, "config.json")]
    assert paths.glob(paths.join(root, "*", "sub", "*.bin")) == [paths.join(run, "sub", "w.bin")]
    with pytest.raises(ValueError, match=r"\*\*"):
        paths.glob(paths.join(root, "**", "*.bin"))

    paths.remove(paths.join(run, "notes.txt"))
    paths.remove(paths.join(run, "notes.txt"))  # missing_ok
    with pytest.raises(FileNotFoundError):
        paths.remove(paths.join(run, "notes.txt"), missing_ok=False)
    paths.rmtree(run)
    assert not paths.exists(run) and not paths.exists(paths.join(run, "sub", "w.bin"))
    paths.rmtree(run)  # missing_ok


def test_names_and_copies(root, tmp_path):
    assert paths.basename(paths.join(root, "runs", "a")) == "a"
    assert paths.normpath(paths.join(root, "a", "..", "b")) == paths.join(root, "b")
    assert paths.relpath(paths.join(root, "base"), paths.join(root, "x", "adapter")) == "../../base"
    assert paths.relpath("gs://b/x", "/tmp/x") is None and paths.relpath("gs://b/x", "gs://c/x") is None
    src = paths.join(root, "src")
    paths.write_text(paths.join(src, "a.txt"), "a")
    paths.write_text(paths.join(src, "sub", "b.txt"), "b")
    assert paths.isfile(paths.join(src, "a.txt")) and not paths.isfile(src)
    for dst in (paths.join(root, "copy"), str(tmp_path / "local_copy"), f"{root}_elsewhere/copy"):
        if not paths.is_remote(root) and paths.is_remote(dst):
            continue
        paths.copytree(src, dst)
        assert paths.read_text(paths.join(dst, "sub", "b.txt")) == "b" and paths.listdir(dst) == ["a.txt", "sub"]
        with pytest.raises(FileExistsError):
            paths.copytree(src, dst)
    if paths.is_remote(root):  # a local folder uploaded
        paths.copytree(str(tmp_path / "local_copy"), paths.join(root, "from_local"))
        assert paths.read_text(paths.join(root, "from_local", "sub", "b.txt")) == "b"


def test_append_lines(root):
    path = paths.join(root, "metrics.jsonl")
    paths.append_lines(path, ['{"step": 1}'])  # creates
    paths.append_lines(path, ['{"step": 2}', '{"step": 3}'])
    paths.append_lines(path, [])
    assert [json.loads(line)["step"] for line in paths.read_text(path).splitlines()] == [1, 2, 3]


def test_move_directory(root):
    src, dst = paths.join(root, "checkpoints", "4"), paths.join(root, "broken_checkpoints", "4")
    paths.write_text(paths.join(src, "params", "d", "abc"), "array")
    paths.write_text(paths.join(src, "commit_success.txt"), "ok")
    paths.makedirs(paths.dirname(dst))
    paths.move(src, dst)
    assert not paths.exists(src)
    assert paths.read_text(paths.join(dst, "params", "d", "abc")) == "array"
    assert paths.listdir(dst) == ["commit_success.txt", "params"]
    paths.write_text(paths.join(src, "x"), "again")
    with pytest.raises(FileExistsError):
        paths.move(src, dst)  # never merged into, nor overwritten
    with pytest.raises(ValueError, match="between local and GCS"):
        paths.move(src, "/tmp/elsewhere" if paths.is_remote(src) else "gs://b/elsewhere")


# ---- GCS only: what a second client sees, subprocesses ------------------------------------------------------


def test_another_writer_is_seen_at_once(gcs_root):
    """gcsfs would answer listings and exists() from a cache that another client's writes never reach (the layer
    turns it off): a file another process writes or removes is seen at once."""
    from google.cloud import storage

    paths.write_text(f"{gcs_root}/a", "1")
    assert paths.listdir(gcs_root) == ["a"]
    bucket, key = paths.split_gcs(gcs_root)
    other = storage.Client().bucket(bucket)
    other.blob(f"{key}/b").upload_from_string(b"2")
    assert paths.listdir(gcs_root) == ["a", "b"] and paths.exists(f"{gcs_root}/b")
    other.blob(f"{key}/a").delete()
    assert paths.listdir(gcs_root) == ["b"] and not paths.exists(f"{gcs_root}/a")


def test_subprocess_inherits_the_emulator(gcs_root):
    paths.write_text(f"{gcs_root}/hello.txt", "from the test")
    code = "import sys; from fno_jax.storage import paths; print(paths.read_text(sys.argv[1]))"
    result = subprocess.run(
        [sys.executable, "-c", code, f"{gcs_root}/hello.txt"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "from the test"


# ---- GCS only: generation preconditions ---------------------------------------------------------------------


def test_conditional_writes(gcs_emulator, gcs_root):
    requires_preconditions(gcs_emulator)
    path = f"{gcs_root}/state.json"
    assert paths.read_with_generation(path) == (None, 0)
    g1 = paths.write_if_generation(path, b"1", 0)
    with pytest.raises(paths.ConcurrentUpdateError):
        paths.write_if_generation(path, b"2", 0)  # create-only: it exists
    g2 = paths.write_if_generation(path, b"3", g1)
    with pytest.raises(paths.ConcurrentUpdateError):
        paths.write_if_generation(path, b"4", g1)  # stale generation
    assert paths.read_with_generation(path) == (b"3", g2)


def test_concurrent_appends_lose_nothing(gcs_emulator, gcs_root):
    requires_preconditions(gcs_emulator)
    path = f"{gcs_root}/metrics.jsonl"

    def writer(name):
        for i in range(8):
            paths.append_lines(path, [json.dumps({"writer": name, "i": i})])

    threads = [threading.Thread(target=writer, args=(name,)) for name in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = [json.loads(line) for line in paths.read_text(path).splitlines()]
    assert sorted((r["writer"], r["i"]) for r in records) == [(w, i) for w in "ab" for i in range(8)]


# ---- the lock on GCS: a lease ------------------------------------------------------------------------------


def test_lease_excludes_a_second_holder(gcs_emulator, gcs_root):
    requires_preconditions(gcs_emulator)
    path = f"{gcs_root}/.lock"
    first = lease.Lease(path, ttl_s=30, info={"run": "first"})
    first.acquire()
    second = lease.Lease(path, ttl_s=30)
    assert not second.try_acquire()
    with pytest.raises(lease.LeaseHeldError, match="first|held by another run"):
        second.acquire(wait_s=0.3, poll_s=0.1)
    assert first.holder()["token"] == first.token and first.holder()["run"] == "first"
    first.renew()
    first.check()
    first.release()
    assert first.holder() is None
    with second:  # free now
        assert second.holder()["token"] == second.token
    assert second.holder() is None


def test_stale_lease_is_taken_over_and_its_holder_learns_it(gcs_emulator, gcs_root):
    requires_preconditions(gcs_emulator)
    path = f"{gcs_root}/.lock"
    old = lease.Lease(path, ttl_s=1.0)
    old.acquire()  # and never renewed: a holder that hangs, or died on another host
    new = lease.Lease(path, ttl_s=30)
    assert not new.try_acquire()
    time.sleep(1.6)
    new.acquire()
    with pytest.raises(lease.LeaseLostError):
        old.renew()
    with pytest.raises(lease.LeaseLostError):
        old.check()
    old.release()  # leaves the new holder's lease alone
    assert new.holder()["token"] == new.token
    new.release()


def test_heartbeat_keeps_a_lease_past_its_ttl(gcs_emulator, gcs_root):
    requires_preconditions(gcs_emulator)
    path = f"{gcs_root}/.lock"
    with lease.Lease(path, ttl_s=0.9) as held:
        time.sleep(2.0)  # more than two ttls
        assert not lease.Lease(path, ttl_s=0.9).try_acquire()
        held.check()
    assert lease.Lease(path).try_acquire()


def test_lease_of_a_dead_process_on_this_machine_is_free_at_once(gcs_emulator, gcs_root):
    """A run killed here (kill -9, preemption) is resumed here without waiting for its lease's ttl."""
    requires_preconditions(gcs_emulator)
    if not lease._linux_identity():
        pytest.skip("needs Linux's boot id and PID namespace to know that a PID is on this machine")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = f"{gcs_root}/.lock"
    stale = lease.Lease(path, ttl_s=3600)
    stale.acquire()
    body = json.loads(paths.read_text(path))
    paths.write_text(path, json.dumps({**body, "pid": dead.pid}))  # as if that process had taken it, then died
    assert lease.Lease(path, ttl_s=3600).try_acquire()


# ---- what the path layer serves: tensorstore, orbax, tensorboardX on gs:// ---------------------------------


def test_tensorstore_zarr_through_the_kvstore_spec(root):
    import tensorstore as ts

    spec = {"driver": "zarr3", "kvstore": paths.tensorstore_kvstore(paths.join(root, "ds", "train", "source"))}
    x = np.random.default_rng(0).standard_normal((20, 4, 4)).astype(np.float32)
    chunks = ts.ChunkLayout(chunk_shape=[8, 4, 4])
    array = ts.open(spec, create=True, dtype=ts.float32, shape=x.shape, chunk_layout=chunks).result()
    for start in range(0, 20, 8):  # whole chunks (the last one shorter), as the dataset writer writes them
        stop = min(start + 8, 20)
        array[start:stop].write(x[start:stop]).result()
    assert np.array_equal(ts.open(spec, open=True).result().read().result(), x)
    assert paths.exists(paths.join(root, "ds", "train", "source", "zarr.json"))


def test_orbax_steps_commit_and_a_broken_step_is_set_aside(root):
    """On gs:// orbax commits a step by writing commit_success.txt into it (no rename), so a step is set aside by
    removing that marker first (from then on orbax ignores the step), then moving the rest; orbax saves the
    step again over anything left behind."""
    import jax.numpy as jnp
    import orbax.checkpoint as ocp

    directory = paths.join(root, "checkpoints")
    options = ocp.CheckpointManagerOptions(enable_async_checkpointing=True, max_to_keep=3)
    handlers = {"params": ocp.StandardCheckpointHandler()}
    manager = ocp.CheckpointManager(directory, options=options, item_handlers=handlers)
    for step in (1, 2):
        manager.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave({"w": jnp.full((3,), step)})))
    manager.wait_until_finished()
    assert manager.all_steps() == [1, 2]
    step_dir = paths.join(directory, "2")
    if paths.is_remote(root):
        assert "commit_success.txt" in paths.listdir(step_dir)
        paths.remove(paths.join(step_dir, "commit_success.txt"))
        manager.reload()
        assert manager.all_steps() == [1]  # uncommitted: invisible, even before it is moved
    target = paths.join(root, "broken_checkpoints", "2")
    paths.makedirs(paths.dirname(target))
    paths.move(step_dir, target)
    manager.reload()
    assert manager.all_steps() == [1] and paths.exists(paths.join(target, "params"))

    manager.save(2, args=ocp.args.Composite(params=ocp.args.StandardSave({"w": jnp.full((3,), 7)})))
    manager.wait_until_finished()
    restored = manager.restore(2, args=ocp.args.Composite(params=ocp.args.StandardRestore({"w": jnp.zeros(3)})))
    assert np.array_equal(np.asarray(restored["params"]["w"]), np.full((3,), 7))
    manager.close()


@pytest.fixture
def tensorboardx_gs_writer():
    """Puts back tensorboardX's own gs:// writer after the test (`gcs_events.use_path_layer` replaces it)."""
    from tensorboardX import record_writer

    saved = record_writer.REGISTERED_FACTORIES["gs"]
    yield
    record_writer.REGISTERED_FACTORIES["gs"] = saved


def test_tensorboard_event_files_on_gcs(gcs_root, tmp_path, tensorboardx_gs_writer):
    """Event files on gs:// through the path layer (`fno_jax.storage.gcs_events`). tensorboardX's own gs://
    writer works too (docs/GCS_NOTES.md), but uploads once more when it is garbage-collected, which can be after the
    emulator has stopped, and then blocks the test process for 120 s: tests use this one."""
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboardX import SummaryWriter

    from fno_jax.storage import gcs_events

    gcs_events.use_path_layer(min_interval_s=3600)  # flush() uploads at most hourly: here, at close only
    summary = SummaryWriter(gcs_root, purge_step=1, flush_secs=30, filename_suffix=".start0000000000")
    for step in (1, 2, 3):
        summary.add_scalar("train/loss", 1.0 / step, global_step=step)
        summary.flush()
        if step == 1:
            (name,) = paths.listdir(gcs_root)  # the first flush uploads
            first = len(paths.read_bytes(paths.join(gcs_root, name)))
    assert len(paths.read_bytes(paths.join(gcs_root, name))) == first  # later flushes within the interval do not
    summary.close()
    assert name.startswith("events.out.tfevents.") and name.endswith(".start0000000000")
    local = tmp_path / name
    local.write_bytes(paths.read_bytes(paths.join(gcs_root, name)))
    events = event_file_loader.LegacyEventFileLoader(str(local)).Load()
    losses = {e.step: e.summary.value[0].simple_value for e in events if e.summary.value}
    assert losses == pytest.approx({1: 1.0, 2: 0.5, 3: 1 / 3})
