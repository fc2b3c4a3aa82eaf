"""The markdown tables of a sweep's report (experiments/report.py makes the numbers)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from experiments.report_data import HEADLINE, METRICS, model_key, model_label, natural_key, source_of
from fno_jax.training import metrics

__all__ = ["main_tables", "markdown"]

# Each report column's title, from the metric catalogue (a banded metric: one column per band).
METRIC_TITLES = {}
for _metric in metrics.METRICS:
    if _metric.banded:
        METRIC_TITLES.update({k: _metric.title.format(band=b) for k, b in metrics.band_keys(_metric).items()})
    else:
        METRIC_TITLES[f"test_{_metric.name}"] = _metric.title


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if math.isfinite(x) else str(x)
    return str(x)


def _cell(value: float | None, low: float | None = None, high: float | None = None) -> str:
    """'0.123' or, when the interval has width, '0.123 [0.11, 0.14]'."""
    if value is None:
        return "-"
    if low is None or high is None or low == high:
        return _fmt(value, 3)
    return f"{_fmt(value, 3)} [{_fmt(low, 3)}, {_fmt(high, 3)}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _panels(points: Sequence[dict]) -> dict[tuple, list[dict]]:
    """(task, shift, model key) -> its points."""
    by_panel: dict[tuple, list[dict]] = defaultdict(list)
    for p in points:
        by_panel[(p["task"], p["shift"], model_key(p["model"]))].append(p)
    return dict(sorted(by_panel.items(), key=lambda item: tuple(natural_key(k) for k in item[0])))


def _metric_cell(p: dict | None, metric: str) -> str:
    if p is None or metric not in p["metrics"]:
        return "-"
    m = p["metrics"][metric]
    # A point whose chosen learning rate sits at an end of its grid for most seeds is marked: the grid may be narrow.
    return _cell(m["median"], m["ci_low"], m["ci_high"]) + edge_mark(p)


def edge_mark(point: dict) -> str:
    """ " (LR edge: top)" for a point whose seeds mostly chose the top of the grid (bottom, or both ends); "" else."""
    return f" (LR edge: {point['lr_edge_side']})" if point.get("lr_at_edge") else ""


def _savings_cell(s: dict | None) -> str:
    if s is None or s["savings"] is None:
        return "-"
    low_limit, high_limit = s.get("savings_limits") or (None, None)

    def value(x: float) -> str:  # a value held at an extrapolation limit is a bound
        if high_limit is not None and math.isclose(x, high_limit, rel_tol=1e-9):
            return f">={x:.3g}"
        if low_limit is not None and math.isclose(x, low_limit, rel_tol=1e-9):
            return f"<={x:.3g}"
        return f"{x:.3g}"

    text = f"{value(s['savings'])}x"
    if s.get("savings_ci_low") is not None and s["savings_ci_low"] != s["savings_ci_high"]:
        text += f" [{value(s['savings_ci_low'])}, {value(s['savings_ci_high'])}]"
    return text + (" (extrap.)" if s["extrapolated"] else "")


def _panel_table(pts: Sequence[dict], metric: str, saving_of: dict | None) -> str:
    """Error by N, one column per scratch / finetune curve (+ savings), zero-shot rows last (one per pretrained
    model and statistics rule, in the column of its pretrained model)."""
    sources = sorted({source_of(p) for p in pts if p["mode"] == "finetune"}, key=natural_key)
    columns = [("scratch", "")] + [("finetune", src) for src in sources]
    sizes = sorted({p["num_train"] for p in pts if p["mode"] != "zeroshot"})
    point = {(p["mode"], source_of(p), p["num_train"]): p for p in pts}
    header = ["N"] + [m if not src else f"{m} ({src})" for m, src in columns]
    if saving_of is not None:
        header += [f"savings ({src})" for src in sources]
    rows = []
    for n in sizes:
        row = [n] + [_metric_cell(point.get((m, src, n)), metric) for m, src in columns]
        if saving_of is not None:
            row += [_savings_cell(saving_of.get((src, n))) for src in sources]
        rows.append(row)
    for p in sorted((p for p in pts if p["mode"] == "zeroshot"), key=lambda p: natural_key(source_of(p))):
        row = [f"zero-shot ({source_of(p)})"] + ["-"] * (len(header) - 1)
        column = next((i for i, (m, src) in enumerate(columns) if m == "finetune" and src == p["pretrain"]), None)
        row[1 + (column if column is not None else 0)] = _metric_cell(p, metric)
        rows.append(row)
    return _table(header, rows)


def main_tables(points: Sequence[dict], savings: list[dict]) -> list[tuple[str, str]]:
    """Per (task, shift, model): the paper's metric by N with intervals, and the examples saved by fine-tuning."""
    panels = _panels(points)
    multi_model = len({k[2] for k in panels}) > 1
    tables = []
    for (task, shift, _), pts in panels.items():
        model = pts[0]["model"]
        saving_of = {
            (s["source"], sp["num_train"]): sp
            for s in savings
            if (s["task"], s["shift"], s["model"]) == (task, shift, model)
            for sp in s["points"]
        }
        title = f"{task}, shift {shift or '-'}" + (f", model {model_label(model)}" if multi_model else "")
        tables.append((title, _panel_table(pts, HEADLINE, saving_of)))
    return tables


def _metric_tables(points: Sequence[dict]) -> list[str]:
    """One section per further test metric present in any point; points without it show '-'."""
    present = {m for p in points for m in p["metrics"]}
    names = [m for m in METRICS if m != HEADLINE] + [k for k in METRIC_TITLES if k not in METRICS]
    out = []
    for metric in (m for m in names if m in present):
        out += [f"### {METRIC_TITLES[metric]} (`{metric}`)", ""]
        panels = _panels(points)
        multi_model = len({k[2] for k in panels}) > 1
        for (task, shift, _), pts in panels.items():
            model = pts[0]["model"]
            title = f"{task}, shift {shift or '-'}" + (f", model {model_label(model)}" if multi_model else "")
            out += [f"#### {title}", "", _panel_table(pts, metric, None), ""]
    return out


def _modes_tables(points: Sequence[dict]) -> list[str]:
    """Per (task, shift): one row per way of training (scratch, each fine-tuning variant, zero-shot) with its
    fine-tuning mode, loss and trainable parameters, and its error by N (N = 0: label-free)."""
    if all(p.get("finetune_mode", "full") == "full" and p.get("loss", "data") == "data" for p in points):
        return []
    out = []
    for (task, shift, _), pts in _panels(points).items():
        rows_of: dict[tuple, dict[int, dict]] = defaultdict(dict)
        for p in pts:
            rows_of[(p["mode"], source_of(p))][p["num_train"]] = p
        sizes = sorted({p["num_train"] for p in pts if p["mode"] != "zeroshot"})
        header = ["training", "mode", "loss", "trainable params"] + [f"N={n}" for n in sizes]
        rows = []
        order = {"scratch": 0, "finetune": 1, "zeroshot": 2}
        for (mode, source), by_n in sorted(rows_of.items(), key=lambda kv: (order[kv[0][0]], natural_key(kv[0][1]))):
            first = next(iter(by_n.values()))
            label = mode + (f" ({source})" if source else "")
            # A zero-shot model trains on nothing: its error stands in the N = 0 column (the first one without it).
            zero = 0 if 0 in sizes else sizes[0]
            cells = [_metric_cell(by_n.get(0) if mode == "zeroshot" and n == zero else by_n.get(n), HEADLINE)
                     for n in sizes]  # fmt: skip
            rows.append([label, first.get("finetune_mode", "full"), first.get("loss", "data"),
                         _fmt(first.get("trainable_params")), *cells])  # fmt: skip
        out += [f"### {task}, shift {shift or '-'}", "", _table(header, rows), ""]
    return out


def _model_size_table(points: Sequence[dict]) -> str | None:
    models = {model_key(p["model"]): p for p in points}
    if len(models) < 2:
        return None
    mkeys = sorted(models, key=lambda k: (models[k].get("num_params") or 0, k))
    header = ["task", "shift", "mode", "pretrain", "N"] + [
        f"{model_label(models[k]['model'])} ({_fmt(models[k].get('num_params'))} p)" for k in mkeys
    ]
    cells: dict[tuple, dict] = defaultdict(dict)
    for p in points:  # the source tells apart fine-tuning variants and the two zero-shot statistics rules
        cells[(p["task"], p["shift"], p["mode"], source_of(p), p["num_train"])][model_key(p["model"])] = p
    rows = [list(k) + [_metric_cell(cells[k].get(m), HEADLINE) for m in mkeys] for k in sorted(cells)]
    return _table(header, rows)


def _several_models(items: Sequence[dict]) -> bool:
    """Whether the runs or entries span more than one model (then tables name the model in a column)."""
    return len({model_key(item["model"]) for item in items}) > 1


def _lr_table(runs: Sequence[dict]) -> str:
    multi_model = _several_models(runs)  # a model column tells RQ2's rows apart
    rows = []
    for r in runs:
        if r["mode"] == "zeroshot":
            continue
        grid = ", ".join(f"{g['learning_rate']:g}: {_fmt(g['val_rel_l2'])}" for g in r["lr_grid"])
        chosen = f"{r['learning_rate']:g}" + (f" ({r['lr_edge']} edge)" if r.get("lr_edge") else "")
        model = [model_label(r["model"])] if multi_model else []
        rows.append([r["task"], r["shift"], *model, r["mode"], source_of(r), r["num_train"], r["seed"], chosen, grid])
    header = ["task", "shift", *(["model"] if multi_model else []), "mode", "pretrain", "N", "seed", "chosen LR"]
    return _table(header + ["val error by LR"], rows)


def _length_table(entries: Sequence[dict]) -> str:
    multi_model = _several_models(entries)  # RQ2 checks each model: the model column tells their rows apart
    rows = [
        [
            e["kind"],
            e["task"],
            e["shift"],
            *([model_label(e["model"])] if multi_model else []),
            e["mode"] + (f" ({e['source']})" if e.get("source") else ""),
            e["num_train"],
            _fmt(e.get("epochs"), 3),
            len(e["seeds"]),
            _fmt(e["test_rel_l2"], 3),
            _fmt(e["test_rel_l2_doubled"], 3),
            f"{100 * e['relative_change']:+.1f}%" + ("" if e["within_tolerance"] else " (over)"),
        ]
        for e in entries
    ]
    header = ["kind", "task", "shift", *(["model"] if multi_model else []), "mode", "N", "epochs", "seeds"]
    header += ["reported", "doubled", "change"]
    return _table(header, rows)


def _headline(report: dict, tables: list[tuple[str, str]]) -> list[str]:
    """The report's opening: what a cell means, the error-by-N tables, and what the savings column means."""
    seeds = sorted({s for p in report["points"] for s in p["seeds"]})
    out = [
        "# Report",
        "",
        f"Test relative L2 error (the paper's metric) of the best-validation learning rate per point and seed: the "
        f"median over the seeds {seeds}, in brackets {report['statistic']['interval']} `(LR edge: top)` marks a "
        "point whose chosen learning rate sits at the top of its grid for most seeds (`bottom`, or `both` ends): a "
        "wider grid should look there.",
        "",
        "## Error by downstream size",
        "",
    ]
    for title, table in tables:
        out += [f"### {title}", "", table, ""]
    out += [
        "`savings` = N_scratch(err_finetune(N)) / N: how many times more downstream examples training from "
        "scratch needs to reach the fine-tuned error, seed by seed (each seed's fine-tuned error read off its own "
        "scratch curve, log-log interpolation), the median over seeds and their range; `extrap.` = the median "
        "seed's value lies beyond its scratch curve, from the curve's power-law fit, followed at most 4 times beyond "
        "the scratch N range: `>=` marks a value held at that limit, a lower bound.",
        "",
    ]
    return out


def _appendix(report: dict) -> list[str]:
    """The report's closing sections: power-law fits, the learning-rate selection, pretraining runs and plots."""
    out: list[str] = []
    if report["fits"]:
        out += ["## Power-law fits err = a N^-b (medians)", ""]
        rows = [
            [f["task"], f["shift"], model_label(f["model"]), f["mode"], f["pretrain"], f["a"], f["b"], f["r2"]]
            for f in report["fits"]
        ]
        out += [_table(["task", "shift", "model", "mode", "pretrain", "a", "b", "r2"], rows), ""]
    out += ["## Learning-rate selection (validation error per LR)", "", _lr_table(report["runs"]), ""]
    if report["pretrain"]:
        out += ["## Pretraining runs", ""]
        rows = [
            [
                p.get("name", ""),
                p["task"],
                p["num_train"],
                model_label(p["model"]),
                p.get("num_params"),
                p["test_rel_l2"],
            ]
            for p in report["pretrain"]
        ]
        out += [_table(["run", "task", "N", "model", "params", "test error"], rows), ""]
    if report["plots"]:
        out += ["## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]] + [""]
    return out


def markdown(report: dict, tables: list[tuple[str, str]]) -> str:
    out = _headline(report, tables)
    if report.get("length_check"):
        out += [
            "## Length check: the same runs with twice the steps",
            "",
            "A run has converged when doubling its length changes the reported error by at most "
            f"{report['statistic']['length_tolerance']:.0%}: pretraining runs' test error, and downstream points' "
            "median over the same seeds (each at its chosen learning rate).",
            "",
            _length_table(report["length_check"]),
            "",
        ]
    modes = _modes_tables(report["points"])
    if modes:
        out += [
            "## Fine-tuning modes and losses",
            "",
            "Test relative L2 (median [range] over seeds) by the way of "
            "training: which weights train (mode), what is minimized (loss: data, the PDE residual, or both), "
            "how many parameters train; N = 0 is label-free (no solutions, only unlabelled inputs).",
            "",
        ]
        out += modes
    model_table = _model_size_table(report["points"])
    if model_table:
        out += ["## Error by model size", "", model_table, ""]
    further = _metric_tables(report["points"])
    if further:
        out += ["## Further test metrics", ""] + further
    out += _appendix(report)
    return "\n".join(out)
