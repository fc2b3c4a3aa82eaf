"""The numbers of a sweep's report: results loaded, the learning rate chosen per point and seed, points aggregated
over seeds with their intervals, power-law fits and data savings (`experiments.report` writes them out; tables and
plots format them). The report.json fields are described in `experiments.report`."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fno_jax.config import MODEL_SIZE_KEYS
from fno_jax.storage import paths
from fno_jax.training import metrics

__all__ = [
    "aggregate_points",
    "bootstrap_ci",
    "curves",
    "equivalent_scratch_size",
    "fit_power_law",
    "load_results",
    "select_best_lr",
]

REQUIRED = ("task", "mode", "num_train", "model", "test_rel_l2")
# The paper's metric first: it is the headline of every table and plot.
HEADLINE = f"test_{metrics.HEADLINE}"
# The test metrics of the catalogue (`fno_jax.training.metrics`) as summary keys; banded ones flattened per band.
METRICS = tuple(f"test_{m.name}" for m in metrics.METRICS if not m.banded)
BANDED = {f"test_{m.name}": m for m in metrics.METRICS if m.banded}
BANDS = metrics.BANDS
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
LEVEL = 0.95
# The scratch curve's power law is followed at most this factor beyond its largest (or below its smallest) N: a
# scratch-equivalent N further out is reported as a bound at the limit, not as a number read off a long extrapolation.
EXTRAPOLATION_LIMIT = 4.0
# The length check: a run has converged when doubling its length changes the reported error by at most this much.
LENGTH_TOLERANCE = 0.15


def load_results(sweep_dir: str) -> list[dict]:
    """The records of SWEEP_DIR/results.jsonl, each checked to have the fields a report needs."""
    path = paths.join(sweep_dir, "results.jsonl")
    if not paths.exists(path):
        raise ValueError(
            f"sweep_dir: no results.jsonl in {sweep_dir!r}; run `python -m experiments.sweep "
            "--config=... --workdir=DIR` first (it writes DIR/results.jsonl as runs finish)."
        )
    records = []
    # one read: results.jsonl may be a gs:// object
    for line_no, line in enumerate(paths.read_text(path).splitlines(), start=1):
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
        record.setdefault("seed", 0)  # results from before seeds were recorded: one seed
        records.append(record)
    return records


def model_key(model: dict) -> tuple[int, ...]:
    """(width, modes, depth, fc_dim): what tells two models apart."""
    return tuple(int(model.get(k, 0)) for k in MODEL_SIZE_KEYS)


def model_label(model: dict) -> str:
    return f"w{model.get('width')}m{model.get('modes')}"


def source_of(r: dict) -> str:
    """The curve a run or point belongs to within its mode: the pretrained model it starts from, with its
    fine-tuning variant; for a zero-shot one also the statistics rule it normalizes with."""
    label = r.get("pretrain", "")
    if r.get("variant"):
        label = f"{label}, {r['variant']}" if label else r["variant"]
    if r.get("mode") == "zeroshot" and r.get("zeroshot_stats"):
        label += f", {r['zeroshot_stats']} stats"
    return label


def point_key(r: dict) -> tuple:
    """(task, shift, model key, mode, source, N): one point of a curve (`source_of`)."""
    return (r["task"], r["shift"], model_key(r["model"]), r["mode"], source_of(r), int(r["num_train"]))


def select_best_lr(records: Sequence[dict]) -> list[dict]:
    """One record per (task, shift, mode, pretrain, N, model, seed): the lowest val_rel_l2 over learning rates.

    Each selected record gets `lr_grid`: every learning rate tried with its val/test error, sorted by LR.
    """
    buckets: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if r.get("kind") != "pretrain" and not r.get("length_check"):
            buckets[(*point_key(r), int(r["seed"]))].append(r)
    selected = []
    for key in sorted(buckets, key=lambda k: (k[0], k[1], k[2], k[3], k[4], k[5], k[6])):
        group = buckets[key]
        best = dict(min(group, key=lambda r: (_finite(r["val_rel_l2"]), r.get("learning_rate") or 0.0)))
        rates = sorted({r["learning_rate"] for r in group if r.get("learning_rate") is not None})
        # A chosen rate at either end of a grid of three or more: the grid may not bracket the best rate. Which end
        # says where a wider grid would look.
        lr = best.get("learning_rate")
        edge = None if len(rates) < 3 else "bottom" if lr == rates[0] else "top" if lr == rates[-1] else None
        best["lr_at_edge"], best["lr_edge"] = edge is not None, edge
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


def edge_side(runs: Sequence[dict]) -> str | None:
    """The end of the grid most seeds of a point chose: "top", "bottom", "both" (most at an end, neither end a
    majority by itself), or None when most seeds chose a rate inside the grid."""
    n = len(runs)
    top, bottom = (sum(r.get("lr_edge") == side for r in runs) for side in ("top", "bottom"))
    if top + bottom <= n / 2:
        return None
    return "top" if top > n / 2 else "bottom" if bottom > n / 2 else "both"


def _finite(x: Any) -> float:
    x = float(x) if x is not None else math.inf
    return x if math.isfinite(x) else math.inf


def bootstrap_ci(
    values: Sequence[float],
    *,
    statistic: Callable[..., Any] = np.median,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = LEVEL,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` over `values` (resampled with replacement); deterministic."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("bootstrap_ci: no values.")
    if v.size == 1:
        return float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    stats = statistic(v[rng.integers(0, v.size, size=(resamples, v.size))], axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def _metrics_of(record: dict) -> dict[str, float]:
    """The test metrics a record carries (a banded one as test_rel_l2_band_<low|mid|high>); missing ones are absent."""
    out = {m: float(record[m]) for m in METRICS if record.get(m) is not None}
    for key, metric in BANDED.items():
        bands = record.get(key)
        if isinstance(bands, list | tuple) and len(bands) == len(BANDS):
            bands = dict(zip(BANDS, bands, strict=True))
        if isinstance(bands, dict):
            flat = metrics.band_keys(metric)
            out.update({k: float(bands[b]) for k, b in flat.items() if bands.get(b) is not None})
    return out


def aggregate_points(runs: Sequence[dict]) -> list[dict]:
    """One entry per (task, shift, pretrain, model, mode, N) over the per-seed best runs: median and interval."""
    by_point: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        by_point[point_key(r)].append(r)
    points = []
    for key in sorted(by_point):
        rs = sorted(by_point[key], key=lambda r: r["seed"])
        metrics: dict[str, dict[str, Any]] = {}
        for name in sorted({m for r in rs for m in _metrics_of(r)}):
            pairs = [(r["seed"], _metrics_of(r)[name]) for r in rs if name in _metrics_of(r)]
            values = [v for _, v in pairs]
            low, high = min(values), max(values)
            metrics[name] = {
                "median": float(np.median(values)),
                "ci_low": low,
                "ci_high": high,
                "seeds": [s for s, _ in pairs],
                "values": values,
            }
        first = rs[0]
        edges = sum(bool(r.get("lr_at_edge")) for r in rs)
        points.append(
            {
                "task": first["task"],
                "shift": first["shift"],
                "pretrain": first["pretrain"],
                "variant": first.get("variant", ""),
                "zeroshot_stats": first.get("zeroshot_stats") if first["mode"] == "zeroshot" else None,
                "source": source_of(first),
                "model": first["model"],
                "num_params": first.get("num_params"),
                "finetune_mode": first.get("finetune_mode", "full"),
                "loss": first.get("loss", "data"),
                "trainable_params": first.get("trainable_params", first.get("num_params")),
                "mode": first["mode"],
                "num_train": int(first["num_train"]),
                "seeds": [r["seed"] for r in rs],
                "pretrain_seeds": sorted({r["pretrain_seed"] for r in rs if r.get("pretrain_seed") is not None}),
                "test_rel_l2": metrics[HEADLINE]["median"],
                "ci_low": metrics[HEADLINE]["ci_low"],
                "ci_high": metrics[HEADLINE]["ci_high"],
                "coverage": order_statistic_coverage(len(rs)),
                # Seeds whose chosen learning rate sits at an end of the grid; most of them: the grid may be too narrow.
                "lr_edge_seeds": edges,
                "lr_at_edge": edges > len(rs) / 2,
                "lr_edge_side": edge_side(rs),
                "metrics": metrics,
            }
        )
    return points


def order_statistic_coverage(n: int) -> float:
    """The probability that the range [lowest, highest] of n independent draws covers the median of their
    distribution: 1 - 2 (1/2)^n, whatever the distribution (0 for a single draw)."""
    return 0.0 if n < 2 else 1.0 - 2.0 * 0.5**n


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
    log_n = (math.log(fit["a"]) - math.log(target)) / fit["b"]
    if log_n > math.log(np.finfo(np.float64).max):  # a nearly flat fit: no finite N reaches the target
        return None, True
    return float(math.exp(log_n)), True


def natural_key(value: Any) -> tuple:
    """Sort key that orders the numbers inside labels by value: e1-2.5 < e5-10 < e10-20, w8m4 < w16m8."""
    parts = re.split(r"(\d+(?:\.\d+)?)", str(value))
    return tuple((1, float(x), "") if i % 2 else (0, 0.0, x) for i, x in enumerate(parts))


def curves(points: Sequence[dict]) -> dict[tuple, list[dict]]:
    """(task, shift, model key, mode, pretrain) -> points sorted by N."""
    out: dict[tuple, list[dict]] = defaultdict(list)
    for p in points:
        out[(p["task"], p["shift"], model_key(p["model"]), p["mode"], source_of(p))].append(p)
    for v in out.values():
        v.sort(key=lambda p: p["num_train"])
    return out


def _fits(curve_map: dict[tuple, list[dict]]) -> list[dict]:
    fits = []
    for (task, shift, _, mode, pretrain), pts in curve_map.items():
        pts = [p for p in pts if p["num_train"] > 0]
        if mode == "zeroshot" or not pts:
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
                "pretrain": pts[0]["pretrain"],
                "source": pretrain,
                **fit,
                "num_train_range": [pts[0]["num_train"], pts[-1]["num_train"]],
            }
        )
    return fits


def _savings_curve(scratch: Sequence[tuple[int, float]], finetune: Sequence[tuple[int, float]]) -> list:
    """(N, N_scratch, savings, extrapolated, bound) per fine-tuned (N, error), against a scratch curve of (N, error).

    N_scratch is clipped to [min N / EXTRAPOLATION_LIMIT, max N * EXTRAPOLATION_LIMIT] of the scratch curve; `bound`
    says which end clipped it: "lower" (the savings are at least the value), "upper" (at most), or "" (none)."""
    sn, se = [n for n, _ in scratch], [e for _, e in scratch]
    fit = fit_power_law(sn, se)
    low, high = min(sn) / EXTRAPOLATION_LIMIT, max(sn) * EXTRAPOLATION_LIMIT
    out = []
    for n, err in finetune:
        n_eq, extrapolated = equivalent_scratch_size(err, sn, se, fit)
        bound = ""
        if n_eq is not None and n_eq > high:
            n_eq, bound = high, "lower"
        elif n_eq is not None and n_eq < low:
            n_eq, bound = low, "upper"
        out.append((n, n_eq, None if n_eq is None else n_eq / n, extrapolated, bound))
    return out


def _per_seed(points: Sequence[dict]) -> dict[int, list[tuple[int, float]]]:
    """seed -> [(N, the seed's error)] over a curve's points (the points where the seed ran)."""
    out: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for p in points:
        headline = p["metrics"][HEADLINE]
        for seed, value in zip(headline["seeds"], headline["values"], strict=True):
            out[seed].append((p["num_train"], value))
    return out


def _savings_by_seed(scratch: Sequence[dict], finetune: Sequence[dict]) -> list[list[tuple]]:
    """Per fine-tuned point: (seed, N_scratch, savings, extrapolated, bound) of each seed, its fine-tuned error read
    off its own scratch curve (seed s fine-tuned against seed s from scratch: the same pool, init stream and
    order), for the seeds that ran every scratch point."""
    scratch_by_seed = {s: c for s, c in _per_seed(scratch).items() if len(c) == len(scratch)}
    out: list[list[tuple]] = [[] for _ in finetune]
    for seed, fine in _per_seed(finetune).items():
        if seed not in scratch_by_seed:
            continue
        for n, n_eq, saving, extrapolated, bound in _savings_curve(scratch_by_seed[seed], fine):
            i = next(j for j, p in enumerate(finetune) if p["num_train"] == n)
            out[i].append((seed, n_eq, saving, extrapolated, bound))
    return out


def _median_entry(entries: list[tuple]) -> tuple:
    """The (N_scratch, savings, extrapolated, bound) of the median seed's savings: the middle one of an odd count,
    the geometric mean of the two middle ones of an even count (extrapolated or bounded if either is)."""
    ordered = sorted(entries, key=lambda e: e[2])
    k = len(ordered)
    if k % 2:
        _, n_eq, saving, extrapolated, bound = ordered[k // 2]
        return n_eq, saving, extrapolated, bound
    a, b = ordered[k // 2 - 1], ordered[k // 2]
    return (math.sqrt(a[1] * b[1]), math.sqrt(a[2] * b[2]), a[3] or b[3], a[4] or b[4])


def _data_savings(curve_map: dict[tuple, list[dict]]) -> list[dict]:
    """Per fine-tuned curve and point: the examples saved, seed by seed, and their median and range."""
    out = []
    for key, pts in curve_map.items():
        task, shift, mkey, mode, source = key
        scratch = curve_map.get((task, shift, mkey, "scratch", ""))
        pts = [p for p in pts if p["num_train"] > 0]  # a label-free point saves no examples: it uses none
        if mode != "finetune" or not scratch or not pts:
            continue
        scratch_n = [p["num_train"] for p in scratch]
        points = []
        for p, entries in zip(pts, _savings_by_seed(scratch, pts), strict=True):
            n = p["num_train"]
            known = [e for e in entries if e[2] is not None]
            n_eq, saving, extrapolated, bound = _median_entry(known) if known else (None, None, True, "")
            whole = len(known) == len(entries) and known
            points.append(
                {
                    "num_train": n,
                    "finetune_rel_l2": p["test_rel_l2"],
                    "scratch_equivalent_num_train": n_eq,
                    "savings": saving,
                    "extrapolated": bool(extrapolated),
                    "savings_bound": bound,
                    "savings_ci_low": min(e[2] for e in known) if whole else None,
                    "savings_ci_high": max(e[2] for e in known) if whole else None,
                    "seeds": [e[0] for e in entries],
                    "savings_by_seed": [e[2] for e in entries],
                    "extrapolated_by_seed": [bool(e[3]) for e in entries],
                    "savings_limits": [
                        min(scratch_n) / EXTRAPOLATION_LIMIT / n,
                        max(scratch_n) * EXTRAPOLATION_LIMIT / n,
                    ],
                }
            )
        out.append(
            {"task": task, "shift": shift, "model": pts[0]["model"], "pretrain": pts[0]["pretrain"], "source": source,
             "variant": pts[0].get("variant", ""), "points": points}
        )  # fmt: skip
    return out


def length_check(records: Sequence[dict], points: Sequence[dict]) -> list[dict]:
    """Each doubled run of the length check beside what the report states: a pretraining run's test error, or a
    point's median over seeds (the same seeds, their chosen learning rates, twice the steps)."""
    out = []
    regular = {r["name"]: r for r in records if r.get("name") and not r.get("length_check")}
    # Pretraining: per pretrain entry and model, the median over its seeds' runs beside the median of the same
    # seeds' doubled runs.
    pretrain: dict[str, list[tuple[dict, dict]]] = defaultdict(list)
    for r in records:
        if r.get("kind") == "pretrain" and r.get("length_check"):
            base = regular.get(r["name"].removesuffix("-x2"))
            if base is not None:
                pretrain[re.sub(r"-s\d+$", "", base["name"])].append((base, r))
    for _, pairs in sorted(pretrain.items(), key=lambda item: natural_key(item[0])):  # w8m4 before w16m8
        pairs.sort(key=lambda pair: pair[0]["seed"])
        bases, doubled_runs = [b for b, _ in pairs], [d for _, d in pairs]
        entry = _length_entry(
            "pretrain",
            bases[0],
            [b["test_rel_l2"] for b in bases],
            [d["test_rel_l2"] for d in doubled_runs],
            [b["seed"] for b in bases],
        )
        out.append({**entry, "epochs": bases[0].get("epochs"), "epochs_doubled": doubled_runs[0].get("epochs")})
    doubled: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if r.get("kind") != "pretrain" and r.get("length_check"):
            doubled[point_key(r)].append(r)
    by_key = {(p["task"], p["shift"], model_key(p["model"]), p["mode"], p["source"], p["num_train"]): p for p in points}
    for key, runs in sorted(doubled.items(), key=lambda item: tuple(natural_key(x) for x in item[0])):
        point = by_key.get(key)
        if point is None:
            continue
        seeds = sorted(r["seed"] for r in runs)
        headline = point["metrics"][HEADLINE]
        reported = [v for s, v in zip(headline["seeds"], headline["values"], strict=True) if s in seeds]
        entry = _length_entry("downstream", point, reported, [r["test_rel_l2"] for r in runs], seeds)
        epochs = runs[0].get("epochs")
        out.append({**entry, "epochs": epochs / 2 if epochs else None, "epochs_doubled": epochs})
    return out


def _length_entry(kind: str, base: dict, reported: list[float], doubled: list[float], seeds: list[int]) -> dict:
    median, median_doubled = float(np.median(reported)), float(np.median(doubled))
    change = (median_doubled - median) / median
    return {
        "kind": kind,
        "task": base["task"],
        "shift": base.get("shift", "pretrain"),
        "model": base["model"],
        "mode": base["mode"] if kind == "downstream" else "scratch",
        "source": base.get("source", ""),
        "num_train": int(base["num_train"]),
        "seeds": seeds,
        "test_rel_l2": median,
        "test_rel_l2_doubled": median_doubled,
        "relative_change": change,
        "within_tolerance": abs(change) <= LENGTH_TOLERANCE,
    }
