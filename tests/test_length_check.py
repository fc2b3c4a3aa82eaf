"""The length check, end to end with a fake run function: which runs a study doubles, the learning rate each doubled
run takes (its seed's choice, again when the grid grows), and the report's verdict on the change."""

import importlib
import json
import os

import pytest
from test_sweep import FakeRun

from experiments import study as study_lib
from experiments.report import build_report
from experiments.sweep import run_sweep
from fno_jax.storage.json_io import write_json_atomic


def _rq1(*, rates=(1e-3, 3e-3), finetune_rates=(1e-4, 3e-4)):
    study = importlib.import_module("experiments.configs.rq1_data_size").get_config("poisson,runlocal")
    study.length_check = True
    study.pretrain_seeds = 2
    group = study.downstream.poisson
    group.learning_rates = tuple(rates)
    group.finetune_learning_rates = tuple(finetune_rates)
    return study


class StepDependentRun(FakeRun):
    """FakeRun whose test error falls as steps**-power: doubling a run changes it by 2**-power - 1; the validation
    error prefers the rate `best_lr` (the largest otherwise)."""

    def __init__(self, power, best_lr=None):
        super().__init__()
        self.power, self.best_lr = power, best_lr

    def __call__(self, config, workdir):
        summary = super().__call__(config, workdir)
        steps = config.train.num_steps
        if steps <= 0:  # a run length in epochs: whole batches per epoch
            n = config.data.num_train
            steps = config.train.num_epochs * (n // min(n, config.train.batch_size))
        summary["test_rel_l2"] *= steps**-self.power * (1.0 + config.seed)  # seeds differ
        lr = config.train.learning_rate
        summary["val_rel_l2"] = 1.0 / (1.0 + lr) if lr != self.best_lr else 1e-3
        write_json_atomic(os.path.join(workdir, "summary.json"), summary)
        return summary


def _summary(sweep, name):
    with open(os.path.join(sweep, "runs", name, "summary.json")) as f:
        return json.load(f)


def test_the_study_doubles_every_pretraining_seed_and_the_smallest_and_largest_n_of_each_mode():
    runs = study_lib.expand_study(_rq1(), "/tmp/unused-sweep")
    checks = [r for r in runs if r.meta.get("length_check")]
    by_name = {r.name: r for r in runs}
    pretrain = [r for r in checks if r.meta["kind"] == "pretrain"]
    assert [r.name for r in pretrain] == ["pretrain-poisson-s0-x2", "pretrain-poisson-s1-x2"]
    for r in pretrain:
        base = by_name[r.name.removesuffix("-x2")]
        assert r.meta["num_steps"] == 2 * base.meta["num_steps"] and r.config.train.num_steps > 0
        assert r.config.seed == base.config.seed
    downstream = [r for r in checks if r.meta["kind"] == "downstream"]
    sizes = sorted({r.meta["num_train"] for r in runs if r.meta["kind"] == "downstream" and r.meta["num_train"]})
    assert {(r.meta["mode"], r.meta["num_train"]) for r in downstream} == {
        (mode, n) for mode in ("scratch", "finetune") for n in (sizes[0], sizes[-1])
    }
    for r in downstream:
        grid = [by_name[name] for name in r.select_lr_from]
        rates = _rq1().downstream.poisson[
            "finetune_learning_rates" if r.meta["mode"] == "finetune" else "learning_rates"
        ]
        assert sorted(g.config.train.learning_rate for g in grid) == sorted(rates)  # the seed's whole grid
        assert {g.meta["seed"] for g in grid} == {r.meta["seed"]} and {g.meta["num_train"] for g in grid} == {
            r.meta["num_train"]
        }
        assert r.meta["num_steps"] == 2 * grid[0].meta["num_steps"]
        assert set(r.select_lr_from) <= set(r.depends_on)  # runs only after its grid


@pytest.mark.parametrize("power, within", [(0.1, True), (0.3, False)])
def test_the_report_sets_each_doubled_run_beside_what_it_reports(tmp_path, power, within):
    run_sweep(_rq1(), str(tmp_path), run_fn=StepDependentRun(power))
    report = build_report(str(tmp_path), plots=False)
    checks = report["length_check"]
    assert {c["kind"] for c in checks} == {"pretrain", "downstream"} and len(checks) == 5
    (pretrain,) = [c for c in checks if c["kind"] == "pretrain"]
    assert pretrain["seeds"] == [0, 1]  # the median over both pretraining seeds, and over their doubled runs
    values = [_summary(str(tmp_path), f"pretrain-poisson-s{seed}")["test_rel_l2"] for seed in (0, 1)]
    assert pretrain["test_rel_l2"] == pytest.approx((values[0] + values[1]) / 2) and values[0] != values[1]
    for c in checks:
        # steps are doubled exactly (the 200-step floor doubles too), so the fake error changes by 2**-power - 1
        assert c["relative_change"] == pytest.approx(2**-power - 1, rel=1e-6), c
        assert c["within_tolerance"] is within


def test_a_doubled_run_follows_its_seeds_choice_when_the_grid_grows(tmp_path):
    sweep = str(tmp_path)
    run_sweep(_rq1(), sweep, run_fn=StepDependentRun(0.1))  # every seed chooses its grid's largest rate
    x2 = [name for name in os.listdir(os.path.join(sweep, "runs")) if name.endswith("-x2") and "scratch" in name]
    assert x2
    assert {_summary(sweep, name)["learning_rate"] for name in x2} == {3e-3}

    # A wider grid whose new rate every seed's validation prefers: the doubled scratch runs run again at it.
    again = StepDependentRun(0.1, best_lr=1e-2)
    run_sweep(_rq1(rates=(1e-3, 3e-3, 1e-2)), sweep, run_fn=again)
    rerun = {name for name in again.calls if name.endswith("-x2")}
    assert {name for name in rerun if "scratch" in name} == set(x2)
    assert not {name for name in rerun if "finetune" in name}  # their grid did not change
    assert {_summary(sweep, name)["learning_rate"] for name in x2} == {1e-2}
    stale = os.listdir(os.path.join(sweep, "stale"))
    assert sorted(stale) == sorted(f"{name}-lr0.003" for name in x2)
