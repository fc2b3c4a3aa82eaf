"""Where in the downstream range does a study's error sit? Its test error split by a scalar coefficient.

For every point of a sweep's report (of the task `--task`), each seed's chosen run is evaluated again on its own test
set (made again from the run's data spec, as `fno_jax.verify` does) and its per-sample relative L2 error is grouped by
the value of the coefficient `--by` (Helmholtz's `omega`: integers, one operator each); the row holds, per value, the
median over seeds of each seed's mean error at that value. Each pre-training the points start from (or of the task
itself) is evaluated zero-shot on the same downstream test set with its own (pre-training) statistics. A value outside
the pre-training range is one the pretrained model never saw.

    python -m experiments.error_by_coefficient --sweep runs/rq4_mixed --task helmholtz [--by omega] [--shift w5-15]

Writes SWEEP_DIR/error_by_<by>.json and prints a table. Requires the sweep's report (experiments.report); a run
must have kept its checkpoints.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from experiments.report_data import natural_key, point_key
from experiments.rerun import read_report
from fno_jax import pretrained, verify
from fno_jax.export import export_bundle
from fno_jax.runtime.cli_errors import UserError, exit_on_expected_errors
from fno_jax.storage import paths
from fno_jax.storage.json_io import write_text_atomic


def _operator(workdir: str) -> pretrained.Operator:
    with tempfile.TemporaryDirectory() as tmp:
        export_bundle(workdir, paths.join(tmp, "bundle"))
        return pretrained.operator(paths.join(tmp, "bundle"))


def mean_by_value(op: pretrained.Operator, batch: dict[str, np.ndarray], by: str) -> dict[str, float]:
    """The mean per-sample test relative L2 error of `op` on `batch`, per value of the coefficient `by`."""
    if by not in batch or np.ndim(batch[by]) != 1:
        scalars = sorted(k for k, v in batch.items() if np.ndim(v) == 1)
        raise UserError(f"--by {by!r} is not a scalar coefficient of this task's samples; it has {scalars}.")
    errors = verify.per_sample_test_metrics(op, batch)["rel_l2"]
    groups: dict[float, list[float]] = defaultdict(list)
    for value, error in zip(np.asarray(batch[by]).tolist(), errors.tolist(), strict=True):
        groups[value].append(error)
    return {f"{v:g}": float(np.mean(groups[v])) for v in sorted(groups)}


def by_coefficient(sweep: str, task: str, by: str, shift: str = "") -> dict:
    """Per point of `task` at `shift` (needed when the task has several), and per pre-training (zero-shot with its
    own statistics on that shift's test set): the error per value of `by`."""
    report = read_report(sweep)
    runs = [r for r in report["runs"] if r["task"] == task and r["mode"] != "zeroshot" and not r.get("length_check")]
    if not runs:
        raise UserError(f"{sweep}/report.json has no runs of task {task!r}; its tasks: {_tasks(report)}.")
    shifts = sorted({r["shift"] for r in runs})
    if shift not in shifts and (shift or len(shifts) > 1):
        raise UserError(f"{task} in {sweep} has the shifts {shifts}; name one with --shift (got {shift!r}).")
    points: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        _, point_shift, _, mode, source, n = point_key(r)
        if point_shift == (shift or shifts[0]):
            points[f"{point_shift} {mode}" + (f" from {source}" if source else "") + f", N = {n}"].append(r)
    rows, cards, tests = [], [], {}  # the test sets made so far, by data spec (a shift's points share one)
    for label, runs in sorted(points.items(), key=lambda item: natural_key(item[0])):
        per_seed = []
        for r in sorted(runs, key=lambda r: r["seed"]):
            op = _operator(paths.join(sweep, "runs", r["name"]))
            cards.append(op.card)
            per_seed.append(mean_by_value(op, _own_test_data(op.card, tests), by))
        rows.append(_row(label, per_seed, [r["seed"] for r in runs]))
    test = _own_test_data(cards[0], tests)
    # The pre-trainings the points start from, or of the task itself (another family's model lacks its inputs).
    sources = {task} | {r.get("pretrain") for runs in points.values() for r in runs}
    for p in report.get("pretrain", []):
        if p.get("length_check") or p["task"] not in sources:
            continue
        op = _operator(paths.join(sweep, "runs", p["name"]))
        row = _row(f"zero-shot from {p['name']} (pre-training statistics)", [mean_by_value(op, test, by)], [p["seed"]])
        row["pretrain_task_spec"] = op.card.get("task_spec")
        rows.append(row)
    counts = {f"{v:g}": int(c) for v, c in zip(*np.unique(test[by], return_counts=True), strict=True)}
    out = {
        "task": task, "shift": shift or shifts[0], "by": by, "task_spec": cards[0].get("task_spec"),
        "test_samples": counts, "rows": rows,
    }  # fmt: skip
    write_text_atomic(paths.join(sweep, f"error_by_{by}.json"), json.dumps(out, indent=2) + "\n")
    return out


def _own_test_data(card: dict, made: dict[str, dict]) -> dict[str, np.ndarray]:
    """The test set of a run's card, made once per data spec (`made` keeps them)."""
    data = card["training_data"]
    chunk = ((card.get("run_config") or {}).get("data") or {}).get("generate_chunk")
    spec = [card.get("task_spec"), data.get("data_seed"), data.get("num_test"), data.get("resolution"), chunk]
    key = json.dumps(spec, sort_keys=True, default=str)
    if key not in made:
        made[key] = verify.card_test_data(card, int(data["num_test"]))
    return made[key]


def _row(label: str, per_seed: list[dict[str, float]], seeds: list[int]) -> dict:
    values = sorted({v for s in per_seed for v in s}, key=float)
    median = {v: statistics.median(s[v] for s in per_seed if v in s) for v in values}
    return {"point": label, "seeds": seeds, "median": median, "by_seed": per_seed}


def _tasks(report: dict) -> list[str]:
    return sorted({r["task"] for r in report["runs"]})


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.error_by_coefficient", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--sweep", required=True, help="a sweep directory with report.json")
    parser.add_argument("--task", required=True, help="the downstream task (family) whose points to split")
    parser.add_argument("--by", default="omega", help="a scalar coefficient of the task's samples (default omega)")
    parser.add_argument("--shift", default="", help="the task's shift, e.g. w5-15 (needed when it has several)")
    args = parser.parse_args(argv)
    with exit_on_expected_errors(parser.prog):
        out = by_coefficient(args.sweep, args.task, args.by, args.shift)
    values = list(out["test_samples"])
    print("| point | " + " | ".join(f"{args.by} = {v}" for v in values) + " |")
    print("| --- " * (len(values) + 1) + "|")
    print("| test samples | " + " | ".join(str(out["test_samples"][v]) for v in values) + " |")
    for row in out["rows"]:
        print(f"| {row['point']} | " + " | ".join(f"{row['median'].get(v, float('nan')):.3g}" for v in values) + " |")


if __name__ == "__main__":
    main()
