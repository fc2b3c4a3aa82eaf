"""Train a finished sweep run once more with one change to its config: the follow-up checks of a report
(`experiments.pretrain_sensitivity`, `experiments.lr_edge_check`) are such reruns."""

from __future__ import annotations

from collections.abc import Callable

import ml_collections

from fno_jax.config import with_defaults
from fno_jax.runtime.cli_errors import UserError
from fno_jax.storage import paths
from fno_jax.train import train_and_evaluate


def read_report(sweep: str) -> dict:
    """SWEEP_DIR/report.json; an error naming the command that writes it when there is none."""
    report_path = paths.join(sweep, "report.json")
    if not paths.exists(report_path):
        raise UserError(f"{report_path} does not exist: run `python -m experiments.report --sweep {sweep}`.")
    return paths.read_json(report_path)


def rerun(sweep: str, name: str, workdir: str, edit: Callable[[ml_collections.ConfigDict], None]) -> dict:
    """The summary of sweep run `name` trained again in `workdir` with `edit` applied to its config (a finished
    rerun is kept, so a check that stopped resumes)."""
    summary_path = paths.join(workdir, "summary.json")
    if not paths.exists(summary_path):
        config = ml_collections.ConfigDict(
            with_defaults(paths.read_json(paths.join(sweep, "runs", name, "config.json")))
        )
        edit(config)
        train_and_evaluate(config, workdir)
    return paths.read_json(summary_path)
