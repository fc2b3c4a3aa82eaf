"""Report: best-LR selection, power-law fits, the data-savings figure of merit, report.json/md and plots."""

import json
import math
import os

import numpy as np
import pytest

from experiments.report import build_report
from experiments.report_data import bootstrap_ci, equivalent_scratch_size, fit_power_law, natural_key

MODEL = {"width": 16, "modes": 8, "depth": 4, "fc_dim": 64}
SIZES = [2**k for k in range(1, 11)]
FACTOR = 3.0  # finetune err(N) = scratch err(FACTOR * N): fine-tuning saves exactly FACTOR x data


def _record(mode, n, err, lr, val=None, model=MODEL, pretrain="poisson", num_params=1000, seed=None):
    record = {
        "name": f"{mode}-{n}-{lr}-{model['width']}",
        "kind": "downstream",
        "group": "poisson_e5_10",
        "task": "poisson",
        "shift": "e5-10",
        "task_ranges": {"eigenvalue_range": [5.0, 10.0]},
        "mode": mode,
        "pretrain": "" if mode == "scratch" else pretrain,
        "num_train": n,
        "model": model,
        "num_params": num_params,
        "test_rel_l2": err,
        "val_rel_l2": err if val is None else val,
        "learning_rate": lr,
    }
    if seed is not None:
        record.update(seed=seed, name=f"{record['name']}-s{seed}")
    return record


def _power_law_records(model=MODEL, num_params=1000, scale=1.0):
    records = []
    for n in SIZES:
        for mode, err in (("scratch", scale * n**-0.5), ("finetune", scale * (FACTOR * n) ** -0.5)):
            records.append(_record(mode, n, err, 1e-3, model=model, num_params=num_params))
            # A worse-validation LR with a *better* test error: selection must use validation.
            records.append(_record(mode, n, err / 2, 1e-4, val=err * 2, model=model, num_params=num_params))
    records.append(_record("zeroshot", 0, 0.3 * scale, 1e-3, model=model, num_params=num_params))
    return records


def _write(sweep_dir, records):
    pretrain = dict(_record("scratch", 4096, 0.05, 1e-3), kind="pretrain", name="pretrain-poisson", shift="pretrain")
    with open(os.path.join(sweep_dir, "results.jsonl"), "w") as f:
        for r in [pretrain, *records]:
            f.write(json.dumps(r) + "\n")


def test_figure_of_merit_on_an_exact_power_law(tmp_path, capsys):
    _write(tmp_path, _power_law_records())
    report = build_report(str(tmp_path), verbose=True)

    [savings] = report["data_savings"]
    assert [p["num_train"] for p in savings["points"]] == SIZES
    for point in savings["points"]:
        # Interpolation in log-log is exact for a power law; past the largest scratch N the fit (also exact) is used.
        assert point["savings"] == pytest.approx(FACTOR, rel=1e-9)
        assert point["extrapolated"] == (FACTOR * point["num_train"] > max(SIZES))
    fits = {f["mode"]: f for f in report["fits"]}
    assert fits["scratch"]["a"] == pytest.approx(1.0, rel=1e-9)
    assert fits["scratch"]["b"] == pytest.approx(0.5, rel=1e-9)
    assert fits["finetune"]["a"] == pytest.approx(FACTOR**-0.5, rel=1e-9)
    assert fits["finetune"]["b"] == pytest.approx(0.5, rel=1e-9)
    assert "zeroshot" not in fits
    assert "| N | scratch | finetune (poisson) | savings (poisson) |" in capsys.readouterr().out


def test_report_schema_best_lr_and_files(tmp_path):
    _write(tmp_path, _power_law_records())
    build_report(str(tmp_path))
    with open(tmp_path / "report.json") as f:
        report = json.load(f)
    assert {"runs", "fits", "data_savings", "pretrain", "all_runs", "plots"} <= set(report)
    assert len(report["runs"]) == 2 * len(SIZES) + 1  # one per (mode, N) after LR selection, + zero-shot
    assert len(report["all_runs"]) == 4 * len(SIZES) + 2
    assert [p["name"] for p in report["pretrain"]] == ["pretrain-poisson"]
    for run in report["runs"]:
        assert {"task", "mode", "num_train", "model", "test_rel_l2", "learning_rate", "shift", "lr_grid"} <= set(run)
        assert run["mode"] in ("scratch", "finetune", "zeroshot")
        assert set(run["model"]) == {"width", "modes", "depth", "fc_dim"}
        if run["mode"] != "zeroshot":
            assert run["learning_rate"] == 1e-3  # the best-validation LR, not the best-test one
            assert [g["learning_rate"] for g in run["lr_grid"]] == [1e-4, 1e-3]
    zeroshot = [r for r in report["runs"] if r["mode"] == "zeroshot"]
    assert [(z["num_train"], z["test_rel_l2"]) for z in zeroshot] == [(0, 0.3)]

    assert sorted(report["plots"]) == [
        "plots/error_vs_n_poisson_e5-10.png",
        "plots/examples_saved_poisson_e5-10.png",
        "plots/zeroshot.png",
    ]
    for plot in report["plots"]:
        with open(tmp_path / plot, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    markdown = (tmp_path / "report.md").read_text()
    assert "## Error by downstream size" in markdown and "zero-shot (poisson)" in markdown
    assert "Error by model size" not in markdown


def test_model_size_table_and_plot(tmp_path):
    small = {"width": 8, "modes": 4, "depth": 4, "fc_dim": 64}
    _write(tmp_path, _power_law_records() + _power_law_records(model=small, num_params=100, scale=2.0))
    report = build_report(str(tmp_path))
    assert "plots/error_vs_model_size_poisson_e5-10.png" in report["plots"]
    assert os.path.exists(tmp_path / "plots" / "error_vs_model_size_poisson_e5-10.png")
    assert len(report["data_savings"]) == 2
    assert "## Error by model size" in (tmp_path / "report.md").read_text()


def test_equivalent_scratch_size_edges():
    n, err = [1, 10, 100], [1.0, 0.1, 0.01]
    fit = fit_power_law(n, err)
    assert fit["b"] == pytest.approx(1.0, rel=1e-12)
    assert equivalent_scratch_size(0.1, n, err, fit) == (pytest.approx(10.0, rel=1e-12), False)
    # Between points: linear in log-log.
    assert equivalent_scratch_size(10**-1.5, n, err, fit)[0] == pytest.approx(10**1.5, rel=1e-12)
    # Better than the best scratch point, and worse than the first: extrapolated by the fit.
    assert equivalent_scratch_size(0.001, n, err, fit) == (pytest.approx(1000.0, rel=1e-9), True)
    assert equivalent_scratch_size(2.0, n, err, fit) == (pytest.approx(0.5, rel=1e-9), True)
    # A non-monotone scratch curve: the smallest N that reaches the error counts.
    bumpy = [1.0, 0.1, 0.3, 0.01]
    assert equivalent_scratch_size(0.2, [1, 10, 100, 1000], bumpy, None)[0] < 10
    # No decreasing fit to extrapolate with.
    assert equivalent_scratch_size(0.001, [1, 10], [0.1, 0.2], fit_power_law([1, 10], [0.1, 0.2])) == (None, True)
    assert math.isclose(fit_power_law([2, 4], [0.5, 0.25])["b"], 1.0)
    assert fit_power_law([2, 2], [0.5, 0.4]) is None


def test_missing_results_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no results.jsonl"):
        build_report(str(tmp_path))
    (tmp_path / "results.jsonl").write_text(json.dumps({"task": "poisson"}) + "\n")
    with pytest.raises(ValueError, match="lacks"):
        build_report(str(tmp_path))


def test_quickstart_end_to_end_with_a_fake_trainer(tmp_path, capsys):
    from experiments.configs.quickstart import get_config
    from experiments.quickstart import run_quickstart

    def fake_train(config, workdir):
        mode = "zeroshot" if config.train.num_steps == 0 else ("finetune" if config.init_from else "scratch")
        err = (0.5 if mode == "finetune" else 1.0) * config.data.num_train**-0.5
        summary = {
            "task": config.task,
            "mode": mode,
            "num_train": config.data.num_train,
            "model": dict(config.model),
            "test_rel_l2": err,
            "val_rel_l2": err,
            "learning_rate": config.train.learning_rate,
        }
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f)
        return summary

    report = run_quickstart(get_config("runlocal"), str(tmp_path), run_fn=fake_train)
    assert {r["mode"] for r in report["runs"]} == {"scratch", "finetune", "zeroshot"}
    assert os.path.exists(tmp_path / "report.md") and os.path.exists(tmp_path / "report.json")
    assert "report.md" in capsys.readouterr().out


SEED_SCALE = (1.0, 1.3, 0.8)  # seed s multiplies every error of its runs by SEED_SCALE[s]


def _seeded_records(extra=lambda mode, n, seed: {}):
    """Exact power laws per seed, scratch and fine-tuned runs of one seed scaled alike; two LRs per run."""
    records = []
    for seed, scale in enumerate(SEED_SCALE):
        for n in SIZES:
            for mode, err in (("scratch", n**-0.5), ("finetune", (FACTOR * n) ** -0.5)):
                err *= scale
                # Seed 2 prefers the small LR by validation: selection is per (point, seed).
                good, bad = (1e-4, 1e-3) if seed == 2 else (1e-3, 1e-4)
                records.append(dict(_record(mode, n, err, good, seed=seed), **extra(mode, n, seed)))
                records.append(dict(_record(mode, n, err / 2, bad, val=2 * err, seed=seed), **extra(mode, n, seed)))
        records.append(_record("zeroshot", 0, 0.3, None, seed=seed))
    return records


def test_points_are_medians_over_seeds_with_the_range_as_interval(tmp_path):
    _write(tmp_path, _seeded_records())
    report = build_report(str(tmp_path))
    # One selected run per (point, seed), each with its seed and its own best-validation LR.
    assert len(report["runs"]) == 3 * (2 * len(SIZES) + 1)
    for run in report["runs"]:
        if run["mode"] != "zeroshot":
            assert run["learning_rate"] == (1e-4 if run["seed"] == 2 else 1e-3)
    points = {(p["mode"], p["num_train"]): p for p in report["points"]}
    assert len(points) == len(report["points"]) == 2 * len(SIZES) + 1
    for (mode, n), p in points.items():
        assert p["seeds"] == [0, 1, 2]
        assert {"task", "shift", "pretrain", "model", "mode", "num_train", "test_rel_l2", "ci_low", "ci_high"} <= set(p)
        if mode == "zeroshot":
            assert p["test_rel_l2"] == p["ci_low"] == p["ci_high"] == 0.3
            continue
        base = n**-0.5 if mode == "scratch" else (FACTOR * n) ** -0.5
        # Median over the seeds and their range: an interval for the median that covers it with probability
        # 1 - 2 (1/2)^3 = 75% with 3 seeds, whatever the distribution.
        assert p["test_rel_l2"] == pytest.approx(base * 1.0, rel=1e-12)
        assert p["coverage"] == 0.75
        assert p["ci_low"] == pytest.approx(base * min(SEED_SCALE), rel=1e-12)
        assert p["ci_high"] == pytest.approx(base * max(SEED_SCALE), rel=1e-12)
    # The fits run through the medians.
    assert {f["mode"]: f["b"] for f in report["fits"]} == pytest.approx({"scratch": 0.5, "finetune": 0.5}, rel=1e-9)
    # Each seed's fine-tuned error is read off the same seed's scratch curve: every seed saves FACTOR x.
    for point in report["data_savings"][0]["points"]:
        assert point["savings_by_seed"] == pytest.approx([FACTOR] * 3, rel=1e-9) and point["seeds"] == [0, 1, 2]
        assert point["savings"] == pytest.approx(FACTOR, rel=1e-9)
        assert point["savings_ci_low"] == pytest.approx(FACTOR, rel=1e-9)
        assert point["savings_ci_high"] == pytest.approx(FACTOR, rel=1e-9)
    markdown = (tmp_path / "report.md").read_text()
    assert "median over the seeds [0, 1, 2]" in markdown and "coverage 1 - 2^(1-n): 75.0% at n = 3" in markdown
    assert report["statistic"]["coverage"] == 0.75 and "the training pool" in report["statistic"]["fixed"]
    assert f"{8**-0.5:.3g} [{0.8 * 8**-0.5:.3g}, {1.3 * 8**-0.5:.3g}]" in markdown
    assert "plots/examples_saved_poisson_e5-10.png" in report["plots"]

    # Deterministic: the same results give the same points and savings, intervals included.
    again = build_report(str(tmp_path), plots=False)
    assert (again["points"], again["data_savings"]) == (report["points"], report["data_savings"])


def test_a_point_whose_seeds_chose_an_end_of_the_grid_is_marked_with_that_end(tmp_path):
    """Per N, five seeds over the grid (1e-4, 1e-3, 1e-2): the chosen rate is each seed's lowest validation error."""
    choices = {  # N -> the rate each seed's validation prefers
        2: [1e-2, 1e-2, 1e-2, 1e-3, 1e-4],  # top for 3 of 5
        8: [1e-4, 1e-4, 1e-4, 1e-2, 1e-3],  # bottom for 3 of 5
        32: [1e-2, 1e-2, 1e-4, 1e-4, 1e-3],  # 4 of 5 at an end, neither end a majority
        128: [1e-3, 1e-3, 1e-3, 1e-2, 1e-4],  # inside for 3 of 5: not marked
    }
    records = []
    for n, best in choices.items():
        for seed, chosen in enumerate(best):
            for lr in (1e-4, 1e-3, 1e-2):
                records.append(_record("finetune", n, 0.1, lr, val=0.1 if lr == chosen else 0.2, seed=seed))
    _write(tmp_path, records)
    report = build_report(str(tmp_path), plots=False)
    points = {p["num_train"]: p for p in report["points"]}
    assert {n: (p["lr_at_edge"], p["lr_edge_side"], p["lr_edge_seeds"]) for n, p in points.items()} == {
        2: (True, "top", 4),
        8: (True, "bottom", 4),
        32: (True, "both", 4),
        128: (False, None, 2),
    }
    rows = {line.split("|")[1].strip(): line for line in (tmp_path / "report.md").read_text().splitlines()
            if line.startswith("| ") and line.split("|")[3].strip().startswith("0.1")}  # fmt: skip
    assert "(LR edge: top)" in rows["2"] and "(LR edge: bottom)" in rows["8"] and "(LR edge: both)" in rows["32"]
    assert "LR edge" not in rows["128"]
    chosen = {(r["num_train"], r["seed"]): r for r in report["runs"]}
    assert [chosen[(n, 0)]["lr_edge"] for n in (2, 8, 128)] == ["top", "bottom", None]


def test_savings_beyond_the_extrapolation_limit_are_a_lower_bound(tmp_path):
    # A nearly flat scratch curve and a far better fine-tuned one: the power law would put N_scratch at ~1e8.
    sizes = [2, 8, 32]
    records = []
    for n in sizes:
        records.append(_record("scratch", n, 0.8 * n**-0.02, 1e-3))
        records.append(_record("finetune", n, 0.3 * n**-0.1, 1e-3))
    _write(tmp_path, records)
    report = build_report(str(tmp_path), plots=False)
    for point in report["data_savings"][0]["points"]:
        n = point["num_train"]
        assert point["savings_bound"] == "lower" and point["extrapolated"]
        assert point["scratch_equivalent_num_train"] == pytest.approx(32 * 4.0)
        assert point["savings"] == pytest.approx(32 * 4.0 / n) == pytest.approx(point["savings_limits"][1])
    markdown = (tmp_path / "report.md").read_text()
    assert "| 2 | 0.789 | 0.28 | >=64x (extrap.) |" in markdown
    # Inside the limit nothing is held: the exact power law of the first test keeps its bounds empty.
    _write(tmp_path, _power_law_records())
    assert {p["savings_bound"] for p in build_report(str(tmp_path), plots=False)["data_savings"][0]["points"]} == {""}


def test_shifts_and_models_are_ordered_by_their_numbers():
    assert sorted(["e5-10", "e10-20", "e1-2.5"], key=natural_key) == ["e1-2.5", "e5-10", "e10-20"]
    assert sorted(["w16m8", "w8m8", "w8m4"], key=natural_key) == ["w8m4", "w8m8", "w16m8"]


def test_bootstrap_interval():
    values = [0.10, 0.12, 0.11, 0.30, 0.09, 0.10, 0.13, 0.11, 0.10, 0.12]
    low, high = bootstrap_ci(values)
    assert (low, high) == bootstrap_ci(values)  # a fixed generator seed
    assert min(values) <= low <= float(np.median(values)) <= high < max(values)  # the outlier moves no bound to it
    assert bootstrap_ci([0.2]) == (0.2, 0.2)
    assert bootstrap_ci([0.2, 0.4], statistic=np.mean) == pytest.approx((0.2, 0.4))
    with pytest.raises(ValueError, match="no values"):
        bootstrap_ci([])


def test_further_metrics_get_a_table_each_and_missing_ones_are_tolerated(tmp_path):
    def extra(mode, n, seed):
        if seed == 1:
            return {}  # results of a run before the further metrics existed
        bands = {"low": 0.01 * n, "mid": 0.02, "high": 0.03} if seed == 0 else [0.01 * n, 0.02, 0.03]
        return {"test_rel_h1": 2.0 * n, "test_rel_linf": 3.0, "test_rel_l2_bands": bands}

    _write(tmp_path, _seeded_records(extra))
    report = build_report(str(tmp_path), plots=False)
    point = next(p for p in report["points"] if (p["mode"], p["num_train"]) == ("scratch", 8))
    assert point["metrics"]["test_rel_h1"]["seeds"] == [0, 2]
    assert point["metrics"]["test_rel_h1"]["median"] == 16.0
    assert point["metrics"]["test_rel_l2_band_low"]["values"] == [0.08, 0.08]
    assert point["metrics"]["test_rel_l2"]["seeds"] == [0, 1, 2]
    assert "test_rel_residual" not in point["metrics"]
    markdown = (tmp_path / "report.md").read_text()
    # The paper's metric stays the headline table; each further metric present gets its own.
    assert markdown.index("## Error by downstream size") < markdown.index("## Further test metrics")
    for title in ("relative H1", "relative L-infinity", "relative L2, low frequency band", "relative L2, high"):
        assert f"### {title}" in markdown
    assert "PDE residual" not in markdown


def test_zero_shot_bars_say_which_statistics_they_were_evaluated_with():
    from experiments.report_plots import zeroshot_label

    point = {"task": "poisson", "shift": "e5-10", "pretrain": "poisson", "model": {"width": 16, "modes": 8}}
    both = [
        zeroshot_label({**point, "zeroshot_stats": stats}, multi_model=False) for stats in ("pretrain", "downstream")
    ]
    assert both == ["poisson e5-10\nfrom poisson\npretrain stats", "poisson e5-10\nfrom poisson\ndownstream stats"]
    # A sweep from before the second rule has no statistics on its points: the label is the point's alone.
    assert zeroshot_label(point, multi_model=False) == "poisson e5-10\nfrom poisson"


def test_a_study_of_several_models_keeps_models_and_zero_shot_rules_apart_in_every_table(tmp_path):
    small = {"width": 8, "modes": 4, "depth": 4, "fc_dim": 64}
    records = []
    for model, params, scale in ((MODEL, 1000, 1.0), (small, 100, 2.0)):
        records += _power_law_records(model=model, num_params=params, scale=scale)[:-1]  # zero-shot below
        for stats, err in (("pretrain", 0.1 * scale), ("downstream", 1.3 * scale)):
            zeroshot = _record("zeroshot", 0, err, 1e-3, model=model, num_params=params)
            records.append({**zeroshot, "zeroshot_stats": stats, "name": f"{zeroshot['name']}-{stats}"})
        name = f"pretrain-poisson-{model['width']}-s0"
        pretrain = dict(_record("scratch", 512, 0.02 * scale, 1e-3, model=model), kind="pretrain", shift="pretrain")
        records += [
            {**pretrain, "name": name, "seed": 0},
            {**pretrain, "name": f"{name}-x2", "seed": 0, "length_check": True, "test_rel_l2": 0.015 * scale},
        ]
    with open(tmp_path / "results.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    build_report(str(tmp_path))
    markdown = (tmp_path / "report.md").read_text()

    model_table = markdown.split("## Error by model size")[1]
    assert "| poisson | e5-10 | zeroshot | poisson, pretrain stats | 0 | 0.2 | 0.1 |" in model_table
    assert "| poisson | e5-10 | zeroshot | poisson, downstream stats | 0 | 2.6 | 1.3 |" in model_table
    lr_table = markdown.split("## Learning-rate selection")[1].split("\n## ")[0]
    assert "| task | shift | model | mode | pretrain | N | seed | chosen LR |" in lr_table
    assert (
        "| poisson | e5-10 | w8m4 | scratch |  | 2 |" in lr_table
        and "| poisson | e5-10 | w16m8 | scratch |  | 2 |" in lr_table
    )
    length_table = markdown.split("## Length check")[1].split("\n## ")[0]
    assert "| kind | task | shift | model | mode |" in length_table
    # The smaller model's row first: the numbers in the names are ordered by value.
    assert length_table.index("| pretrain | poisson | pretrain | w8m4 | scratch | 512 |") < length_table.index(
        "| pretrain | poisson | pretrain | w16m8 | scratch | 512 |"
    )


def test_the_model_size_plot_draws_a_line_per_zero_shot_statistics_rule(tmp_path, monkeypatch):
    from experiments import report_plots

    legends = {}

    def keep_legend(fig, plot_dir, name):
        legends[name] = [text.get_text() for ax in fig.axes if ax.get_legend() for text in ax.get_legend().get_texts()]
        return original(fig, plot_dir, name)

    original = report_plots._save
    monkeypatch.setattr(report_plots, "_save", keep_legend)
    small = {"width": 8, "modes": 4, "depth": 4, "fc_dim": 64}
    records = []
    for model, params in ((MODEL, 1000), (small, 100)):
        records += _power_law_records(model=model, num_params=params)[:-1]
        for stats in ("pretrain", "downstream"):
            zeroshot = _record("zeroshot", 0, 0.3, 1e-3, model=model, num_params=params)
            records.append({**zeroshot, "zeroshot_stats": stats, "name": f"{zeroshot['name']}-{stats}"})
    _write(tmp_path, records)
    build_report(str(tmp_path))
    zeroshot_lines = [label for label in legends["error_vs_model_size_poisson_e5-10.png"] if "zeroshot" in label]
    assert zeroshot_lines == ["zeroshot (poisson, downstream stats)", "zeroshot (poisson, pretrain stats)"]
