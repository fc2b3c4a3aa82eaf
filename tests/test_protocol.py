"""The paper's protocol as the studies expand it: what a study trains is what the paper trained (docs/FIDELITY.md).

Each test fails if a difference to the paper's released code comes back: the schedule, the LR grid, the split sizes,
the evaluation cadence and checkpoint choice, the head width, the normalization statistics of zero-shot runs; and
the study's own rules: seeds, data seeds, the mixture's composition, the dry-run plan and the cpu scale's budget.
"""

import functools
import importlib
import json
import os
import subprocess
import sys
from collections import defaultdict

import pytest

from experiments import plan as plan_lib
from experiments import study as study_lib
from experiments.configs import study_scale
from experiments.sweep import dry_run, work_units
from fno_jax.config import flat_items

STUDIES = (
    "quickstart",
    "rq1_data_size",
    "rq2_model_size",
    "rq3_ood_shift",
    "rq4_mixed",
    "rq5_finetune_modes",
    "rq6_darcy_transfer",
)
# config/sweep_config.yaml of the paper's code.
PAPER_LRS = (1e-5, 5e-5, 1e-4, 5e-4, 1e-3)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _study(module: str, arg: str = ""):
    return importlib.import_module(f"experiments.configs.{module}").get_config(arg)


@functools.cache
def _expanded(module: str, arg: str) -> tuple:
    return tuple(study_lib.expand_study(_study(module, arg), "/tmp/fno-study"))


def _runs(module: str, arg: str = "") -> list:
    """The runs of a study config (expanded once per test process: expansion is deterministic)."""
    return list(_expanded(module, arg))


def _downstream(runs, mode=None):
    return [r for r in runs if r.meta["kind"] == "downstream" and (mode is None or r.meta["mode"] == mode)]


def test_epoch_schedule_formula_drops_the_last_partial_batch():
    for n in (2, 3, 100, 127, 128, 129, 255, 1000, 32768):
        batch = min(n, 128)
        assert study_lib.epoch_steps(n, batch, 500) == 500 * (n // batch)
    assert study_lib.epoch_steps(129, 128, 500) == 500  # 129 samples at batch 128: one step per epoch
    assert study_lib.epoch_steps(32768, 128, 500) == 128_000
    with pytest.raises(ValueError, match="batch_size <= num_train"):
        study_lib.epoch_steps(8, 16, 500)


def test_paper_schedule_in_the_expanded_run_configs():
    runs = _runs("rq1_data_size", "poisson")
    [pre] = [r for r in runs if r.meta["kind"] == "pretrain"]
    c = pre.config
    assert (c.data.num_train, c.train.batch_size, c.train.num_epochs, c.train.num_steps) == (32768, 128, 500, -1)
    assert study_lib.num_steps_of(c) == pre.meta["num_steps"] == 128_000
    assert c.train.learning_rate == 1e-3
    sizes = set()
    for run in _downstream(runs):
        c, n = run.config, run.meta["num_train"]
        if run.meta["mode"] == "zeroshot":
            assert c.train.num_steps == 0
            continue
        sizes.add(n)
        # The paper's batch rule (min(N, 128)) and 500 epochs with drop-last, no cap at any N.
        assert c.train.batch_size == min(n, 128) and c.data.num_train == n
        assert (c.train.num_epochs, c.train.num_steps) == (500, -1)
        assert study_lib.num_steps_of(c) == run.meta["num_steps"] == 500 * (n // min(n, 128))
    assert sizes == {2**k for k in range(1, 16)}


@pytest.mark.parametrize("module", STUDIES)
def test_paper_lr_grid_for_every_downstream_point_scratch_and_finetuned(module):
    grids = defaultdict(set)
    for run in _downstream(_runs(module)):
        m = run.meta
        # RQ5's adapters (head, LoRA, band) train a few parameters on a grid of their own, a decade higher.
        if m["mode"] != "zeroshot" and m.get("variant", "full") in ("", "full", "full-hybrid", "label-free"):
            key = (m["group"], m["model"]["width"], m["num_train"], m["mode"], m["pretrain"], m.get("variant"))
            grids[(*key, m["seed"])].add(run.config.train.learning_rate)
    # RQ5 compares fine-tuning modes only (RQ1 is its scratch baseline).
    assert {key[3] for key in grids} == ({"finetune"} if module == "rq5_finetune_modes" else {"scratch", "finetune"})
    assert all(tuple(sorted(lrs)) == PAPER_LRS for lrs in grids.values())


@pytest.mark.parametrize("module", STUDIES)
def test_paper_validation_and_test_sets_are_4096(module):
    for run in _runs(module):
        assert (run.config.data.num_val, run.config.data.num_test) == (4096, 4096), run.name


@pytest.mark.parametrize("module", STUDIES)
def test_every_run_validates_each_epoch_and_keeps_the_lowest_validation_loss(module):
    for scale in ("", *study_scale.NAMES):
        for run in _runs(module, scale):
            t = run.config.train
            # 0 = once per epoch; a label-free run has no validation labels: it keeps its lowest validation residual.
            select_by = "val_rel_residual" if t.loss == "residual" else "val_loss"
            assert (t.eval_every, t.select_by) == (0, select_by), run.name
            assert t.max_evals >= 1 and t.matmul_precision == "highest" and run.config.model.init == "torch"


def test_evaluation_cadence_at_the_paper_and_cpu_scales():
    runs = {r.name: r for r in _runs("rq1_data_size", "poisson")}
    pre = runs["pretrain-poisson-s0"]
    assert plan_lib.eval_interval(pre.config) == 256  # one epoch of 32,768 at batch 128
    assert plan_lib.run_cost(pre).num_evals == 500
    small = runs["poisson-scratch-n00002-lr1e-05-s0"]
    assert (plan_lib.eval_interval(small.config), plan_lib.run_cost(small).num_evals) == (1, 500)
    # A cpu-scale run keeps at most train.max_evals evaluations.
    for run in _runs("rq1_data_size", "cpu"):
        if run.meta["mode"] != "zeroshot":
            assert plan_lib.run_cost(run).num_evals <= run.config.train.max_evals == study_scale.CPU.max_evals


def test_zero_shot_is_evaluated_under_both_statistics_rules_on_the_downstream_test_set():
    runs = _runs("rq1_data_size", "poisson,cpu")
    zeroshot = _downstream(runs, "zeroshot")
    # One per pretrained model (two pretraining seeds at the cpu scale) and statistics rule.
    rules = {(r.depends_on, r.config.finetune.norm_stats) for r in zeroshot}
    assert rules == {((f"pretrain-poisson-s{p}",), rule) for p in (0, 1) for rule in ("downstream", "pretrained")}
    assert all(r.config.train.num_steps == 0 for r in zeroshot)
    # Every downstream run, zero-shot included, tests on the same test set (data seed 1) at the same pool size.
    assert {(r.config.data.seed, r.config.data.num_train_pool, r.config.data.num_test) for r in _downstream(runs)} == {
        (1, 128, 256)
    }
    for run in _downstream(runs):
        if run.meta["mode"] != "zeroshot":
            assert run.config.finetune.norm_stats == "downstream"


def test_seeds_vary_init_order_subset_pool_and_pretrained_model_never_the_test_set():
    runs = _runs("rq1_data_size", "poisson,cpu")
    by_name = {r.name: r for r in runs}
    points = defaultdict(set)
    for run in _downstream(runs):
        m = run.meta
        points[(m["mode"], m["pretrain"], m["num_train"], m["learning_rate"])].add(m["seed"])
    assert all(seeds == set(range(study_scale.CPU.seeds)) for key, seeds in points.items() if key[0] != "zeroshot")
    one, other = (
        by_name["poisson-finetune-from-poisson-n00008-lr0.001-s0"],
        by_name["poisson-finetune-from-poisson-n00008-lr0.001-s2"],
    )
    a, b = flat_items(one.config), flat_items(other.config)
    # Each seed draws its own pool (vary_pool); the pretrained models go round robin over the seeds.
    assert {k for k in a if a[k] != b[k]} == {"seed", "data.pool_seed"}
    assert one.depends_on == other.depends_on == ("pretrain-poisson-s0",)
    assert by_name["poisson-finetune-from-poisson-n00008-lr0.001-s1"].depends_on == ("pretrain-poisson-s1",)
    # The pretraining pool and the downstream pools come from different data seeds.
    pre = by_name["pretrain-poisson-s0"]
    assert pre.config.data.seed != one.config.data.seed
    # One pool per seed, shared by every mode and N of that seed.
    pools = defaultdict(set)
    for run in _downstream(runs):
        if run.meta["mode"] != "zeroshot":
            pools[run.config.seed].add(run.config.data.pool_seed)
    assert all(len(p) == 1 for p in pools.values()) and len({p for ps in pools.values() for p in ps}) == len(pools)


def test_pretraining_seeds_are_one_key():
    study = _study("rq1_data_size", "poisson,cpu")
    study.pretrain_seeds = 3
    runs = study_lib.expand_study(study, "/tmp/fno-study")
    names = {r.name for r in runs}
    assert {"pretrain-poisson-s0", "pretrain-poisson-s1", "pretrain-poisson-s2"} <= names
    finetune = next(r for r in runs if r.name == "poisson-finetune-from-poisson-n00008-lr0.001-s4")
    assert finetune.depends_on == ("pretrain-poisson-s1",)  # seed 4 -> pretraining seed 4 mod 3
    assert len(_downstream(runs, "zeroshot")) == 3 * 2


@pytest.mark.parametrize("scale", ["", "cpu", "gpu_minutes", "runlocal"])
def test_model_ladder_head_is_twice_the_width(scale):
    runs = _runs("rq2_model_size", scale)
    widths = set()
    for run in runs:
        assert run.config.model.fc_dim == 2 * run.config.model.width, run.name
        widths.add((run.config.model.width, run.config.model.modes))
    assert len(widths) >= 3 or scale == "runlocal"
    for module in STUDIES:  # every study's single model too
        base = _study(module, scale).base.model
        assert base.fc_dim == 2 * base.width


def test_mixture_is_every_familys_full_set_or_an_equal_total():
    study = _study("rq4_mixed")
    assert study.mixture == "full"
    sizes = {r.name: r.config.data.num_train for r in study_lib.expand_study(study, "/tmp/fno-study")}
    assert sizes["pretrain-mixed-s0"] == 3 * 32768 and sizes["pretrain-poisson-s0"] == 32768
    study.mixture = "equal_total"
    sizes = {r.name: r.config.data.num_train for r in study_lib.expand_study(study, "/tmp/fno-study")}
    assert sizes["pretrain-mixed-s0"] == sizes["pretrain-poisson-s0"] == 32768
    study.mixture = "half"
    with pytest.raises(ValueError, match="mixture must be one of"):
        study_lib.expand_study(study, "/tmp/fno-study")


def test_one_scale_mechanism_for_every_study():
    for module in STUDIES:
        changes = getattr(importlib.import_module(f"experiments.configs.{module}"), "CHANGES", {})
        for name, scale in study_scale.SCALES.items():
            study = _study(module, name)
            scale = scale.replace(**changes.get(name, {}))  # a config's own sizes at that scale
            assert study.base.data.resolution == scale.resolution
            assert study.seeds == scale.seeds and study.pack is True
    assert [study_scale.SCALES[n].seeds for n in ("", "cpu", "gpu_minutes")] == [1, 5, 3]
    with pytest.raises(ValueError, match="at most one scale"):
        _study("rq1_data_size", "cpu,runlocal")
    with pytest.raises(ValueError, match="Unknown study config argument"):
        _study("quickstart", "poisson")
    # A config's own sizes at one scale change only that scale.
    assert _study("rq2_model_size", "cpu").downstream.poisson.num_train == (2, 8, 32)
    assert _study("rq1_data_size", "cpu").downstream.poisson.num_train == study_scale.CPU.num_train


def test_dry_run_plan_of_rq1_poisson_at_the_paper_scale(tmp_path):
    text = dry_run(_study("rq1_data_size", "poisson"), str(tmp_path))
    with open(tmp_path / "plan.json") as f:
        plan = json.load(f)
    assert not (tmp_path / "runs").exists()  # nothing trained, no run folder made
    assert isinstance(plan, list) and len(plan) == 1 + 2 * 15 * 5 + 2  # zero-shot under both statistics rules
    for entry in plan:
        assert set(entry) == {"name", "depends_on", "meta", "config"}
        assert entry["config"]["data"]["num_val"] == entry["config"]["data"]["num_test"] == 4096
    pre = plan[0]
    assert pre["meta"]["kind"] == "pretrain" and pre["meta"]["num_steps"] == 128_000
    assert (pre["config"]["data"]["num_train"], pre["config"]["train"]["batch_size"]) == (32768, 128)
    for entry in plan[1:]:
        m, c = entry["meta"], entry["config"]
        if m["mode"] != "zeroshot":
            batch = min(m["num_train"], 128)
            assert c["train"]["batch_size"] == batch and m["num_steps"] == 500 * (m["num_train"] // batch)
    assert "32,768 samples, batch 128, 500 epochs = 128,000 steps" in text
    assert "scratch, finetune (poisson) {1e-05, 5e-05, 0.0001, 0.0005, 0.001}" in text
    assert "Validation / test samples per run: 4,096 / 4,096" in text
    assert "      2      2     500       500" in text and " 32,768    128     500   128,000" in text
    # The estimate is the stated formula.
    costs = [plan_lib.run_cost(r) for r in _runs("rq1_data_size", "poisson")]
    train = sum(c.train_samples for c in costs)
    evals = sum(c.eval_samples for c in costs)
    expected = train / 3167 + evals / (2.4 * 3167)
    assert plan_lib.estimate_s(costs, 3167, 2.4 * 3167, 0) == pytest.approx(expected)
    assert f"({expected:,.0f} s) at 3,167 training and 7,601 evaluated samples/s" in text


# Wall-clock throughput on the project's 2-core CPU at 32 x 32, (training, evaluated) samples/s per model (width,
# modes), for a run alone ("single") and for a packed group of runs ("packed", counting the samples of all its runs).
# Least-squares fits, wall(unit) = train samples / T + evaluated samples / E, to measured unit wall times (each
# unit's start-up included: compilation, data, checkpoints, the final test, so the sums below are whole sweeps).
# (16, 8): the 24 units of the RQ1 sweep of 2026-12-06 (jax 0.10.2; other work beside it, load 2-5), whose sum the
# fit puts at 101.6 min as measured. (8, 8) and (8, 4): the 2026-11-30 fits (the study alone, load ~2) slowed by
# the same factors as (16, 8) between the two days (training 1.23x, evaluation 2.2x), until RQ2 reruns.
CPU_STUDY_SAMPLES_PER_S = {
    (16, 8): {"single": (478.0, 125.0), "packed": (641.0, 131.0)},
    (8, 8): {"single": (2193.0, 66.0), "packed": (1341.0, 140.0)},
    (8, 4): {"single": (2159.0, 75.0), "packed": (1746.0, 176.0)},
}


def _unit_seconds(unit) -> float:
    costs = [plan_lib.run_cost(run) for run in unit]
    model = unit[0].meta["model"]
    train_sps, eval_sps = CPU_STUDY_SAMPLES_PER_S[(model["width"], model["modes"])][
        "packed" if len(unit) > 1 else "single"
    ]
    return sum(c.train_samples for c in costs) / train_sps + sum(c.eval_samples for c in costs) / eval_sps


# The order the cpu-scale studies run in (docs/STUDY.md): each reuses the finished pretraining and scratch runs of
# the ones before it that have its exact config (`experiments.sweep --reuse_from`), so those cost nothing there.
CPU_STUDY_ORDER = (
    "rq1_data_size",
    "rq6_darcy_transfer",
    "rq5_finetune_modes",
    "rq3_ood_shift",
    "rq2_model_size",
    "rq4_mixed",
)
# Minutes each sweep may take on 2 cores by the throughput model above (about 5% over its estimate), and all six
# together: a guard against a config change that grows a study unnoticed. The four paper questions were asked to fit
# 3 hours; at the converged scale (12,800-step pretraining and its doubled check, 5 seeds with a pool each, two 4-rate
# grids, the length check, RQ4's Helmholtz scratch curve to N = 512) the model puts them at about 8.9 hours, and
# docs/STUDY.md says where the time goes.
CPU_STUDY_BUDGET_MIN = {
    "rq1_data_size": 135,
    "rq6_darcy_transfer": 140,
    "rq5_finetune_modes": 235,
    "rq3_ood_shift": 125,
    "rq2_model_size": 102,
    "rq4_mixed": 197,
}
CPU_STUDIES_BUDGET_MIN = 15.75 * 60


def test_cpu_scale_fits_its_time_budget():
    """Each study's sweep at the cpu scale, packed as the sweep packs it and reusing the runs of the studies before
    it, within its budget; all of them within the total."""
    done: set[str] = set()
    total = 0.0
    for module in CPU_STUDY_ORDER:
        seconds = 0.0
        for unit in work_units(_runs(module, "cpu"), pack=True):
            keys = [json.dumps(run.config.to_dict(), sort_keys=True) for run in unit]
            reusable = not any(run.config.init_from for run in unit)
            if reusable and all(key in done for key in keys):
                continue
            seconds += _unit_seconds(unit)
            if reusable:
                done.update(keys)
        assert seconds <= CPU_STUDY_BUDGET_MIN[module] * 60, (module, seconds / 60)
        total += seconds
    assert total <= CPU_STUDIES_BUDGET_MIN * 60, total / 60


def test_cpu_scale_covers_each_question():
    def points(module):
        return _downstream(_runs(module, "cpu"))

    rq1 = points("rq1_data_size")
    assert len({r.meta["num_train"] for r in rq1 if r.meta["mode"] != "zeroshot"}) >= 4
    assert {r.meta["mode"] for r in rq1} == {"scratch", "finetune", "zeroshot"}
    assert len({r.meta["model"]["width"] * 1000 + r.meta["model"]["modes"] for r in points("rq2_model_size")}) >= 3
    assert len({r.meta["shift"] for r in points("rq3_ood_shift")}) >= 3
    rq4 = _runs("rq4_mixed", "cpu")
    assert {r.config.task for r in rq4 if r.meta["kind"] == "pretrain"} >= {"mixed", "poisson", "helmholtz"}
    for module in STUDIES:
        seeds = _study(module, "cpu").seeds
        assert seeds >= 3 and all(len(s) == seeds for s in _seeds_per_point(points(module)).values())
    assert study_scale.CPU.seeds >= 5 and all(_study(m, "cpu").seeds == 5 for m in STUDIES if m != "quickstart")


def test_scratch_runs_extend_to_the_groups_scratch_sizes_and_share_its_pool():
    """RQ4 at the cpu scale trains scratch beyond the fine-tuned sizes (`scratch_num_train`): Helmholtz at 128 and
    512, Poisson at 128; every run of a group draws from the pool of its largest N, and fine-tuning stays at N."""
    runs = _downstream(_runs("rq4_mixed", "cpu"))
    for task, extra in (("helmholtz", {128, 512}), ("poisson", {128})):
        mine = [r for r in runs if r.config.task == task and not r.meta["length_check"]]
        scratch = {r.meta["num_train"] for r in mine if r.meta["mode"] == "scratch"}
        finetuned = {r.meta["num_train"] for r in mine if r.meta["mode"] == "finetune"}
        assert scratch == {2, 8, 32} | extra and finetuned == {2, 8, 32}
        assert {r.config.data.num_train_pool for r in mine} == {max(extra)}
        largest = [r for r in mine if r.meta["mode"] == "scratch" and r.meta["num_train"] == max(extra)]
        assert len(largest) == 4 * 5 and {r.config.data.num_train for r in largest} == {max(extra)}


def test_rq4_pretrain_stats_is_the_studys_fine_tuning_keeping_the_pretrained_statistics():
    """`rq4_mixed.py:cpu,helmholtz,pretrain_stats` trains RQ4's Helmholtz fine-tuned runs again, each differing from
    its RQ4 run only in `finetune.norm_stats` (same pool, examples, seeds and grid), and nothing else downstream; its
    pre-trainings are RQ4's (reused)."""
    study = {r.name: r for r in _runs("rq4_mixed", "cpu")}
    keep = _runs("rq4_mixed", "cpu,helmholtz,pretrain_stats")
    assert {r.meta["mode"] for r in _downstream(keep)} == {"finetune"}
    assert len([r for r in _downstream(keep) if not r.meta["length_check"]]) == 2 * 3 * 4 * 5
    for run in keep:
        mine, theirs = run.config.to_dict(), study[run.name].config.to_dict()
        if run.meta["kind"] == "pretrain":
            assert mine == theirs, run.name
            continue
        assert (
            mine["finetune"].pop("norm_stats") == "pretrained" and theirs["finetune"].pop("norm_stats") == "downstream"
        )
        assert mine == theirs, run.name


def _seeds_per_point(runs):
    out = defaultdict(set)
    for r in runs:
        m = r.meta
        if m["mode"] != "zeroshot":
            out[(m["group"], m["model"]["width"], m["mode"], m["pretrain"], m["num_train"], m["learning_rate"])].add(
                m["seed"]
            )
    return out


def test_dry_run_command_line(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.sweep",
            "--config=experiments/configs/quickstart.py:runlocal",
            f"--workdir={tmp_path}",
            "--dry_run",
            "--samples_per_s=100",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "estimated device time" in out.stdout and "at 100 training and 240 evaluated samples/s" in out.stdout
    assert len(json.loads((tmp_path / "plan.json").read_text())) == 11  # zero-shot under both statistics rules
