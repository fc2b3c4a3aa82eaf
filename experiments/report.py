"""Tables, power-law fits, data savings and plots from a sweep's results.jsonl.

    python -m experiments.report --sweep DIR

Writes DIR/report.json, DIR/report.md and DIR/plots/*.png, and prints the main table.

report.json:
    runs          the best-learning-rate downstream run per (task, shift, mode, pretrain, N, model): task, mode,
                  num_train, model, test_rel_l2, val_rel_l2, learning_rate, num_params, shift, task_ranges,
                  pretrain, group, name, and lr_grid (every learning rate tried: val/test error, run name).
                  The LR is chosen by validation error, as the paper did per downstream size.
    pretrain      the pretraining runs.
    all_runs      every finished run as recorded in results.jsonl.
    fits          err = a * N^-b per curve (least squares of log err on log N over the selected runs).
    data_savings  per fine-tuned point: N_scratch / N, the factor by which scratch training needs more
                  downstream examples to reach the fine-tuned error. N_scratch is read off the scratch curve
                  by linear interpolation in log-log; below the best scratch error (or above its worst) it is
                  extrapolated with the scratch power-law fit and flagged `extrapolated`.
    plots         paths of the PNG plots, relative to DIR.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["build_report", "fit_power_law", "equivalent_scratch_size", "select_best_lr", "load_results"]

REQUIRED = ("task", "mode", "num_train", "model", "test_rel_l2")
MODEL_KEYS = ("width", "modes", "depth", "fc_dim")


def load_results(sweep_dir: str) -> list[dict]:
    """The records of SWEEP_DIR/results.jsonl, each checked to have the fields a report needs."""
    path = os.path.join(sweep_dir, "results.jsonl")
    if not os.path.exists(path):
        raise ValueError(
            f"sweep_dir: no results.jsonl in {sweep_dir!r}; run `python -m experiments.sweep "
            "--config=... --workdir=DIR` first (it writes DIR/results.jsonl as runs finish)."
        )
    records = []
    with open(path) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            missing = [k for k in REQUIRED if k not in record]
            if missing:
                raise ValueError(f"{path}:{line_no}: record lacks {missing}; every run needs {list(REQUIRED)}.")
            record.setdefault("kind", "downstream")
            record.setdefault("shift", "")
            record.setdefault("pretrain", "")
            record.setdefault("group", record["task"])
            record.setdefault("val_rel_l2", record["test_rel_l2"])
            records.append(record)
    return records


def _model_key(model: dict) -> tuple[int, ...]:
    return tuple(int(model.get(k, 0)) for k in MODEL_KEYS)


def _model_label(model: dict) -> str:
    return f"w{model.get('width')}m{model.get('modes')}"


def select_best_lr(records: Sequence[dict]) -> list[dict]:
    """One record per (task, shift, mode, pretrain, N, model): the lowest val_rel_l2 over learning rates.

    Each selected record gets `lr_grid`: every learning rate tried with its val/test error, sorted by LR.
    """
    buckets: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if r.get("kind") == "pretrain":
            continue
        key = (r["task"], r["shift"], r["mode"], r["pretrain"], int(r["num_train"]), _model_key(r["model"]))
        buckets[key].append(r)
    selected = []
    for key in sorted(buckets, key=lambda k: (k[0], k[1], k[5], k[2], k[3], k[4])):
        group = buckets[key]
        best = dict(min(group, key=lambda r: (_finite(r["val_rel_l2"]), r.get("learning_rate", 0.0))))
        best["lr_grid"] = sorted(
            (
                {
                    "learning_rate": r.get("learning_rate"),
                    "val_rel_l2": r["val_rel_l2"],
                    "test_rel_l2": r["test_rel_l2"],
                    "name": r.get("name", ""),
                }
                for r in group
            ),
            key=lambda g: g["learning_rate"] or 0.0,
        )
        selected.append(best)
    return selected


def _finite(x: Any) -> float:
    x = float(x) if x is not None else math.inf
    return x if math.isfinite(x) else math.inf


def fit_power_law(num_train: Sequence[float], error: Sequence[float]) -> dict | None:
    """Least-squares fit of log err = log a - b log N; None with fewer than 2 distinct N (or bad errors).

    Returns {"a", "b", "r2", "num_points"}: err ~ a * N^-b.
    """
    n = np.asarray(num_train, dtype=np.float64)
    e = np.asarray(error, dtype=np.float64)
    ok = (n > 0) & (e > 0) & np.isfinite(e)
    n, e = n[ok], e[ok]
    if len(np.unique(n)) < 2:
        return None
    x, y = np.log(n), np.log(e)
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (intercept + slope * x)
    total = np.sum((y - y.mean()) ** 2)
    r2 = 1.0 - float(np.sum(residual**2) / total) if total > 0 else 1.0
    return {"a": float(np.exp(intercept)), "b": float(-slope), "r2": r2, "num_points": int(len(n))}


def equivalent_scratch_size(
    target: float, scratch_n: Sequence[float], scratch_err: Sequence[float], fit: dict | None
) -> tuple[float | None, bool]:
    """N at which the scratch curve reaches error `target`: (N, extrapolated).

    Inside the curve's error range: the first (smallest-N) crossing of the scratch curve, linear in
    (log N, log err) between neighbouring points. Outside it: N = (a / target)^(1/b) from the power-law fit
    (flagged extrapolated); None when there is no decreasing fit to extrapolate with.
    """
    order = np.argsort(scratch_n)
    n = np.asarray(scratch_n, dtype=np.float64)[order]
    e = np.asarray(scratch_err, dtype=np.float64)[order]
    if target > 0 and len(n) >= 1 and e.min() <= target <= e[0]:
        if e[0] == target:
            return float(n[0]), False
        lt = math.log(target)
        for i in range(len(n) - 1):
            hi, lo = e[i], e[i + 1]
            if hi >= target >= lo and hi > lo:
                t = (math.log(hi) - lt) / (math.log(hi) - math.log(lo))
                return float(math.exp(math.log(n[i]) + t * (math.log(n[i + 1]) - math.log(n[i])))), False
    if fit is None or fit["b"] <= 0 or target <= 0:
        return None, True
    return float((fit["a"] / target) ** (1.0 / fit["b"])), True


def _curves(runs: Sequence[dict]) -> dict[tuple, list[dict]]:
    """(task, shift, model key, mode, pretrain) -> selected runs sorted by N."""
    curves: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        curves[(r["task"], r["shift"], _model_key(r["model"]), r["mode"], r["pretrain"])].append(r)
    for v in curves.values():
        v.sort(key=lambda r: r["num_train"])
    return curves


def _fits(curves: dict[tuple, list[dict]]) -> list[dict]:
    fits = []
    for (task, shift, _, mode, pretrain), pts in curves.items():
        if mode == "zeroshot":
            continue
        fit = fit_power_law([p["num_train"] for p in pts], [p["test_rel_l2"] for p in pts])
        if fit is None:
            continue
        fits.append(
            {
                "task": task,
                "shift": shift,
                "model": pts[0]["model"],
                "mode": mode,
                "pretrain": pretrain,
                **fit,
                "num_train_range": [pts[0]["num_train"], pts[-1]["num_train"]],
            }
        )
    return fits


def _data_savings(curves: dict[tuple, list[dict]], fits: list[dict]) -> list[dict]:
    fit_of = {(f["task"], f["shift"], _model_key(f["model"]), f["mode"], f["pretrain"]): f for f in fits}
    out = []
    for key, pts in curves.items():
        task, shift, mkey, mode, pretrain = key
        scratch = curves.get((task, shift, mkey, "scratch", ""))
        if mode != "finetune" or not scratch:
            continue
        sn = [p["num_train"] for p in scratch]
        se = [p["test_rel_l2"] for p in scratch]
        fit = fit_of.get((task, shift, mkey, "scratch", ""))
        points = []
        for p in pts:
            n_eq, extrapolated = equivalent_scratch_size(p["test_rel_l2"], sn, se, fit)
            points.append(
                {
                    "num_train": p["num_train"],
                    "finetune_rel_l2": p["test_rel_l2"],
                    "scratch_equivalent_num_train": n_eq,
                    "savings": None if n_eq is None else n_eq / p["num_train"],
                    "extrapolated": extrapolated,
                }
            )
        out.append({"task": task, "shift": shift, "model": pts[0]["model"], "pretrain": pretrain, "points": points})
    return out


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if math.isfinite(x) else str(x)
    return str(x)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _main_tables(runs: Sequence[dict], savings: list[dict]) -> list[tuple[str, str]]:
    """Per (task, shift, model): error by N, one column per scratch / finetune / zeroshot curve + savings."""
    saving_of = {
        (s["task"], s["shift"], _model_key(s["model"]), s["pretrain"], p["num_train"]): p
        for s in savings
        for p in s["points"]
    }
    by_panel: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        by_panel[(r["task"], r["shift"], _model_key(r["model"]))].append(r)
    multi_model = len({k[2] for k in by_panel}) > 1
    tables = []
    for (task, shift, mkey), rs in sorted(by_panel.items()):
        pretrains = sorted({r["pretrain"] for r in rs if r["pretrain"]})
        columns = [("scratch", "")] + [("finetune", p) for p in pretrains]
        sizes = sorted({r["num_train"] for r in rs if r["mode"] != "zeroshot"})
        value = {(r["mode"], r["pretrain"], r["num_train"]): r["test_rel_l2"] for r in rs}
        header = ["N"] + [m if not p else f"{m} ({p})" for m, p in columns]
        header += [f"savings ({p})" for p in pretrains]
        rows = []
        for n in sizes:
            row = [n] + [value.get((m, p, n)) for m, p in columns]
            for p in pretrains:
                s = saving_of.get((task, shift, mkey, p, n))
                if s is None or s["savings"] is None:
                    row.append(None)
                else:
                    row.append(f"{s['savings']:.3g}x" + (" (extrap.)" if s["extrapolated"] else ""))
            rows.append(row)
        for p in pretrains:
            if ("zeroshot", p, 0) in value:
                rows.append([f"zero-shot ({p})"] + [None] * (len(header) - 1))
                rows[-1][1 + columns.index(("finetune", p))] = value[("zeroshot", p, 0)]
        model = rs[0]["model"]
        title = f"{task}, shift {shift or '-'}" + (f", model {_model_label(model)}" if multi_model else "")
        tables.append((title, _table(header, rows)))
    return tables


def _model_size_table(runs: Sequence[dict]) -> str | None:
    models = {_model_key(r["model"]): r for r in runs}
    if len(models) < 2:
        return None
    mkeys = sorted(models, key=lambda k: (models[k].get("num_params") or 0, k))
    header = ["task", "shift", "mode", "pretrain", "N"] + [
        f"{_model_label(models[k]['model'])} ({_fmt(models[k].get('num_params'))} p)" for k in mkeys
    ]
    cells: dict[tuple, dict] = defaultdict(dict)
    for r in runs:
        cells[(r["task"], r["shift"], r["mode"], r["pretrain"], r["num_train"])][_model_key(r["model"])] = r[
            "test_rel_l2"
        ]
    rows = [list(k) + [cells[k].get(m) for m in mkeys] for k in sorted(cells)]
    return _table(header, rows)


def _slug(*parts: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", "_".join(str(p) for p in parts if p != "")).strip("_")


def _plots(sweep_dir: str, runs: Sequence[dict], fits: list[dict]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    plot_dir = os.path.join(sweep_dir, "plots")
    os.makedirs(plot_dir, exist_ok=True)
    written = []
    curves = _curves(runs)
    fit_of = {(f["task"], f["shift"], _model_key(f["model"]), f["mode"], f["pretrain"]): f for f in fits}
    panels = sorted({k[:3] for k in curves})
    multi_model = len({k[2] for k in panels}) > 1
    for task, shift, mkey in panels:
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        keys = sorted(k for k in curves if k[:3] == (task, shift, mkey))
        for i, key in enumerate(keys):
            mode, pretrain = key[3], key[4]
            pts = curves[key]
            label = mode + (f" ({pretrain})" if pretrain else "")
            color = f"C{i}"
            if mode == "zeroshot":
                ax.axhline(pts[0]["test_rel_l2"], color=color, linestyle=":", label=label)
                continue
            n = [p["num_train"] for p in pts]
            e = [p["test_rel_l2"] for p in pts]
            ax.plot(n, e, "o-", color=color, label=label)
            fit = fit_of.get(key)
            if fit is not None:
                grid = np.geomspace(min(n), max(n), 50)
                ax.plot(grid, fit["a"] * grid ** -fit["b"], "--", color=color, alpha=0.5, linewidth=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("downstream training examples N")
        ax.set_ylabel("test relative L2 error")
        model = curves[keys[0]][0]["model"]
        ax.set_title(f"{task} {shift}" + (f" {_model_label(model)}" if multi_model else ""))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        name = f"error_vs_n_{_slug(task, shift, _model_label(model) if multi_model else '')}.png"
        fig.tight_layout()
        fig.savefig(os.path.join(plot_dir, name), dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(os.path.join("plots", name))

    # Error vs model size, one panel per (task, shift): a line per (mode, pretrain, N).
    if multi_model:
        for task, shift in sorted({k[:2] for k in panels}):
            lines: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
            for r in runs:
                if (r["task"], r["shift"]) == (task, shift) and r.get("num_params"):
                    lines[(r["mode"], r["pretrain"], r["num_train"])].append((r["num_params"], r["test_rel_l2"]))
            if not lines:
                continue
            fig, ax = plt.subplots(figsize=(7.0, 4.2))
            # Colour = N (same colour for every mode at one N), line style = mode.
            sizes = sorted({key[2] for key in lines})
            cmap = plt.get_cmap("viridis")
            for (mode, pretrain, n), pts in sorted(lines.items()):
                pts.sort()
                style = {"scratch": "o-", "finetune": "s--", "zeroshot": "^:"}[mode]
                color = "k" if mode == "zeroshot" else cmap(sizes.index(n) / max(1, len(sizes) - 1))
                label = f"{mode}" + (f" ({pretrain})" if pretrain else "") + (f" N={n}" if mode != "zeroshot" else "")
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=color, label=label)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("parameters")
            ax.set_ylabel("test relative L2 error")
            ax.set_title(f"{task} {shift}: error vs model size")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=6, ncol=2, loc="center left", bbox_to_anchor=(1.01, 0.5))
            name = f"error_vs_model_size_{_slug(task, shift)}.png"
            fig.tight_layout()
            fig.savefig(os.path.join(plot_dir, name), dpi=110, bbox_inches="tight")
            plt.close(fig)
            written.append(os.path.join("plots", name))

    zeroshot = [r for r in runs if r["mode"] == "zeroshot"]
    if zeroshot:
        zeroshot.sort(key=lambda r: (r["task"], r["shift"], r["pretrain"], _model_key(r["model"])))
        labels = [
            f"{r['task']} {r['shift']}\nfrom {r['pretrain']}" + (f" {_model_label(r['model'])}" if multi_model else "")
            for r in zeroshot
        ]
        fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(zeroshot) + 1.5), 4.2))
        ax.bar(range(len(zeroshot)), [r["test_rel_l2"] for r in zeroshot], color="C2")
        ax.set_xticks(range(len(zeroshot)))
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel("test relative L2 error")
        ax.set_title("zero-shot error of pretrained models")
        fig.tight_layout()
        fig.savefig(os.path.join(plot_dir, "zeroshot.png"), dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(os.path.join("plots", "zeroshot.png"))
    return written


def _markdown(report: dict, tables: list[tuple[str, str]], model_table: str | None) -> str:
    out = ["# Report", "", "Test relative L2 error of the best-validation learning rate per point.", ""]
    out += ["## Error by downstream size", ""]
    for title, table in tables:
        out += [f"### {title}", "", table, ""]
    out += [
        "`savings` = N_scratch(err_finetune(N)) / N: how many times more downstream examples training from "
        "scratch needs to reach the fine-tuned error (log-log interpolation of the scratch curve; "
        "`extrap.` = beyond the scratch curve, from its power-law fit).",
        "",
    ]
    if model_table:
        out += ["## Error by model size", "", model_table, ""]
    if report["fits"]:
        out += ["## Power-law fits err = a N^-b", ""]
        rows = [
            [f["task"], f["shift"], _model_label(f["model"]), f["mode"], f["pretrain"], f["a"], f["b"], f["r2"]]
            for f in report["fits"]
        ]
        out += [_table(["task", "shift", "model", "mode", "pretrain", "a", "b", "r2"], rows), ""]
    out += ["## Learning-rate selection (validation error per LR)", ""]
    rows = []
    for r in report["runs"]:
        if r["mode"] == "zeroshot":
            continue
        grid = ", ".join(f"{g['learning_rate']:g}: {_fmt(g['val_rel_l2'])}" for g in r["lr_grid"])
        rows.append([r["task"], r["shift"], r["mode"], r["pretrain"], r["num_train"], r["learning_rate"], grid])
    out += [_table(["task", "shift", "mode", "pretrain", "N", "chosen LR", "val error by LR"], rows), ""]
    if report["pretrain"]:
        out += ["## Pretraining runs", ""]
        rows = [
            [
                p.get("name", ""),
                p["task"],
                p["num_train"],
                _model_label(p["model"]),
                p.get("num_params"),
                p["test_rel_l2"],
            ]
            for p in report["pretrain"]
        ]
        out += [_table(["run", "task", "N", "model", "params", "test error"], rows), ""]
    if report["plots"]:
        out += ["## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]] + [""]
    return "\n".join(out)


def build_report(sweep_dir: str, *, plots: bool = True, verbose: bool = False) -> dict:
    """Read SWEEP_DIR/results.jsonl; write report.json, report.md, plots/*.png; return the report dict."""
    records = load_results(sweep_dir)
    runs = select_best_lr(records)
    curves = _curves(runs)
    fits = _fits(curves)
    savings = _data_savings(curves, fits)
    report = {
        "runs": runs,
        "pretrain": [r for r in records if r.get("kind") == "pretrain"],
        "all_runs": records,
        "fits": fits,
        "data_savings": savings,
        "plots": _plots(sweep_dir, runs, fits) if plots and runs else [],
    }
    tables = _main_tables(runs, savings)
    with open(os.path.join(sweep_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    with open(os.path.join(sweep_dir, "report.md"), "w") as f:
        f.write(_markdown(report, tables, _model_size_table(runs)))
    if verbose:
        for title, table in tables:
            print(f"\n{title}\n{table}")
    return report


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
