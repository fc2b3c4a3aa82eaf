"""Faults during a run: kill -9 and resume, a corrupted newest checkpoint, NaN in the data, two runs on one workdir.

Every run here is the tiny run of tests/conftest.py, 12 steps long with a checkpoint every 2. The subprocesses share
the suite's persistent XLA compilation cache, so only the first one pays for compilation.
"""

import glob
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, main_cli, params_equal, tiny_config

from fno_jax import checkpoint
from fno_jax.data import batch_indices, generate, nested_subset
from fno_jax.train import NonFiniteError, train_and_evaluate
from fno_jax.workdir import Workdir, WorkdirLockedError

pytestmark = pytest.mark.slow
# The tiny run, longer and with checkpoints every 2 steps: the smallest run that still checkpoints, evaluates and
# resumes with several checkpoints to fall back on.
LONGER = {"train.num_steps": 12, "train.checkpoint_every": 2, "train.eval_every": 4, "train.log_every": 1}


def cli(workdir, **overrides) -> list[str]:
    return [sys.executable, *main_cli(workdir, *(f"--config.{k}={v}" for k, v in {**LONGER, **overrides}.items()))]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """An uninterrupted 12-step run through the CLI."""
    workdir = tmp_path_factory.mktemp("baseline")
    done = subprocess.run(cli(workdir), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return str(workdir)


def checkpoint_steps(workdir) -> list[int]:
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def assert_params_equal(workdir_a, workdir_b, step) -> None:
    assert params_equal(checkpoint.load_params(workdir_a, step), checkpoint.load_params(workdir_b, step))


def metric_lines(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    for r in records:
        r.pop("steps_per_s", None)  # wall-clock, not a result
    return records


def test_kill9_after_first_checkpoint_then_resume_is_bitwise_exact(tmp_path, baseline):
    workdir = str(tmp_path / "run")
    proc = subprocess.Popen(cli(workdir), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not checkpoint_steps(workdir):
            assert proc.poll() is None, f"run ended before its first checkpoint: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    # Killed mid-run: the run had not finished.
    assert not os.path.exists(os.path.join(workdir, "summary.json"))
    assert checkpoint_steps(workdir)[-1] < 12

    # Same command again: resumes (the dead run's lock is gone with it) and ends where the uninterrupted run did.
    done = subprocess.run(cli(workdir), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming" in done.stderr
    assert_params_equal(baseline, workdir, 12)
    assert metric_lines(baseline) == metric_lines(workdir)
    with open(os.path.join(baseline, "summary.json")) as f, open(os.path.join(workdir, "summary.json")) as g:
        a, b = json.load(f), json.load(g)
    assert a["test_rel_l2"] == b["test_rel_l2"] and a["best_step"] == b["best_step"]


def test_second_run_on_a_busy_workdir_is_refused_naming_the_first(tmp_path, baseline):
    del baseline  # only for the warm compilation cache
    workdir = str(tmp_path / "busy")
    first = subprocess.Popen(
        cli(workdir, **{"train.num_steps": 100_000, "train.checkpoint_every": 100_000, "train.eval_every": 100_000}),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        lock_file = os.path.join(workdir, ".lock")
        deadline = time.monotonic() + 120
        while not (os.path.exists(lock_file) and os.path.getsize(lock_file) > 0):
            assert first.poll() is None and time.monotonic() < deadline, "first run never took the lock"
            time.sleep(0.05)
        second = subprocess.run(cli(workdir), cwd=REPO, capture_output=True, text=True, timeout=120)
        assert first.poll() is None, "the first run must still be running"
    finally:
        first.kill()
        first.wait()
    assert second.returncode != 0
    assert "WorkdirLockedError" in second.stderr
    assert "is in use by another run" in second.stderr
    assert f'"pid": {first.pid}' in second.stderr
    assert not checkpoint_steps(workdir)  # the refused run wrote nothing


def test_lock_names_holder_and_is_released(tmp_path):
    # flock locks belong to an open file, so a second lock in the same process conflicts like another process.
    config = tiny_config()
    with Workdir(tmp_path, config):
        with pytest.raises(WorkdirLockedError, match=rf'in use by another run \(\{{"pid": {os.getpid()}, '):
            Workdir(tmp_path, config).__enter__()
    with Workdir(tmp_path, config):  # released on exit: can be taken again
        pass


def _corrupt_arrays(step_dir) -> None:
    files = glob.glob(os.path.join(step_dir, "params", "ocdbt.process_0", "d", "*"))
    assert files, f"no array files under {step_dir}"
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as f:
        f.write(np.random.default_rng(0).bytes(os.path.getsize(largest)))


def test_corrupted_newest_checkpoint_falls_back_to_previous(tmp_path, baseline, caplog):
    workdir = str(tmp_path / "copy")
    shutil.copytree(baseline, workdir)
    os.remove(os.path.join(workdir, "summary.json"))
    steps = checkpoint_steps(workdir)
    assert steps[-1] == 12 and len(steps) >= 2
    _corrupt_arrays(os.path.join(workdir, "checkpoints", "12"))
    with pytest.raises(
        checkpoint.CheckpointError, match=r"checkpoint step 12 in .* cannot be read .*older step \(10\)"
    ):
        checkpoint.load_params(workdir, 12)

    with caplog.at_level(logging.WARNING):
        summary = train_and_evaluate(tiny_config(**LONGER), workdir)
    assert "checkpoints/12 could not be restored" in caplog.text and "falling back to the previous" in caplog.text
    # The broken step is kept for inspection, out of the way; the rerun wrote step 12 again from step 10.
    assert os.path.isdir(os.path.join(workdir, "broken_checkpoints", "12"))
    assert checkpoint_steps(workdir)[-1] == 12
    assert_params_equal(baseline, workdir, 12)
    with open(os.path.join(baseline, "summary.json")) as f:
        assert summary["test_rel_l2"] == json.load(f)["test_rel_l2"]


def test_nan_in_a_batch_stops_the_run_naming_step_and_batch(tmp_path, monkeypatch):
    config = tiny_config(**LONGER)
    bad_step = 3  # the first two steps (and the checkpoint of step 2) are clean
    position = int(batch_indices(jnp.int32(bad_step - 1), num=32, batch_size=8, seed=config.seed)[0])
    real = generate.generate_split
    poisoned = {}

    def generate_with_nan(task, seed, split, num, resolution, **kwargs):
        batch = real(task, seed, split, num, resolution, **kwargs)
        if split == "train":
            sample = int(nested_subset(batch["volume_fraction"], config.data.num_train, seed)[position])
            batch = {k: np.array(v) for k, v in batch.items()}
            batch["solution"][sample, 3, 5] = np.nan
            poisoned["sample"] = sample
        return batch

    monkeypatch.setattr(generate, "generate_split", generate_with_nan)
    workdir = str(tmp_path / "nan")
    with pytest.raises(NonFiniteError) as info:
        train_and_evaluate(config, workdir)
    message = str(info.value)
    assert f"non-finite training loss or gradient at step {bad_step} " in message
    samples = json.loads(message.split("batch of train samples ")[1].split(")")[0])
    assert poisoned["sample"] in samples and len(samples) == 8
    assert "last good checkpoint is step 2" in message
    # Nothing after the NaN was written; the last good checkpoint is intact and the lock is free.
    assert checkpoint_steps(workdir) == [2]
    assert np.all(np.isfinite(np.concatenate([np.ravel(x) for x in jax.tree.leaves(checkpoint.load_params(workdir))])))
    assert max(r["step"] for r in metric_lines(workdir)) == 2
    assert not os.path.exists(os.path.join(workdir, "summary.json"))
    with Workdir(workdir, config):  # the lock is free
        pass
