"""Study expansion and the resumable sweep runner, with a fake run function (no training): resume after a crash or
a kill, shards at once on one sweep directory, failures recorded; one real tiny sweep stopped by SIGTERM."""

import importlib
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO

from experiments import study as study_lib
from experiments.configs import base as base_config
from experiments.configs.study_scale import NAMES as SCALE_NAMES
from experiments.sweep import DependencyWait, parse_shard, run_sweep
from fno_jax.config import flat_items
from fno_jax.storage.json_io import write_json_atomic

STUDY_CONFIGS = ("quickstart", "rq1_data_size", "rq2_model_size", "rq3_ood_shift", "rq4_mixed")


def _quickstart(arg="runlocal"):
    return importlib.import_module("experiments.configs.quickstart").get_config(arg)


class FakeRun:
    """Writes summary.json like train_and_evaluate (atomically); optionally raises on the k-th call or for some names,
    or takes `delay_s` seconds (to be killed mid-run)."""

    def __init__(self, fail_on_call=None, fail_if=None, delay_s=0.0):
        self.calls = []
        self.fail_on_call = fail_on_call
        self.fail_if = fail_if
        self.delay_s = delay_s

    def __call__(self, config, workdir):
        self.calls.append(os.path.basename(workdir))
        time.sleep(self.delay_s)
        if self.fail_on_call == len(self.calls):
            raise RuntimeError("simulated crash")
        if self.fail_if and self.fail_if(os.path.basename(workdir)):
            raise RuntimeError("simulated failure")
        if config.init_from:
            # Dependencies are met before a run starts.
            assert os.path.exists(os.path.join(config.init_from, "summary.json"))
        mode = "zeroshot" if config.train.num_steps == 0 else ("finetune" if config.init_from else "scratch")
        n = config.data.num_train
        err = (4.0 if mode != "scratch" else 1.0) * n**-0.5
        summary = {
            "task": config.task,
            "mode": mode,
            "num_train": n,
            "model": {k: config.model[k] for k in ("width", "modes", "depth", "fc_dim")},
            "num_params": 1,
            "test_rel_l2": err,
            "val_rel_l2": err * (1 + config.train.learning_rate),
            "best_step": config.train.num_steps,
            "learning_rate": config.train.learning_rate,
            "steps": config.train.num_steps,
            "wall_s": 0.0,
        }
        os.makedirs(workdir, exist_ok=True)
        write_json_atomic(os.path.join(workdir, "summary.json"), summary)
        return summary


def _lines(sweep_dir):
    with open(os.path.join(sweep_dir, "results.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_interrupted_sweep_resumes_without_redoing_finished_runs(tmp_path):
    study = _quickstart()
    total = len(study_lib.expand_study(study, str(tmp_path)))
    assert total == 11  # pretrain, 2 N x (scratch, finetune) x 1 LR x 2 seeds, zeroshot under 2 statistics rules

    crash = FakeRun(fail_on_call=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_sweep(study, str(tmp_path), run_fn=crash)
    finished_first = crash.calls[:2]
    assert [r["name"] for r in _lines(tmp_path)] == finished_first

    resume = FakeRun()
    records = run_sweep(study, str(tmp_path), run_fn=resume)
    assert len(resume.calls) == total - 2
    assert not set(resume.calls) & set(finished_first)
    names = [r["name"] for r in _lines(tmp_path)]
    assert len(names) == len(set(names)) == total
    assert [r["name"] for r in records] == names

    again = FakeRun()
    run_sweep(study, str(tmp_path), run_fn=again)
    assert again.calls == []
    assert len(_lines(tmp_path)) == total


def test_records_carry_the_sweep_description(tmp_path):
    run_sweep(_quickstart(), str(tmp_path), run_fn=FakeRun())
    records = {r["name"]: r for r in _lines(tmp_path)}
    zeroshot = records["poisson_e5_10-zeroshot-from-poisson-s0"]
    assert (zeroshot["mode"], zeroshot["num_train"], zeroshot["pretrain"]) == ("zeroshot", 0, "poisson")
    assert zeroshot["task_ranges"] == {"eigenvalue_range": [5.0, 10.0]}
    assert records["pretrain-poisson-s0"]["kind"] == "pretrain"
    assert records["poisson_e5_10-scratch-n00008-lr0.001-s1"]["seed"] == 1
    run = json.load(
        open(tmp_path / "runs" / "poisson_e5_10-finetune-from-poisson-n00008-lr0.001-s1" / "sweep_run.json")
    )
    assert run["config"]["init_from"] == str(tmp_path / "runs" / "pretrain-poisson-s0")
    assert run["depends_on"] == ["pretrain-poisson-s0"]
    assert run["config"]["seed"] == 1


def test_changed_study_is_refused_before_any_work(tmp_path):
    run_sweep(_quickstart(), str(tmp_path), run_fn=FakeRun())
    changed = _quickstart()
    changed.pretrain.poisson.overrides.train.num_epochs = 5
    fake = FakeRun()
    with pytest.raises(ValueError, match="different run config"):
        run_sweep(changed, str(tmp_path), run_fn=fake)
    assert fake.calls == []


def test_shards_split_the_runs_and_wait_for_foreign_dependencies(tmp_path):
    study = _quickstart()
    runs = study_lib.expand_study(study, str(tmp_path))
    names = [r.name for r in runs]
    # Shard 1 does its runs in order up to its first fine-tuning run, whose pretraining run belongs to shard 0 and
    # has not run yet: it gives up waiting there.
    mine = runs[1::2]
    blocked = next(i for i, r in enumerate(mine) if r.depends_on)
    assert "pretrain-poisson-s0" in names[0::2] and blocked >= 1
    early, first, second = FakeRun(), FakeRun(), FakeRun()
    with pytest.raises(TimeoutError, match="pretraining"):
        run_sweep(study, str(tmp_path), run_fn=early, shard=(1, 2), wait=DependencyWait(timeout_s=0.0, poll_s=0.01))
    assert early.calls == [r.name for r in mine[:blocked]]
    run_sweep(study, str(tmp_path), run_fn=first, shard=(0, 2))
    run_sweep(study, str(tmp_path), run_fn=second, shard=(1, 2), wait=DependencyWait(poll_s=0.01))
    assert first.calls == names[0::2]
    assert second.calls == [r.name for r in mine[blocked:]]
    assert sorted(early.calls + first.calls + second.calls) == sorted(names)
    assert len(_lines(tmp_path)) == len(names)


def test_only_selects_runs_and_their_dependencies(tmp_path):
    fake = FakeRun()
    run_sweep(_quickstart(), str(tmp_path), run_fn=fake, only="finetune.*n00008.*-s0")
    assert fake.calls == ["pretrain-poisson-s0", "poisson_e5_10-finetune-from-poisson-n00008-lr0.001-s0"]
    with pytest.raises(ValueError, match="matches no run"):
        run_sweep(_quickstart(), str(tmp_path), run_fn=fake, only="no-such-run")


def _failures(sweep_dir):
    path = os.path.join(sweep_dir, "failures.jsonl")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {r["name"]: r for r in map(json.loads, f)}


def test_keep_going_skips_dependents_of_a_failed_run_and_records_every_failure(tmp_path):
    fake = FakeRun(fail_if=lambda name: name.startswith("pretrain"))
    with pytest.raises(RuntimeError, match="7 run\\(s\\) failed \\(recorded in .*failures.jsonl"):
        run_sweep(_quickstart(), str(tmp_path), run_fn=fake, keep_going=True)
    # The pretraining run failed; its 4 fine-tuning + 2 zero-shot runs were skipped, the 4 scratch runs ran.
    assert sorted(r["mode"] for r in _lines(tmp_path)) == ["scratch"] * 4
    failures = _failures(tmp_path)
    assert len(failures) == 7
    assert failures["pretrain-poisson-s0"]["error"] == "RuntimeError: simulated failure"
    assert failures["poisson_e5_10-zeroshot-from-poisson-s0"]["error"].startswith("skipped: depends on failed")
    # Fixed and run again: every run finishes and the failures are gone.
    run_sweep(_quickstart(), str(tmp_path), run_fn=FakeRun())
    assert len(_lines(tmp_path)) == 11 and _failures(tmp_path) == {}


def test_a_failure_in_another_shard_is_not_waited_for(tmp_path):
    study = _quickstart()
    fail_pretraining = FakeRun(fail_if=lambda name: name.startswith("pretrain"))
    with pytest.raises(RuntimeError, match="failed"):
        run_sweep(study, str(tmp_path), run_fn=fail_pretraining, shard=(0, 2), keep_going=True)
    # Shard 1 would wait a week for the pretraining run; it sees the failure and skips its dependents at once.
    other = FakeRun()
    with pytest.raises(RuntimeError, match="failed"):
        run_sweep(study, str(tmp_path), run_fn=other, shard=(1, 2), keep_going=True, wait=DependencyWait(poll_s=60))
    assert all("scratch" in name for name in other.calls)
    shard_one_zeroshot = "poisson_e5_10-zeroshot-pretrainstats-from-poisson-s0"
    assert "which failed in another shard" in _failures(tmp_path)[shard_one_zeroshot]["error"]
    # Without keep_going the shard stops there.
    with pytest.raises(RuntimeError, match="which failed in another shard"):
        run_sweep(study, str(tmp_path), run_fn=FakeRun(), shard=(1, 2), wait=DependencyWait(poll_s=60))


# A sweep in its own process, with FakeRun: sys.argv = [sweep_dir, shard, delay_s].
_SWEEP = r"""
import sys
sys.path.insert(0, "tests")
from test_sweep import FakeRun, _quickstart
from experiments.sweep import DependencyWait, parse_shard, run_sweep

sweep_dir, shard, delay_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
run_sweep(_quickstart(), sweep_dir, run_fn=FakeRun(delay_s=delay_s), shard=parse_shard(shard),
          wait=DependencyWait(poll_s=0.01))
"""


def _results_bytes(sweep_dir) -> bytes:
    with open(os.path.join(sweep_dir, "results.jsonl"), "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The quickstart sweep (runlocal, FakeRun) in one process, uninterrupted."""
    sweep_dir = tmp_path_factory.mktemp("uninterrupted")
    run_sweep(_quickstart(), str(sweep_dir), run_fn=FakeRun())
    return sweep_dir


def test_killed_sweep_run_again_equals_an_uninterrupted_one(tmp_path, uninterrupted):
    sweep_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", _SWEEP, str(sweep_dir), "", "0.3"], cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while len(list((sweep_dir / "runs").glob("*/summary.json"))) < 3:  # killed during its fourth run
            assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before it was killed"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert len(_lines(sweep_dir)) < 10
    rerun = FakeRun()
    run_sweep(_quickstart(), str(sweep_dir), run_fn=rerun)
    assert 0 < len(rerun.calls) <= 8  # the finished runs were skipped
    assert _results_bytes(sweep_dir) == _results_bytes(uninterrupted)


def test_two_shards_at_once_on_one_sweep_dir_write_what_one_process_writes(tmp_path, uninterrupted):
    sweep_dir = tmp_path / "sharded"
    shards = [
        subprocess.Popen(
            [sys.executable, "-c", _SWEEP, str(sweep_dir), f"{i}/2", "0.05"], cwd=REPO, stderr=subprocess.PIPE
        )
        for i in range(2)
    ]
    for proc in shards:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-3000:]
    assert _results_bytes(sweep_dir) == _results_bytes(uninterrupted)
    for name in ("plan.json", "study.json"):  # whole, the same but for the sweep's own path in init_from
        here = (sweep_dir / name).read_text().replace(str(sweep_dir), "SWEEP_DIR")
        assert here == (uninterrupted / name).read_text().replace(str(uninterrupted), "SWEEP_DIR")
    assert not (sweep_dir / "failures.jsonl").exists()
    assert not list(sweep_dir.glob(".*.tmp"))  # no temporary file left behind


def test_parse_shard():
    assert parse_shard("") == (0, 1)
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "a/b", "1", "-1/2"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


@pytest.mark.parametrize("module", STUDY_CONFIGS)
def test_every_study_config_expands_to_base_keys_only(module, tmp_path):
    config_module = importlib.import_module(f"experiments.configs.{module}")
    reference = set(flat_items(base_config.get_config()))
    # One scale mechanism: every study config takes every scale name, and the paper's scale when none is named.
    assert {"", *SCALE_NAMES} <= set(config_module.ARGS) and set(SCALE_NAMES) == {"runlocal", "cpu", "gpu_minutes"}
    # Every scale, and every other option at the smallest scale (options and scales combine independently).
    args = [a for a in config_module.ARGS if a in ("", *SCALE_NAMES) or a.endswith(",runlocal")]
    for arg in args:
        runs = study_lib.expand_study(config_module.get_config(arg), str(tmp_path))
        names = {r.name for r in runs}
        assert len(names) == len(runs)
        before: set[str] = set()
        for run in runs:
            assert set(flat_items(run.config)) == reference, run.name
            assert run.config.is_locked
            # Dependencies come first, so running the list in order meets them.
            assert set(run.depends_on) <= before
            before.add(run.name)
            if run.meta["mode"] == "zeroshot":
                assert run.config.train.num_steps == 0 and run.config.init_from
            if run.meta["mode"] == "finetune":
                assert study_lib.num_steps_of(run.config) > 0 and run.config.init_from
            if run.meta["mode"] == "scratch":
                assert run.config.init_from == ""
            assert 1 <= run.config.train.batch_size <= run.config.data.num_train
            assert 2 * run.config.model.modes <= run.config.data.resolution


def test_paper_scale_configs_match_the_paper():
    rq1 = importlib.import_module("experiments.configs.rq1_data_size").get_config("")
    assert rq1.base.data.resolution == 128
    assert (rq1.base.model.width, rq1.base.model.modes, rq1.base.model.fc_dim) == (64, 32, 128)
    assert rq1.pretrain.poisson.overrides.data.num_train == 32768
    assert rq1.downstream.poisson.num_train == tuple(2**k for k in range(1, 16))
    rq2 = importlib.import_module("experiments.configs.rq2_model_size").get_config("")
    counts = [study_lib.fno_num_params(w, m, fc_dim=2 * w) for w, m in rq2.models]
    assert 60_000 < min(counts) < 70_000 and 250e6 < max(counts) < 270e6


def test_unknown_override_key_is_an_error(tmp_path):
    study = _quickstart()
    study.pretrain.poisson.overrides.train.lerning_rate = 1e-3
    with pytest.raises(ValueError, match="unknown run-config key 'train.lerning_rate'"):
        study_lib.expand_study(study, str(tmp_path))


def test_num_params_formula_matches_the_model():
    import jax
    import jax.numpy as jnp

    from fno_jax import FNO

    assert study_lib.fno_num_params(64, 32, depth=4, fc_dim=128, in_channels=4) == 67_134_273
    for width, modes, depth, fc_dim, channels in ((8, 4, 2, 16, 4), (6, 3, 3, 10, 7)):
        model = FNO(width=width, modes=modes, depth=depth, fc_dim=fc_dim)
        shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, channels)))
        count = sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes))
        assert count == study_lib.fno_num_params(width, modes, depth, fc_dim, in_channels=channels)


def test_results_are_rebuilt_under_the_sweep_lock(tmp_path):
    """A rebuild of results.jsonl waits while another process holds SWEEP_DIR/.sweep.lock (flock)."""
    import fcntl
    import threading

    from experiments.sweep import collect_results

    runs = study_lib.expand_study(_quickstart(), str(tmp_path))
    FakeRun()(runs[0].config, study_lib.run_workdir(str(tmp_path), runs[0].name))
    with open(tmp_path / ".sweep.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another open file: conflicts like another process
        rebuild = threading.Thread(target=collect_results, args=(runs, str(tmp_path)))
        rebuild.start()
        rebuild.join(timeout=0.5)
        assert rebuild.is_alive() and not (tmp_path / "results.jsonl").exists()
    rebuild.join(timeout=10)
    assert [r["name"] for r in _lines(tmp_path)] == [runs[0].name]


@pytest.mark.slow
def test_real_sweep_stopped_by_sigterm_resumes_to_the_uninterrupted_results(tmp_path, monkeypatch):
    """A real tiny run (the quickstart's pretraining run): SIGTERM during it stops the sweep with `Preempted` at a
    checkpoint; the same sweep again resumes that run and ends with the uninterrupted results."""
    from fno_jax.runtime.preemption import Preempted
    from fno_jax.training import trainer as train_lib

    only = "^pretrain"
    run_sweep(_quickstart(), str(tmp_path / "uninterrupted"), only=only)

    class SigtermAtStep5(train_lib.Progress):
        def update(self, step, **kwargs):
            if step == 5:
                os.kill(os.getpid(), signal.SIGTERM)
            super().update(step, **kwargs)

    sweep_dir = tmp_path / "stopped"
    monkeypatch.setattr(train_lib, "Progress", SigtermAtStep5)
    with pytest.raises(Preempted) as info:
        run_sweep(_quickstart(), str(sweep_dir), only=only, keep_going=True)  # keep_going does not swallow it
    assert (info.value.step, info.value.exit_code) == (5, 143)
    assert _lines(sweep_dir) == [] and not (sweep_dir / "failures.jsonl").exists()
    monkeypatch.undo()
    run_sweep(_quickstart(), str(sweep_dir), only=only)

    def comparable(sweep):
        records = _lines(sweep)
        for r in records:
            for key in ("wall_s", "compile_s"):  # wall-clock, not results
                r.pop(key)
        return json.loads(json.dumps(records).replace(str(sweep), "SWEEP_DIR"))

    assert comparable(sweep_dir) == comparable(tmp_path / "uninterrupted")
    assert [r["name"] for r in _lines(sweep_dir)] == ["pretrain-poisson-s0"]


def test_runs_that_differ_only_in_seed_and_rate_are_packed(tmp_path):
    # quickstart:runlocal: per (N, mode) its 2 seeds x 1 rate share a shape; pretraining and zero-shot run alone.
    run, packs = FakeRun(), []

    def pack(configs, workdirs):
        packs.append(sorted(os.path.basename(w) for w in workdirs))
        assert len({(c.data.num_train, bool(c.init_from)) for c in configs}) == 1
        return [run(c, w) for c, w in zip(configs, workdirs, strict=True)]

    records = run_sweep(_quickstart(), str(tmp_path), run_fn=run, pack_fn=pack)
    assert len(records) == 11 and len(packs) == 4 and all(len(p) == 2 for p in packs)
    singles = set(run.calls) - {name for p in packs for name in p}
    zeroshot = {"poisson_e5_10-zeroshot-from-poisson-s0", "poisson_e5_10-zeroshot-pretrainstats-from-poisson-s0"}
    assert singles == {"pretrain-poisson-s0", *zeroshot}
    # study.pack = False: one at a time, same results.
    study = _quickstart()
    study.pack = False
    again = run_sweep(study, str(tmp_path / "unpacked"), run_fn=FakeRun(), pack_fn=pack)
    assert len(packs) == 4 and [r["test_rel_l2"] for r in again] == [r["test_rel_l2"] for r in records]


def test_finished_runs_of_another_sweep_are_reused_not_trained_again(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    run_sweep(_quickstart(), str(first), run_fn=FakeRun())
    again = FakeRun()
    records = run_sweep(_quickstart(), str(second), run_fn=again, reuse_from=[str(first)])
    # Pretraining and scratch runs (they start from nothing) were copied; every fine-tuned or zero-shot run trained
    # here, from this sweep's copy of the pretrained model.
    assert again.calls and all("finetune" in name or "zeroshot" in name for name in again.calls)
    assert os.path.exists(second / "runs" / "pretrain-poisson-s0" / "summary.json")
    assert len(records) == len(_lines(first))
    # A run of another config is not taken for this one.
    other = _quickstart()
    other.base.data.num_val = 8
    third = FakeRun()
    run_sweep(other, str(tmp_path / "third"), run_fn=third, reuse_from=[str(first)])
    assert "pretrain-poisson-s0" in third.calls


def test_reuse_matches_runs_by_config_under_any_name(tmp_path):
    first = tmp_path / "first"
    run_sweep(_quickstart(), str(first), run_fn=FakeRun())
    os.rename(first / "runs" / "pretrain-poisson-s0", first / "runs" / "pretrain-named-otherwise")
    again = FakeRun()
    run_sweep(_quickstart(), str(tmp_path / "second"), run_fn=again, reuse_from=[str(first)])
    assert "pretrain-poisson-s0" not in again.calls
    assert os.path.exists(tmp_path / "second" / "runs" / "pretrain-poisson-s0" / "summary.json")
