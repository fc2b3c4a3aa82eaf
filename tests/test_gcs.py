"""Runs, datasets, bundles and sweeps on `gs://`, against the local GCS emulator (tests/gcs_emulator.py; skipped, saying
why, when none can start): a run killed mid-run and resumed ends bitwise equal to an uninterrupted local one; a
dataset generated to gs:// reads back equal, and two processes train from it (each streaming its own rows) in one
gs:// workdir, after refusing a workdir each of them sees alone; a bundle exported to gs:// loads; a busy gs://
workdir is refused, and a run whose lease was taken over stops writing; a sweep keeps its files on gs://.

The path layer and the lease on their own: tests/test_gcs_paths.py. What runs on real GCS only: docs/GCS_NOTES.md.
"""

import json
import logging
import os
import subprocess
import sys
import time
import uuid

import ml_collections
import numpy as np
import pytest
from conftest import FAST_COMPILE, REPO, last_json_lines, params_equal, relative_difference, tiny_config
from gcs_emulator import requires_preconditions

from fno_jax import checkpoint, export, pretrained, train
from fno_jax.config import model_size, task_of
from fno_jax.data import SPLITS, generate_dataset, open_dataset
from fno_jax.data.generate import generate_split
from fno_jax.storage import paths
from fno_jax.storage.lease import LeaseLostError
from fno_jax.storage.workdir import Workdir, WorkdirLockedError
from fno_jax.training.finetune import load_pretrained

RTOL = 1e-5  # float32 reduction order on 2 devices against 1 (tests/test_distributed.py)


def _metric_steps(workdir: str) -> list[int]:
    return [json.loads(line)["step"] for line in paths.read_text(paths.join(workdir, "metrics.jsonl")).splitlines()]


@pytest.fixture(scope="module")
def gcs_dataset(gcs_emulator):
    """The tiny run's data generated to gs:// (zarr chunks of 8 samples), shared by this module's tests."""
    config = tiny_config()
    with config.unlocked():
        config.dataset = ml_collections.ConfigDict({"chunk": 8})
    path = f"gs://{gcs_emulator.bucket}/dataset-{uuid.uuid4().hex[:8]}"
    return generate_dataset(config, path)


# ---- a run ----------------------------------------------------------------------------------------------------

# The run of the test below, in a subprocess: after its record of step 5 (and its checkpoint of step 5) it waits to
# be killed.
_WAIT_AFTER_STEP_5 = """
import sys, time
sys.path.insert(0, "tests")
from conftest import tiny_config
from fno_jax import train
from fno_jax.storage.workdir import MetricsLog

append = MetricsLog.append

def append_then_wait(self, record):
    append(self, record)
    if record["step"] >= 5:
        self.flush()
        time.sleep(600)

MetricsLog.append = append_then_wait
train.train_and_evaluate(tiny_config(), sys.argv[1])
"""


def test_run_killed_and_resumed_on_gcs_equals_an_uninterrupted_run(gcs_emulator, gcs_root, tiny_run, caplog):
    requires_preconditions(gcs_emulator)  # the workdir lease
    reference, reference_summary = tiny_run
    workdir = f"{gcs_root}/run"
    marker = f"{workdir}/checkpoints/5/commit_success.txt"
    proc = subprocess.Popen([sys.executable, "-c", _WAIT_AFTER_STEP_5, workdir], cwd=REPO, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not (paths.exists(marker) and paths.exists(f"{workdir}/metrics.jsonl")):
            assert proc.poll() is None, f"the run ended before its checkpoint: {proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no committed checkpoint appeared"
            time.sleep(0.05)
        proc.kill()  # SIGKILL: no handler runs, the lease is left behind
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert paths.exists(f"{workdir}/.lock") and not paths.exists(f"{workdir}/summary.json")
    assert checkpoint.Checkpointer(workdir, read_only=True).steps() == [5]

    # The same run again: the dead run's lease (a process of this machine that is gone) is taken over at once.
    with caplog.at_level(logging.INFO):
        summary = train.train_and_evaluate(tiny_config(), workdir)
    assert f"resuming {workdir} from step 5" in caplog.text
    assert params_equal(checkpoint.load_params(workdir), checkpoint.load_params(reference))
    assert _metric_steps(workdir) == [5, 10]  # no duplicated records of the killed run
    assert summary["test_rel_l2"] == reference_summary["test_rel_l2"]
    assert paths.read_json(f"{workdir}/summary.json")["best_step"] == reference_summary["best_step"]
    assert not paths.exists(f"{workdir}/.lock")  # released at the end
    events = [name for name in paths.listdir(workdir) if name.startswith("events.out.tfevents.")]
    assert events  # uploaded at close (and by the killed run at its first flush)


def test_busy_workdir_is_refused_and_a_lost_lease_stops_the_writes(gcs_emulator, gcs_root):
    requires_preconditions(gcs_emulator)
    config = tiny_config()
    with Workdir(gcs_root, config) as first:
        with pytest.raises(WorkdirLockedError, match=rf'{gcs_root} is in use by another run \({{"pid": {os.getpid()}'):
            Workdir(gcs_root, config).__enter__()
        first.metrics.append({"step": 1})
        first._lease.lost = True  # as the heartbeat finds it when another run took the lease over
        with pytest.raises(LeaseLostError, match="taken over"):
            first.metrics.flush()
        with pytest.raises(LeaseLostError):
            first.write_summary({"test_rel_l2": 0.0})
        first._lease.lost = False
    assert _metric_steps(gcs_root) == [1]  # written at the end, once the lease was ours again
    with Workdir(gcs_root, config):  # released on exit
        pass


# ---- a dataset ------------------------------------------------------------------------------------------------


def test_dataset_generated_to_gcs_reads_back_equal(gcs_dataset):
    config = tiny_config()
    stored = open_dataset(gcs_dataset.path)  # opened anew, from metadata.json on gs://
    for split, num in (("train", 32), ("val", 16), ("test", 16)):
        expected = generate_split(task_of(config), config.seed, split, num, 16, chunk=config.data.generate_chunk)
        got = stored.read(split, slice(None))
        assert sorted(got) == sorted(expected)
        for key in got:
            assert got[key].dtype == expected[key].dtype and np.array_equal(got[key], expected[key]), (split, key)
    assert {split: stored.num(split) for split in SPLITS} == {"train": 32, "val": 16, "test": 16}
    assert paths.exists(f"{gcs_dataset.path}/metadata.json") and paths.exists(f"{gcs_dataset.path}/progress.json")
    # A second write of the same dataset finds it complete; of another one, refuses to overwrite it.
    assert generate_dataset(_chunked(tiny_config()), gcs_dataset.path).metadata == stored.metadata
    with pytest.raises(ValueError, match="different parameters"):
        generate_dataset(_chunked(tiny_config(**{"data.num_val": 8})), gcs_dataset.path)


def _chunked(config):
    with config.unlocked():
        config.dataset = ml_collections.ConfigDict({"chunk": 8})
    return config


# ---- a bundle -------------------------------------------------------------------------------------------------


def test_export_to_gcs_and_load_from_it(gcs_root, tiny_run, tmp_path):
    workdir, _ = tiny_run
    local = export.export_bundle(workdir, tmp_path / "bundle")
    remote = export.export_bundle(workdir, f"{gcs_root}/bundle")
    assert remote["num_params"] == local["num_params"]
    assert paths.listdir(f"{gcs_root}/bundle") == ["README.md", "card.json", "params.safetensors"]
    model, params, card = pretrained.load(f"{gcs_root}/bundle")
    _, local_params, _ = pretrained.load(tmp_path / "bundle")
    assert params_equal(params, local_params) and card == remote and model.width == 8
    with pytest.raises(pretrained.BundleError, match="already exists"):
        export.export_bundle(workdir, f"{gcs_root}/bundle")
    # config.init_from may name it: the pretrained model a fine-tuning run starts from.
    found = load_pretrained(f"{gcs_root}/bundle", -1, model=model_size(tiny_config()), layout="poisson")
    assert params_equal(found.params, local_params)
    # A bundle cut short (no card.json, which is written last) is no bundle.
    paths.write_bytes(f"{gcs_root}/partial/params.safetensors", b"x")
    assert not pretrained.is_bundle(f"{gcs_root}/partial")
    with pytest.raises(pretrained.BundleError, match="not a pretrained bundle"):
        pretrained.load(f"{gcs_root}/partial")


# ---- two processes ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_in_one_gcs_workdir_and_refuse_an_unshared_one(
    gcs_emulator, gcs_root, gcs_dataset, tiny_run, tmp_path
):
    """The tiny run from the gs:// dataset, trained by two processes (one device each) in one gs:// workdir, ends
    where the local run on one device does (to float32 reduction order)."""
    requires_preconditions(gcs_emulator)
    reference, reference_summary = tiny_run
    port, procs = _free_port(), []
    for pid in range(2):
        env = dict(
            os.environ,
            JAX_PLATFORMS="cpu",
            XLA_FLAGS=FAST_COMPILE,
            FNO_JAX_COORDINATOR=f"127.0.0.1:{port}",
            FNO_JAX_NUM_PROCESSES="2",
            FNO_JAX_PROCESS_ID=str(pid),
        )
        worker = os.path.join(REPO, "tests", "gcs_multihost_worker.py")
        args = [sys.executable, worker, gcs_root, str(tmp_path), gcs_dataset.path]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        procs.append(subprocess.Popen(args, cwd=REPO, env=env, text=True, **pipes))
    results = last_json_lines(procs, timeout=300)
    assert [r["process"] for r in results] == [0, 1] and all(r["devices"] == 2 for r in results)
    for r in results:
        own = str(tmp_path / f"process{r['process']}")
        assert r["refused"].startswith(f"WorkdirNotSharedError: workdir {own} is not shared"), r["refused"]
    assert results[0]["summary"] == results[1]["summary"] and results[0]["summary"]["devices"] == 2
    workdir = f"{gcs_root}/run"
    assert _metric_steps(workdir) == [5, 10] and paths.exists(f"{workdir}/.shared_check")
    assert results[0]["summary"]["best_step"] == reference_summary["best_step"]
    leaves = lambda w: __import__("jax").tree_util.tree_leaves(checkpoint.load_params(w))  # noqa: E731
    assert relative_difference(leaves(workdir), leaves(reference)) < RTOL


# ---- a sweep --------------------------------------------------------------------------------------------------


def test_sweep_keeps_its_files_on_gcs(gcs_emulator, gcs_root):
    import importlib

    from experiments.sweep import run_sweep

    requires_preconditions(gcs_emulator)  # the sweep's lease
    study = importlib.import_module("experiments.configs.quickstart").get_config("runlocal")

    def fake_run(config, workdir):  # a summary, as train_and_evaluate writes it
        assert not config.init_from or paths.exists(paths.join(config.init_from, "summary.json"))
        summary = {"task": config.task, "mode": "scratch", "num_train": config.data.num_train, "test_rel_l2": 0.5}
        summary.update(val_rel_l2=0.5, best_step=1, learning_rate=config.train.learning_rate, steps=1, num_params=1)
        summary["model"] = {k: config.model[k] for k in ("width", "modes", "depth", "fc_dim")}
        paths.write_json(paths.join(workdir, "summary.json"), summary)
        return summary

    records = run_sweep(study, gcs_root, run_fn=fake_run)
    lines = paths.read_text(f"{gcs_root}/results.jsonl").splitlines()
    assert len(lines) == len(records) == 11
    assert {"plan.json", "study.json", "results.jsonl", "runs"} <= set(paths.listdir(gcs_root))
    assert not paths.exists(f"{gcs_root}/.sweep.lock")  # the lease is released after each rebuild
    assert run_sweep(study, gcs_root, run_fn=lambda c, w: pytest.fail("finished runs are not run again")) == records
