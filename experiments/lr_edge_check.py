"""Would a wider learning-rate grid change a point that the report marks "(LR edge: ...)"?

A point is marked when most of its seeds chose a rate at an end of the grid. For every such point, each of its seeds
whose chosen rate is at an end trains once more one rate beyond that end, its config otherwise the chosen run's. The
rate beyond continues the grid's spacing at that end and is rounded to the 1-3-10 series (3e-2 -> 1e-1 after 1e-2,
3e-2; 1e-4 -> 1e-5 below 1e-3). A seed moves when its validation error there is lower than at its chosen rate; the
point's median is recomputed with each moving seed's new choice. A point where no seed moves stands as reported: its
mark is the end of a grid that brackets every seed's best rate.

    python -m experiments.lr_edge_check --sweep runs/rq5_finetune_modes [--num_train 32] [--only e10-20]

The runs go to SWEEP_DIR/lr_edge_check/<run name>-beyond<rate> (a finished one is kept, so the command resumes) and
the table to SWEEP_DIR/lr_edge_check/results.json. Requires the sweep's report (experiments.report).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from collections.abc import Sequence

from experiments.report_data import edge_side, model_label, natural_key, point_key
from experiments.rerun import read_report, rerun
from fno_jax.runtime.cli_errors import exit_on_expected_errors
from fno_jax.storage import paths
from fno_jax.storage.json_io import write_text_atomic


def beyond(grid: Sequence[float], end: str) -> float:
    """The next rate past the `end` ("top" or "bottom") of `grid`, at the grid's spacing there, on the 1-3-10 series."""
    rates = sorted(grid)
    raw = rates[-1] ** 2 / rates[-2] if end == "top" else rates[0] ** 2 / rates[1]
    decade = math.floor(math.log10(raw))
    candidates = [m * 10.0**k for k in (decade - 1, decade, decade + 1) for m in (1, 3)]
    return float(f"{min(candidates, key=lambda c: abs(math.log(c / raw))):.0e}")


def edge_points(report: dict, num_train: Sequence[int] = (), only: str = "") -> dict[str, list[dict]]:
    """The report's chosen runs (one per seed) of every point marked at an edge (of the sizes `num_train` and with a
    label matching the regex `only`, when given), by point label, in seed order."""
    points: dict[str, list[dict]] = {}
    for r in report["runs"]:
        if r["mode"] == "zeroshot" or r.get("length_check") or (num_train and r["num_train"] not in set(num_train)):
            continue
        task, shift, _, mode, source, n = point_key(r)
        label = f"{task} {shift} {model_label(r['model'])} {mode}" + (f" ({source})" if source else "") + f", N = {n}"
        points.setdefault(label, []).append(r)
    marked = {
        k: sorted(rs, key=lambda r: r["seed"])
        for k, rs in points.items()
        if edge_side(rs) is not None and re.search(only, k)
    }
    return dict(sorted(marked.items(), key=lambda item: natural_key(item[0])))


def check(sweep: str, num_train: Sequence[int] = (), only: str = "") -> list[dict]:
    """Per marked point: each seed at an end trained one rate beyond it, and the point's median before and after."""
    out = paths.join(sweep, "lr_edge_check")
    rows = []
    for label, runs in edge_points(read_report(sweep), num_train, only).items():
        seeds, after = [], []
        for r in runs:
            test = r["test_rel_l2"]
            if r.get("lr_edge"):
                rate = beyond([g["learning_rate"] for g in r["lr_grid"]], r["lr_edge"])

                def edit(config, rate=rate):
                    config.train.learning_rate = rate

                summary = rerun(sweep, r["name"], paths.join(out, f"{r['name']}-beyond{rate:g}"), edit)
                moves = summary["val_rel_l2"] < r["val_rel_l2"]
                seeds.append(
                    {"seed": r["seed"], "end": r["lr_edge"], "chosen_lr": r["learning_rate"], "beyond_lr": rate,
                     "chosen_val": r["val_rel_l2"], "beyond_val": summary["val_rel_l2"], "chosen_test": test,
                     "beyond_test": summary["test_rel_l2"], "moves": moves}
                )  # fmt: skip
                test = summary["test_rel_l2"] if moves else test
            after.append(test)
        reported = [r["test_rel_l2"] for r in runs]
        rows.append(
            {"point": label, "side": edge_side(runs), "seeds": seeds, "moved": sum(s["moves"] for s in seeds),
             "median_reported": statistics.median(reported), "median_after": statistics.median(after),
             "range_reported": [min(reported), max(reported)], "range_after": [min(after), max(after)]}
        )  # fmt: skip
    paths.makedirs(out)
    write_text_atomic(paths.join(out, "results.json"), json.dumps(rows, indent=2) + "\n")
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.lr_edge_check", description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", required=True, help="a sweep directory with report.json")
    parser.add_argument("--num_train", default="", help="comma-separated downstream sizes (default: all)")
    parser.add_argument("--only", default="", help="a regex over the point labels, e.g. 'e10-20' (default: all)")
    args = parser.parse_args(argv)
    with exit_on_expected_errors(parser.prog):
        rows = check(args.sweep, [int(n) for n in args.num_train.split(",") if n.strip()], args.only)
    print(
        "| point | end | seeds at an end: beyond rate, val there vs chosen | moved | median, range: reported -> after |"
    )
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        tried = "; ".join(
            f"s{s['seed']} {s['beyond_lr']:g}: {s['beyond_val']:.3g} vs {s['chosen_val']:.3g}" for s in row["seeds"]
        )
        lo, hi = row["range_reported"]
        lo2, hi2 = row["range_after"]
        print(
            f"| {row['point']} | {row['side']} | {tried} | {row['moved']} of {len(row['seeds'])} | "
            f"{row['median_reported']:.3g} [{lo:.3g}, {hi:.3g}] -> {row['median_after']:.3g} [{lo2:.3g}, {hi2:.3g}] |"
        )


if __name__ == "__main__":
    main()
