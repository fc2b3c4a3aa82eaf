"""Does a downstream answer depend on how long the model was pre-trained?

The length check of a study (`study.length_check`) doubles every pre-training run (`pretrain-<family>-s<k>-x2`).
When pre-training still moves by more than the check's tolerance, what matters is whether the downstream numbers
move: this command fine-tunes again, from the doubled pretrained models, each seed's chosen run (its best-validation
learning rate) of the given downstream sizes, and prints, per point (task, shift, pretrained model, FNO size,
fine-tuning mode, loss) and size, the reported median beside the median from the doubled pre-training.

    python -m experiments.pretrain_sensitivity --sweep runs/rq1_data_size --num_train 2,128

The runs go to SWEEP_DIR/pretrain_sensitivity/<run name> (a finished one is kept, so the command resumes) and the
table to SWEEP_DIR/pretrain_sensitivity/results.json. Requires a finished sweep with its report (experiments.report)
and its doubled pre-training runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence

from experiments.rerun import read_report, rerun
from fno_jax.runtime.cli_errors import UserError, exit_on_expected_errors
from fno_jax.storage import paths
from fno_jax.storage.json_io import write_text_atomic


def point_of(run: dict) -> str:
    """A report run's point, as a label: task, shift, pretrained model, FNO size, fine-tuning mode, loss, variant."""
    model = run["model"]
    parts = [run["task"], run["shift"], f"from {run['pretrain']}", f"w{model['width']}m{model['modes']}"]
    parts += [run["finetune_mode"], run["loss"], run.get("variant") or ""]
    return " ".join(part for part in parts if part)


def chosen_runs(report: dict, num_train: Sequence[int]) -> dict[tuple[str, int], list[dict]]:
    """The report's chosen fine-tuned run of every seed at each of `num_train` (not the length check's), by point and
    N, in seed order."""
    points: dict[tuple[str, int], list[dict]] = {}
    for r in report["runs"]:
        if r["mode"] == "finetune" and not r["length_check"] and r["num_train"] in set(num_train):
            points.setdefault((point_of(r), r["num_train"]), []).append(r)
    missing = set(num_train) - {n for _, n in points}
    if missing:
        raise UserError(f"the report has no fine-tuned runs at N = {sorted(missing)}; choose among its sizes.")
    return {key: sorted(runs, key=lambda r: r["seed"]) for key, runs in sorted(points.items())}


def doubled(init_from: str) -> str:
    """The doubled pre-training run of the length check beside `init_from`; an error if it has not finished."""
    path = init_from.rstrip("/") + "-x2"
    if not paths.exists(paths.join(path, "summary.json")):
        raise UserError(
            f"{path} has no summary.json: the doubled pre-training run has not finished; run the study's sweep "
            "with its length check (study.length_check) first."
        )
    return path


def _from_doubled(sweep: str, run: dict, out: str) -> float:
    """Fine-tune `run` again from the doubled pretrained model; its test relative L2 error."""
    doubled_path = doubled(run["init_from"])

    def edit(config):
        config.init_from = doubled_path

    return float(rerun(sweep, run["name"], paths.join(out, run["name"]), edit)["test_rel_l2"])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.pretrain_sensitivity", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--sweep", required=True, help="a finished sweep directory with report.json")
    parser.add_argument("--num_train", default="2,128", help="comma-separated downstream sizes")
    args = parser.parse_args(argv)
    with exit_on_expected_errors(parser.prog):
        rows = _compare(args.sweep, [int(n) for n in args.num_train.split(",") if n.strip()])
    print("| point | N | reported | from doubled pre-training | change |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        a, b = row["reported"], row["doubled_pretraining"]
        print(
            f"| {row['point']} | {row['num_train']} | {row['median_reported']:.3g} [{min(a):.3g}, {max(a):.3g}] "
            f"| {row['median_doubled_pretraining']:.3g} [{min(b):.3g}, {max(b):.3g}] "
            f"| {100 * row['relative_change']:+.1f}% |"
        )


def _compare(sweep: str, sizes: list[int]) -> list[dict]:
    """Per point and size: the seeds' reported errors and their errors fine-tuned from the doubled pre-training."""
    report = read_report(sweep)
    out = paths.join(sweep, "pretrain_sensitivity")
    rows = []
    for (point, n), runs in chosen_runs(report, sizes).items():
        reported = [r["test_rel_l2"] for r in runs]
        again = [_from_doubled(sweep, r, out) for r in runs]
        rows.append(
            {
                "point": point,
                "num_train": n,
                "seeds": [r["seed"] for r in runs],
                "learning_rates": [r["learning_rate"] for r in runs],
                "reported": reported,
                "doubled_pretraining": again,
                "median_reported": statistics.median(reported),
                "median_doubled_pretraining": statistics.median(again),
                "relative_change": statistics.median(again) / statistics.median(reported) - 1,
            }
        )
    write_text_atomic(paths.join(out, "results.json"), json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
