"""`make quickstart`: run the quickstart study at the cpu scale, build its report, print the main table.

    python -m experiments.quickstart --workdir=runs/quickstart [--config=experiments/configs/quickstart.py[:ARG]]

The default config is `experiments/configs/quickstart.py:cpu`; ARG takes the scale names of every study config.

Rerunning the same command resumes (finished runs are kept). The report lands in WORKDIR/report.md,
WORKDIR/report.json and WORKDIR/plots/.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from absl import app, flags
from ml_collections import config_flags

from experiments.report import build_report
from experiments.sweep import run_sweep
from fno_jax.runtime.cli_errors import exit_on_flag_errors, run_absl_main
from fno_jax.runtime.log_setup import configure_logging

# `make quickstart` runs the quickstart study at the cpu scale.
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "quickstart.py") + ":cpu"


def run_quickstart(study_config, workdir: str, *, run_fn=None) -> dict:
    """Sweep + report; returns the report dict."""
    start = time.monotonic()
    run_sweep(study_config, workdir, run_fn=run_fn)
    report = build_report(workdir, verbose=True)
    print(f"\nQuickstart finished in {time.monotonic() - start:.0f} s.")
    print(f"  report:  {os.path.join(workdir, 'report.md')}")
    print(f"  data:    {os.path.join(workdir, 'report.json')}  (runs: {len(report['runs'])})")
    for plot in report["plots"]:
        print(f"  plot:    {os.path.join(workdir, plot)}")
    return report


def _cli() -> None:
    # A default config file is loaded (with any --config.KEY overrides) as soon as its flag is defined.
    with exit_on_flag_errors("experiments.quickstart"):
        config = config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Study config file.", lock_config=True)
    workdir = flags.DEFINE_string("workdir", None, "Output directory (reused to resume).")
    flags.mark_flags_as_required(["workdir"])

    def main(argv: Sequence[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        configure_logging()
        run_quickstart(config.value, workdir.value)

    run_absl_main(main, "experiments.quickstart")


if __name__ == "__main__":
    _cli()
