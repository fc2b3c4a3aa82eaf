"""Study expansion and the resumable sweep runner, with a fake run function (no training)."""

import importlib
import json
import math
import os

import pytest

from experiments import study as study_lib
from experiments.configs import base as base_config
from experiments.configs.study_scale import NAMES as SCALE_NAMES
from experiments.sweep import parse_shard, run_sweep
from fno_jax.config import flat_items

STUDY_CONFIGS = ("quickstart", "rq1_data_size", "rq2_model_size", "rq3_ood_shift", "rq4_mixed")


def _quickstart(arg="runlocal"):
    return importlib.import_module("experiments.configs.quickstart").get_config(arg)


class FakeRun:
    """Writes summary.json like train_and_evaluate; optionally raises on the k-th call or for some names."""

    def __init__(self, fail_on_call=None, fail_if=None):
        self.calls = []
        self.fail_on_call = fail_on_call
        self.fail_if = fail_if

    def __call__(self, config, workdir):
        self.calls.append(os.path.basename(workdir))
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
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f)
        return summary


def _lines(sweep_dir):
    with open(os.path.join(sweep_dir, "results.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_interrupted_sweep_resumes_without_redoing_finished_runs(tmp_path):
    study = _quickstart()
    total = len(study_lib.expand_study(study, str(tmp_path)))
    assert total == 10  # pretrain, 2 N x (scratch, finetune) x 1 LR x 2 seeds, zeroshot

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
        run_sweep(study, str(tmp_path), run_fn=early, shard=(1, 2), dependency_timeout_s=0.0, poll_s=0.01)
    assert early.calls == [r.name for r in mine[:blocked]]
    run_sweep(study, str(tmp_path), run_fn=first, shard=(0, 2))
    run_sweep(study, str(tmp_path), run_fn=second, shard=(1, 2), poll_s=0.01)
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


def test_keep_going_skips_dependents_of_a_failed_run(tmp_path):
    fake = FakeRun(fail_if=lambda name: name.startswith("pretrain"))
    with pytest.raises(RuntimeError, match="6 run\\(s\\) failed"):
        run_sweep(_quickstart(), str(tmp_path), run_fn=fake, keep_going=True)
    # The pretraining run failed; its 4 fine-tuning + 1 zero-shot runs were skipped, the 4 scratch runs ran.
    assert sorted(r["mode"] for r in _lines(tmp_path)) == ["scratch"] * 4


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
