"""Tables, intervals, power-law fits, data savings and plots from a sweep's results.jsonl.

    python -m experiments.report --sweep DIR

Writes DIR/report.json, DIR/report.md and DIR/plots/*.png, and prints the main table.

Seeds and intervals: the learning rate is chosen per (point, seed) by validation error, as the paper chose it per
downstream size (config/sweep_config.yaml: metric val_err). A point's value is the MEDIAN over its seeds (robust to
one diverged seed), with a 95% bootstrap percentile interval: the seeds are resampled with replacement
BOOTSTRAP_RESAMPLES times from a fixed generator seed (the same results give the same interval), the median taken
each time, and the 2.5th and 97.5th percentiles kept. With 3 seeds that interval is the seeds' range; one seed gives
a zero-width interval.

report.json:
    runs          the best-learning-rate downstream run per (task, shift, mode, pretrain, N, model, seed): task, mode,
                  num_train, model, seed, test_rel_l2, val_rel_l2, learning_rate, num_params, shift, task_ranges,
                  pretrain, group, name, and lr_grid (every learning rate tried: val/test error, run name).
    points        one per (task, shift, pretrain, model, mode, num_train): seeds, test_rel_l2 (median over seeds),
                  ci_low, ci_high, num_params, and `metrics`: every test metric the runs report (test_rel_l2,
                  test_rel_h1, test_rel_linf, test_rel_residual, test_rel_l2_band_low/mid/high) as
                  {median, ci_low, ci_high, seeds, values (per seed)}; a run lacking a metric is left out of it.
    pretrain      the pretraining runs.
    all_runs      every finished run as recorded in results.jsonl.
    fits          err = a * N^-b per curve (least squares of log err on log N over the points' medians).
    data_savings  per fine-tuned point: N_scratch / N, the factor by which scratch training needs more
                  downstream examples to reach the fine-tuned error, with its bootstrap interval (seeds resampled
                  jointly across the curve's points, so a seed's scratch and fine-tuned runs stay paired).
                  N_scratch is read off the scratch curve by linear interpolation in log-log; below the best
                  scratch error (or above its worst) it is extrapolated with the scratch power-law fit and flagged
                  `extrapolated`, at most EXTRAPOLATION_LIMIT (4) times beyond the scratch curve's N range: further
                  out it is held at that limit and `savings_bound` says the savings are at least ("lower") or at
                  most ("upper") the value; `savings_limits` are the savings at the two limits.
    statistic     how points and intervals are made (median, interval level, resamples, generator seed).
    plots         paths of the PNG plots, relative to DIR.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from experiments import report_plots, report_tables
from experiments.report_data import (
    LENGTH_TOLERANCE,
    _data_savings,
    _fits,
    aggregate_points,
    bootstrap_ci,
    curves,
    equivalent_scratch_size,
    fit_power_law,
    length_check,
    load_results,
    order_statistic_coverage,
    select_best_lr,
)
from fno_jax.storage import paths
from fno_jax.storage.json_io import write_json_atomic

__all__ = [
    "aggregate_points",
    "bootstrap_ci",
    "build_report",
    "equivalent_scratch_size",
    "fit_power_law",
    "load_results",
    "select_best_lr",
]


def build_report(sweep_dir: str, *, plots: bool = True, verbose: bool = False) -> dict:
    """Read SWEEP_DIR/results.jsonl; write report.json, report.md, plots/*.png; return the report dict."""
    records = load_results(sweep_dir)
    runs = select_best_lr(records)
    points = aggregate_points(runs)
    curve_map = curves(points)
    fits = _fits(curve_map)
    savings = _data_savings(curve_map)
    report = {
        "runs": runs,
        "points": points,
        "pretrain": [r for r in records if r.get("kind") == "pretrain"],
        "all_runs": records,
        "fits": fits,
        "data_savings": savings,
        "length_check": length_check(records, points),
        "statistic": _statistic(records, points),
        "plots": report_plots.write_plots(sweep_dir, points, fits, savings) if plots and points else [],
    }
    tables = report_tables.main_tables(points, savings)
    write_json_atomic(paths.join(sweep_dir, "report.json"), report)
    paths.write_text(paths.join(sweep_dir, "report.md"), report_tables.markdown(report, tables))
    if verbose:
        for title, table in tables:
            print(f"\n{title}\n{table}")
    return report


def _statistic(records: list[dict], points: list[dict]) -> dict:
    """What a point's value and bracket are, in words and numbers, from what the runs varied."""
    counts = sorted({len(p["seeds"]) for p in points if p["mode"] != "zeroshot"}) or [0]
    n = counts[0]
    downstream = [r for r in records if r.get("kind") != "pretrain"]
    varies = ["the network's initialization", "the order of the training samples", "the subset drawn from the pool"]
    fixed = ["the validation and test sets"]
    if any(int(r.get("pool_seed", -1)) >= 0 for r in downstream):
        varies.append("the training pool itself (each seed draws its own)")
    else:
        fixed.append("the training pool")
    pretrain_seeds = {r["pretrain_seed"] for r in downstream if r.get("pretrain_seed") is not None}
    if len(pretrain_seeds) > 1:
        varies.append(f"the pretrained model ({len(pretrain_seeds)} pretraining seeds, assigned round robin)")
    elif pretrain_seeds:
        fixed.append("the pretrained model (one pretraining seed)")
    seeds = f"{n}" if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
    interval = (
        f"the range, lowest to highest, of a point's {seeds} per-seed values (each at its seed's best-validation "
        "learning rate). As an interval for the median of the seed-to-seed distribution it is distribution-free, "
        f"with coverage 1 - 2^(1-n): {order_statistic_coverage(n):.1%} at n = {n}. A seed varies "
        f"{', '.join(varies)}; fixed across seeds: {', '.join(fixed)}."
    )
    return {
        "point": "median over seeds",
        "interval": interval,
        "seeds_per_point": counts,
        "coverage": order_statistic_coverage(n),
        "varies": varies,
        "fixed": fixed,
        "savings": "per seed: the seed's fine-tuned error on its own scratch curve; median and range over seeds",
        "length_tolerance": LENGTH_TOLERANCE,
    }


def _cli() -> None:
    from absl import app, flags

    sweep = flags.DEFINE_string("sweep", None, "Sweep directory holding results.jsonl.")
    flags.DEFINE_bool("plots", True, "Write PNG plots.")
    flags.mark_flags_as_required(["sweep"])

    def main(argv: Sequence[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        build_report(sweep.value, plots=flags.FLAGS.plots, verbose=True)
        print(f"\nWrote {os.path.join(sweep.value, 'report.md')}, report.json and plots/", file=sys.stdout)

    app.run(main)


if __name__ == "__main__":
    _cli()
