"""Faults during a run: kill -9 and resume, SIGTERM/SIGINT, a corrupted newest checkpoint, a full disk, NaN in the
data, two runs on one workdir.

Every run here is the tiny run of tests/conftest.py, 12 steps long with a checkpoint every 2 (the preemption tests:
long enough to be interrupted, with no periodic checkpoint before the end). The subprocesses share the suite's
persistent XLA compilation cache, so only the first one pays for compilation.
"""

import errno
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
from fno_jax.runtime.preemption import Preempted
from fno_jax.storage import workdir as workdir_lib
from fno_jax.storage.workdir import Workdir, WorkdirLockedError
from fno_jax.train import NonFiniteError, train_and_evaluate
from fno_jax.training import trainer as train_lib

pytestmark = pytest.mark.slow
# The tiny run, longer and with checkpoints every 2 steps: the smallest run that still checkpoints, evaluates and
# resumes with several checkpoints to fall back on.
LONGER = {"train.num_steps": 12, "train.checkpoint_every": 2, "train.eval_every": 4, "train.log_every": 1}


def cli(workdir, **overrides) -> list[str]:
    return [sys.executable, *main_cli(workdir, *(f"--config.{k}={v}" for k, v in {**LONGER, **overrides}.items()))]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """An uninterrupted 12-step run, in this process (the CLI runs the same config: `cli` below)."""
    workdir = tmp_path_factory.mktemp("baseline")
    train_and_evaluate(tiny_config(**LONGER), str(workdir))
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


def test_kill9_after_first_checkpoint_then_resume_is_bitwise_exact(tmp_path, baseline, caplog):
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

    # The same run again (here in this process; the CLI runs the same config): resumes (the dead run's lock is gone
    # with it) and ends where the uninterrupted run did.
    with caplog.at_level(logging.INFO):
        train_and_evaluate(tiny_config(**LONGER), workdir)
    assert f"resuming {workdir} from step" in caplog.text
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
        with pytest.raises(WorkdirLockedError, match=rf'is in use by another run \(\{{"pid": {first.pid}, '):
            train_and_evaluate(tiny_config(**LONGER), workdir)  # a second run (in this process)
        assert first.poll() is None, "the first run must still be running"
    finally:
        first.kill()
        first.wait()
    assert not checkpoint_steps(workdir)  # the refused run wrote nothing


def test_lock_names_holder_and_is_released(tmp_path):
    # flock locks belong to an open file, so a second lock in the same process conflicts like another process.
    config = tiny_config()
    with Workdir(tmp_path, config):
        with pytest.raises(WorkdirLockedError, match=rf'in use by another run \(\{{"pid": {os.getpid()}, '):
            Workdir(tmp_path, config).__enter__()
    with Workdir(tmp_path, config):  # released on exit: can be taken again
        pass


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS])
def test_a_filesystem_without_flock_runs_unlocked_with_a_warning(tmp_path, monkeypatch, caplog, code):
    # Lustre mounted without -o flock (and some NFS set-ups) fail flock with ENOLCK / EOPNOTSUPP / ENOSYS: the run
    # goes ahead and says, naming the lock file, that the lock is not enforced.
    def no_flock(f, operation):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(workdir_lib.fcntl, "flock", no_flock)
    with caplog.at_level(logging.WARNING), Workdir(tmp_path, tiny_config()):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()  # the holder, for people
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(tmp_path / ".lock") in warning and "NOT enforced" in warning


@pytest.mark.parametrize(
    ("error", "expected"),
    [(BlockingIOError(errno.EAGAIN, "held"), WorkdirLockedError), (OSError(errno.EIO, "I/O error"), OSError)],
)
def test_a_held_lock_or_another_lock_error_still_stops_the_run(tmp_path, monkeypatch, error, expected):
    def failing_flock(f, operation):
        raise error

    monkeypatch.setattr(workdir_lib.fcntl, "flock", failing_flock)
    with pytest.raises(expected):
        Workdir(tmp_path, tiny_config()).__enter__()


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


# ---- SIGTERM / SIGINT -------------------------------------------------------------------------------------------

# Long enough to be signalled mid-way; no checkpoint or evaluation is due before the last step.
UNTIL_THE_END = {
    "train.num_steps": 600,
    "train.checkpoint_every": 100_000,
    "train.eval_every": 100_000,
    "train.log_every": 50,
}


def test_sigterm_saves_the_step_reached_exits_143_and_the_same_command_resumes_bitwise(tmp_path):
    workdir = str(tmp_path / "run")
    command = cli(workdir, **UNTIL_THE_END)
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        metrics = os.path.join(workdir, "metrics.jsonl")
        deadline = time.monotonic() + 240
        while not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):  # training is under way
            assert proc.poll() is None, f"run ended before training: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.01)
        assert checkpoint_steps(workdir) == []
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        _, stderr = proc.communicate(timeout=60)
        stopped_s = time.monotonic() - signalled
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 143, stderr[-3000:]
    assert stopped_s < 60
    steps = checkpoint_steps(workdir)
    assert len(steps) == 1 and 50 <= steps[0] < 600, steps  # the step reached: none was due
    assert f"preempted at step {steps[0]}; run the same command to resume" in stderr
    assert not os.path.exists(os.path.join(workdir, "summary.json"))

    # Same command again: resumes from the saved step and ends with the uninterrupted run's params.
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming {workdir} from step {steps[0]}" in done.stderr
    baseline = str(tmp_path / "baseline")
    summary = train_and_evaluate(tiny_config(**{**LONGER, **UNTIL_THE_END}), baseline)
    assert_params_equal(baseline, workdir, 600)
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f)["test_rel_l2"] == summary["test_rel_l2"]


def test_sigint_raises_preempted_carrying_the_signal_after_saving_the_step(tmp_path, monkeypatch):
    workdir = str(tmp_path / "run")
    config = tiny_config(**{**LONGER, **UNTIL_THE_END, "train.num_steps": 100})

    class CtrlCAtStep7(train_lib.Progress):
        def update(self, step, **kwargs):
            if step == 7:
                os.kill(os.getpid(), signal.SIGINT)  # handled before the loop asks whether to stop
            super().update(step, **kwargs)

    monkeypatch.setattr(train_lib, "Progress", CtrlCAtStep7)
    original = signal.getsignal(signal.SIGINT)
    with pytest.raises(Preempted) as info:
        train_and_evaluate(config, workdir)
    stop = info.value
    assert (stop.signum, stop.step, stop.exit_code) == (signal.SIGINT, 7, 130)
    assert checkpoint_steps(workdir) == [7]
    assert "preempted at step 7; run the same command to resume" in str(stop)
    assert not isinstance(stop, Exception)  # `except Exception` (a sweep's keep_going) never swallows it
    assert signal.getsignal(signal.SIGINT) is original  # the handlers are restored
    # The steps since the last record are logged; resuming starts after step 7.
    assert [r["step"] for r in metric_lines(workdir)] == [7]
    monkeypatch.undo()
    train_and_evaluate(config, workdir)
    assert [r["step"] for r in metric_lines(workdir)] == [7, 50, 100]


def test_a_save_that_times_out_says_so_and_how_to_resume(tmp_path, monkeypatch):
    """Orbax gives up on a save past its deadline (seen when a sweep was stopped with SIGSTOP for ten minutes
    mid-save): the error names the directory, says the save timed out and that the same command resumes."""
    ckpt = checkpoint.Checkpointer(str(tmp_path))

    def timed_out():
        raise TimeoutError("ChainedFuture completed 2/6 futures but timed out after 0.00 seconds.")

    monkeypatch.setattr(ckpt.manager, "wait_until_finished", timed_out)
    with pytest.raises(checkpoint.CheckpointWriteError) as info:
        ckpt.wait()
    message = str(info.value)
    assert f"cannot write a checkpoint in {tmp_path}/checkpoints (TimeoutError: ChainedFuture" in message
    assert "none was complete. The save did not finish in time" in message
    assert message.endswith("Run the same command again to resume.") and "disk is full" not in message


# ---- a full disk --------------------------------------------------------------------------------------------------


def test_full_disk_during_a_checkpoint_names_the_path_and_the_previous_one_resumes(tmp_path, monkeypatch, baseline):
    """From step 6 on every checkpoint write fails with ENOSPC (injected into orbax's JSON writer, which runs in the
    background save thread like the array writes); the run stops naming the directory, step 4 stays usable, and once
    there is space the same run resumes from it to the uninterrupted params."""
    import errno
    import re

    import orbax.checkpoint as ocp

    write_json = ocp.JsonCheckpointHandler._save_fn

    async def disk_full_from_step_6(self, x, directory):
        if int(re.search(r"checkpoints/(\d+)\.", str(directory))[1]) >= 6:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
        return await write_json(self, x, directory)

    monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", disk_full_from_step_6)
    workdir = str(tmp_path / "full")
    config = tiny_config(**LONGER)
    with pytest.raises(checkpoint.CheckpointWriteError) as info:
        train_and_evaluate(config, workdir)
    message = str(info.value)
    assert f"cannot write a checkpoint in {workdir}/checkpoints" in message and "No space left on device" in message
    assert "the newest complete checkpoint, step 4, is intact" in message
    assert checkpoint_steps(workdir) == [2, 4]
    assert checkpoint.load_params(workdir) is not None  # readable
    assert not os.path.exists(os.path.join(workdir, "summary.json"))

    monkeypatch.undo()  # space again
    train_and_evaluate(config, workdir)
    assert_params_equal(baseline, workdir, 12)
