"""What a study costs before it runs: its runs, their steps, the samples they process and an estimate of device time.

    python -m experiments.sweep --config=experiments/configs/rq1_data_size.py:poisson --workdir=DIR --dry_run \
        [--samples_per_s=3167] [--eval_samples_per_s=7600] [--run_overhead_s=0]

writes DIR/plan.json (the list `plan_entries` makes: per run its name, depends_on, meta and full run config) and
prints the plan. The estimate is

    train samples / samples_per_s + evaluated samples / eval_samples_per_s + runs x run_overhead_s

with train samples = steps x batch, and evaluated samples = evaluations x num_val + num_test per run (one
evaluation per epoch, bounded by train.max_evals, plus the final test). The defaults are the paper's model on one
NVIDIA H200 in full float32 (README, "Throughput"): 3,167 training samples/s; evaluation 2.4x that, the ratio of
the measured inference and training throughputs; no per-run overhead (start-up, compilation, data generation,
checkpoints), which on a CPU is several seconds per run: pass it when sizing a CPU study.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from experiments.study import RunSpec, num_steps_of
from fno_jax.storage import paths
from fno_jax.storage.json_io import to_json, write_json_atomic

__all__ = [
    "DEFAULT_SAMPLES_PER_S",
    "EVAL_SPEEDUP",
    "RunCost",
    "describe",
    "estimate_s",
    "eval_interval",
    "plan_entries",
    "run_cost",
    "write_plan",
]

# The paper's model (width 64, 32 modes, 128 x 128, batch 128) training in float32 at matmul precision "highest"
# on one NVIDIA H200 (README, "Throughput").
DEFAULT_SAMPLES_PER_S = 3167.0
# Evaluation throughput over training throughput: 11,623 / 4,753 samples/s measured on the H200 (README).
EVAL_SPEEDUP = 2.4
PLAN_FILE = "plan.json"


@dataclasses.dataclass(frozen=True)
class RunCost:
    """Work of one run.

    Properties:
      num_steps: training steps (0 for zero-shot).
      train_samples: num_steps x batch_size.
      num_evals: validation passes during training (one per epoch, at most train.max_evals), 1 for zero-shot.
      eval_samples: num_evals x num_val + num_test (the final test).
    """

    num_steps: int
    train_samples: int
    num_evals: int
    eval_samples: int


def eval_interval(config) -> int:
    """Steps between evaluations: train.eval_every (0 = once per epoch), raised so a run has at most max_evals."""
    t = config.train
    num_steps = num_steps_of(config)
    every = int(t.eval_every) or max(1, int(config.data.num_train) // int(t.batch_size))
    max_evals = int(t.get("max_evals", 0) or 0)
    if max_evals > 0 and num_steps > 0:
        every = max(every, math.ceil(num_steps / max_evals))
    return every


def run_cost(spec: RunSpec) -> RunCost:
    c = spec.config
    num_steps = num_steps_of(c)
    if num_steps == 0:
        num_evals = 1
    else:
        num_evals = math.ceil(num_steps / eval_interval(c))
    return RunCost(
        num_steps=num_steps,
        train_samples=num_steps * int(c.train.batch_size),
        num_evals=num_evals,
        eval_samples=num_evals * int(c.data.num_val) + int(c.data.num_test),
    )


def plan_entries(runs: Sequence[RunSpec]) -> list[dict[str, Any]]:
    """plan.json: one entry per run, dependencies first: name, depends_on, meta, config (the full run config) and,
    for a length-check run, select_lr_from (the runs whose best-validation learning rate it takes; its config's
    rate is a placeholder until then)."""
    entries = []
    for r in runs:
        entry = {"name": r.name, "depends_on": list(r.depends_on), "meta": r.meta}
        entry["config"] = to_json(r.config.to_dict())
        if r.select_lr_from:
            entry["select_lr_from"] = list(r.select_lr_from)
        entries.append(entry)
    return entries


def write_plan(sweep_dir: str, runs: Sequence[RunSpec]) -> str:
    paths.makedirs(sweep_dir)
    path = paths.join(sweep_dir, PLAN_FILE)
    write_json_atomic(path, plan_entries(runs), sort_keys=False)
    return path


def _category(spec: RunSpec) -> str:
    return "pretrain" if spec.meta["kind"] == "pretrain" else spec.meta["mode"]


def estimate_s(
    costs: Sequence[RunCost], samples_per_s: float, eval_samples_per_s: float, run_overhead_s: float
) -> float:
    train = sum(c.train_samples for c in costs) / samples_per_s
    evals = sum(c.eval_samples for c in costs) / eval_samples_per_s
    return train + evals + run_overhead_s * len(costs)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _lr_list(lrs: set[float]) -> str:
    return "{" + ", ".join(f"{lr:g}" for lr in sorted(lrs)) + "}"


def describe(
    study_name: str,
    runs: Sequence[RunSpec],
    *,
    samples_per_s: float = DEFAULT_SAMPLES_PER_S,
    eval_samples_per_s: float | None = None,
    run_overhead_s: float = 0.0,
) -> str:
    """The plan in words: totals per kind of run, each pretraining run, and per downstream group the N ladder."""
    if samples_per_s <= 0 or (eval_samples_per_s is not None and eval_samples_per_s <= 0) or run_overhead_s < 0:
        raise ValueError("samples_per_s and eval_samples_per_s must be > 0, run_overhead_s >= 0.")
    eval_sps = eval_samples_per_s or EVAL_SPEEDUP * samples_per_s
    costs = {r.name: run_cost(r) for r in runs}
    lines = [f"Study {study_name!r}: {len(runs)} runs", ""]
    lines += [f"  {'runs of':<10} {'count':>7} {'steps':>14} {'train samples':>16} {'evaluated samples':>18}"]
    by_category: dict[str, list[RunCost]] = defaultdict(list)
    for r in runs:
        by_category[_category(r)].append(costs[r.name])
    for category in ("pretrain", "scratch", "finetune", "zeroshot"):
        cs = by_category.get(category, [])
        if cs:
            lines.append(_totals_row(category, cs))
    lines.append(_totals_row("all", list(costs.values())))
    total = estimate_s(list(costs.values()), samples_per_s, eval_sps, run_overhead_s)
    lines += [
        "",
        f"  estimated device time: {_duration(total)}{f' ({total:,.0f} s)' if total >= 120 else ''} at "
        f"{samples_per_s:,.0f} training and "
        f"{eval_sps:,.0f} evaluated samples/s, {run_overhead_s:g} s overhead per run",
        "",
        "Pretraining runs:",
    ]
    for r in runs:
        if r.meta["kind"] == "pretrain":
            c, cost = r.config, costs[r.name]
            lines.append(
                f"  {r.name}: {c.task}, {int(c.data.num_train):,} samples, batch {int(c.train.batch_size)}, "
                f"{r.meta.get('epochs') or c.train.num_epochs:g} epochs = {cost.num_steps:,} steps, LR "
                f"{float(c.train.learning_rate):g}, "
                f"{r.meta['num_params']:,} parameters, {cost.num_evals} evaluations"
            )
    lines += _downstream_tables(runs, costs)
    splits = sorted({(int(r.config.data.num_val), int(r.config.data.num_test)) for r in runs})
    lines += ["", "Validation / test samples per run: " + ", ".join(f"{v:,} / {t:,}" for v, t in splits)]
    return "\n".join(lines)


def _totals_row(label: str, costs: Sequence[RunCost]) -> str:
    steps = sum(c.num_steps for c in costs)
    train = sum(c.train_samples for c in costs)
    evals = sum(c.eval_samples for c in costs)
    return f"  {label:<10} {len(costs):>7,} {steps:>14,} {train:>16,} {evals:>18,}"


def _downstream_tables(runs: Sequence[RunSpec], costs: dict[str, RunCost]) -> list[str]:
    """Per (group, model): one row per N with its batch, epochs, steps and, per mode, the LR grid and seeds."""
    rows: dict[tuple, dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in runs:
        m = r.meta
        if m["kind"] != "downstream" or m["mode"] == "zeroshot" or m.get("length_check"):
            continue
        model = m["model"]
        key = (m["group"], f"w{model['width']}m{model['modes']}")
        row = rows[key].setdefault(
            int(m["num_train"]),
            {
                "batch": int(r.config.train.batch_size),
                "epochs": int(r.config.train.num_epochs),
                "steps": costs[r.name].num_steps,
                "lrs": defaultdict(set),
                "seeds": set(),
            },
        )
        source = ", ".join(x for x in (m["pretrain"], m.get("variant", "")) if x)
        row["lrs"][m["mode"] + (f" ({source})" if source else "")].add(m["learning_rate"])
        row["seeds"].add(m["seed"])
    lines = []
    for (group, model), by_n in rows.items():
        lines += [
            "",
            f"Downstream {group} ({model}):",
            f"  {'N':>7} {'batch':>6} {'epochs':>7} {'steps':>9}  seeds  learning rates per mode",
        ]
        for n in sorted(by_n):
            row = by_n[n]
            modes_of: dict[str, list[str]] = defaultdict(list)  # modes that share a grid are listed together
            for mode, lrs in sorted(row["lrs"].items(), key=lambda kv: kv[0] != "scratch"):
                modes_of[_lr_list(lrs)].append(mode)
            grids = "; ".join(f"{', '.join(modes)} {grid}" for grid, modes in modes_of.items())
            lines.append(
                f"  {n:>7,} {row['batch']:>6} {row['epochs']:>7} {row['steps']:>9,}  {len(row['seeds']):>5}  {grids}"
            )
    checks = [r for r in runs if r.meta.get("length_check")]
    if checks:
        lines += ["", f"Length check: {len(checks)} runs with twice the steps ({checks[0].name}, ...)"]
    zeroshot = [r.name for r in runs if r.meta["mode"] == "zeroshot"]
    if zeroshot:
        shown = ", ".join(zeroshot[:4]) + (", ..." if len(zeroshot) > 4 else "")
        lines += ["", f"Zero-shot evaluations: {len(zeroshot)} ({shown})"]
    return lines
