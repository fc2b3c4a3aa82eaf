"""The PNG plots of a sweep's report: medians over seeds with their bootstrap intervals as bands or bars."""

from __future__ import annotations

import io
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from fno_jax.storage import paths

__all__ = ["write_plots"]


def _slug(*parts: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", "_".join(str(p) for p in parts if p != "")).strip("_")


def _save(fig, plot_dir: str, name: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()  # written through the path layer: the sweep may be on gs://
    fig.savefig(buffer, format=os.path.splitext(name)[1][1:] or "png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    paths.write_bytes(paths.join(plot_dir, name), buffer.getvalue())
    return os.path.join("plots", name)


def _log_axes(ax, xlabel: str, ylabel: str, title: str, xticks: Sequence[float] = ()) -> None:
    """Log-log axes; `xticks` (the N or parameter counts plotted) labelled as plain numbers, no minor labels."""
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    if len(xticks):
        ax.xaxis.set_major_locator(FixedLocator(sorted(set(xticks))))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)


def _error_vs_n(plot_dir: str, curve_map: dict, fits: list[dict], multi_model: bool) -> list[str]:
    """One panel per (task, shift, model): a median line with its interval band per curve, fits dashed."""
    import matplotlib.pyplot as plt

    from experiments.report_data import model_key, model_label

    fit_of = {(f["task"], f["shift"], model_key(f["model"]), f["mode"], f["pretrain"]): f for f in fits}
    written = []
    for task, shift, mkey in sorted({k[:3] for k in curve_map}):
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        keys = sorted(k for k in curve_map if k[:3] == (task, shift, mkey))
        model = curve_map[keys[0]][0]["model"]
        for i, key in enumerate(keys):
            pts, color = curve_map[key], f"C{i}"
            label = key[3] + (f" ({key[4]})" if key[4] else "")
            if key[3] != "zeroshot" and any(p["num_train"] == 0 for p in pts):  # label-free: no N to plot at
                free = next(p for p in pts if p["num_train"] == 0)
                ax.axhline(free["test_rel_l2"], color=color, linestyle="--", label=f"{label}, label-free")
                pts = [p for p in pts if p["num_train"] > 0]
                if not pts:
                    continue
            if key[3] == "zeroshot":
                ax.axhline(pts[0]["test_rel_l2"], color=color, linestyle=":", label=label)
                ax.axhspan(pts[0]["ci_low"], pts[0]["ci_high"], color=color, alpha=0.1)
                continue
            n = [p["num_train"] for p in pts]
            ax.plot(n, [p["test_rel_l2"] for p in pts], "o-", color=color, label=label)
            ax.fill_between(n, [p["ci_low"] for p in pts], [p["ci_high"] for p in pts], color=color, alpha=0.2)
            fit = fit_of.get((task, shift, model_key(model), key[3], key[4]))
            if fit is not None:
                grid = np.geomspace(min(n), max(n), 50)
                ax.plot(grid, fit["a"] * grid ** -fit["b"], "--", color=color, alpha=0.5, linewidth=1)
        suffix = model_label(model) if multi_model else ""
        sizes = [p["num_train"] for key in keys if key[3] != "zeroshot" for p in curve_map[key] if p["num_train"] > 0]
        title = f"{task} {shift} {suffix}".strip()
        _log_axes(ax, "downstream training examples N", "test relative L2 error", title, xticks=sizes)
        ax.legend(fontsize=8)
        written.append(_save(fig, plot_dir, f"error_vs_n_{_slug(task, shift, suffix)}.png"))
    return written


def _examples_saved(plot_dir: str, savings: list[dict], multi_model: bool) -> list[str]:
    """Savings factor vs N per (task, shift, model), one line per pretrained model, interval as error bars."""
    import matplotlib.pyplot as plt

    from experiments.report_data import model_label

    panels: dict[tuple, list[dict]] = defaultdict(list)
    for s in savings:
        panels[(s["task"], s["shift"], model_label(s["model"]) if multi_model else "")].append(s)
    written = []
    for (task, shift, label), entries in sorted(panels.items()):
        if not any(p["savings"] is not None for s in entries for p in s["points"]):
            continue  # no fine-tuned error the scratch curve reaches or extrapolates to: the table says "-"
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        sizes = []
        for i, s in enumerate(entries):
            pts = [p for p in s["points"] if p["savings"] is not None]
            if not pts:
                continue
            sizes += [p["num_train"] for p in pts]
            n = np.array([p["num_train"] for p in pts], dtype=float)
            mid = np.array([p["savings"] for p in pts])
            low = np.array([p["savings_ci_low"] if p["savings_ci_low"] is not None else p["savings"] for p in pts])
            high = np.array([p["savings_ci_high"] if p["savings_ci_high"] is not None else p["savings"] for p in pts])
            yerr = np.clip(np.stack([mid - low, high - mid]), 0, None)
            ax.errorbar(n, mid, yerr=yerr, fmt="o-", color=f"C{i}", capsize=3, label=f"from {s['pretrain']}")
            extrapolated = np.array([p["extrapolated"] and not p.get("savings_bound") for p in pts], dtype=bool)
            ax.plot(n[extrapolated], mid[extrapolated], "o", mfc="white", color=f"C{i}", zorder=3)
            for bound, marker in (("lower", "^"), ("upper", "v")):
                held = np.array([p.get("savings_bound") == bound for p in pts], dtype=bool)
                ax.plot(n[held], mid[held], marker, mfc="white", color=f"C{i}", markersize=8, zorder=3)
        ax.axhline(1.0, color="k", linewidth=0.8)
        title = f"{task} {shift} {label}".strip()
        _log_axes(ax, "downstream training examples N", "examples saved (N_scratch / N)", title, xticks=sizes)
        ax.legend(fontsize=8, title="open: extrapolated; ^: at least (limit)", title_fontsize=7)
        written.append(_save(fig, plot_dir, f"examples_saved_{_slug(task, shift, label)}.png"))
    return written


def _error_vs_model_size(plot_dir: str, points: Sequence[dict]) -> list[str]:
    """Per (task, shift): a line per (mode, pretrain, N) over the parameter count, with interval bars."""
    import matplotlib.pyplot as plt

    from experiments.report_data import source_of

    written = []
    for task, shift in sorted({(p["task"], p["shift"]) for p in points}):
        lines: dict[tuple, list[dict]] = defaultdict(list)
        for p in points:  # the source keeps fine-tuning variants and the two zero-shot statistics rules apart
            if (p["task"], p["shift"]) == (task, shift) and p.get("num_params"):
                lines[(p["mode"], source_of(p), p["num_train"])].append(p)
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(8.5, 4.2))
        # Colour = N (same colour for every mode at one N), line style = mode.
        sizes = sorted({key[2] for key in lines})
        cmap = plt.get_cmap("viridis")
        for (mode, pretrain, n), pts in sorted(lines.items()):
            pts.sort(key=lambda p: p["num_params"])
            style = {"scratch": "o-", "finetune": "s--", "zeroshot": "^:"}[mode]
            if mode == "zeroshot":
                color = _ZEROSHOT_COLORS.get(pts[0].get("zeroshot_stats") or "", "k")
            else:
                color = cmap(sizes.index(n) / max(1, len(sizes) - 1))
            label = mode + (f" ({pretrain})" if pretrain else "") + (f" N={n}" if mode != "zeroshot" else "")
            x = [p["num_params"] for p in pts]
            mid = np.array([p["test_rel_l2"] for p in pts])
            yerr = np.clip(np.stack([mid - [p["ci_low"] for p in pts], [p["ci_high"] for p in pts] - mid]), 0, None)
            ax.errorbar(x, mid, yerr=yerr, fmt=style, color=color, capsize=2, label=label)
        counts = [p["num_params"] for pts in lines.values() for p in pts]
        _log_axes(ax, "parameters", "test relative L2 error", f"{task} {shift}: error vs model size", xticks=counts)
        ax.legend(fontsize=6, ncol=2, loc="center left", bbox_to_anchor=(1.01, 0.5))
        written.append(_save(fig, plot_dir, f"error_vs_model_size_{_slug(task, shift)}.png"))
    return written


# Zero-shot bars by the normalization statistics they were evaluated with (a sweep may hold both rules).
_ZEROSHOT_COLORS = {"pretrain": "C2", "downstream": "C1"}


def zeroshot_label(point: dict, multi_model: bool) -> str:
    """A zero-shot bar's label: task, shift, source, the model where several are plotted, and the statistics."""
    from experiments.report_data import model_label

    label = f"{point['task']} {point['shift']}\nfrom {point['pretrain']}"
    if multi_model:
        label += f" {model_label(point['model'])}"
    if point.get("zeroshot_stats"):
        label += f"\n{point['zeroshot_stats']} stats"
    return label


def _zeroshot(plot_dir: str, points: Sequence[dict], multi_model: bool) -> list[str]:
    import matplotlib.pyplot as plt

    from experiments.report_data import model_key, natural_key

    zeroshot = sorted(
        (p for p in points if p["mode"] == "zeroshot"),
        key=lambda p: tuple(
            natural_key(x)
            for x in (p["task"], p["shift"], p["pretrain"], model_key(p["model"]), p.get("zeroshot_stats") or "")
        ),
    )
    if not zeroshot:
        return []
    labels = [zeroshot_label(p, multi_model) for p in zeroshot]
    mid = np.array([p["test_rel_l2"] for p in zeroshot])
    yerr = np.clip(np.stack([mid - [p["ci_low"] for p in zeroshot], [p["ci_high"] for p in zeroshot] - mid]), 0, None)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(zeroshot) + 1.5), 4.2))
    colors = [_ZEROSHOT_COLORS.get(p.get("zeroshot_stats") or "", "C2") for p in zeroshot]
    ax.bar(range(len(zeroshot)), mid, yerr=yerr, capsize=3, color=colors)
    ax.set_xticks(range(len(zeroshot)))
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("test relative L2 error")
    if mid.min() > 0 and mid.max() / mid.min() > 20:
        ax.set_yscale("log")  # errors from in range to far out span decades
    ax.set_title("zero-shot error of pretrained models")
    return [_save(fig, plot_dir, "zeroshot.png")]


def write_plots(sweep_dir: str, points: Sequence[dict], fits: list[dict], savings: list[dict]) -> list[str]:
    """Write SWEEP_DIR/plots/*.png; returns their paths relative to SWEEP_DIR."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display

    from experiments.report_data import curves, model_key

    plot_dir = paths.join(sweep_dir, "plots")
    paths.makedirs(plot_dir)
    curve_map = curves(points)
    multi_model = len({model_key(p["model"]) for p in points}) > 1
    written = _error_vs_n(plot_dir, curve_map, fits, multi_model)
    written += _examples_saved(plot_dir, savings, multi_model)
    if multi_model:
        written += _error_vs_model_size(plot_dir, points)
    written += _zeroshot(plot_dir, points, multi_model)
    return written
