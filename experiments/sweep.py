"""Run every run of a study, resumably, and collect their summaries in `SWEEP_DIR/results.jsonl`.

    python -m experiments.sweep --config=experiments/configs/rq1_data_size.py --workdir=DIR
    python -m experiments.sweep --config=experiments/configs/rq1_data_size.py:runlocal --workdir=/tmp/rq1
    python -m experiments.sweep --config=... --workdir=DIR --shard=0/4   # one of 4 processes/hosts
    python -m experiments.sweep --config=... --workdir=DIR --dry_run     # the plan and its cost; trains nothing
    python -m experiments.report --sweep DIR

How runs use the hardware: runs execute one after another in this process, and each run uses all local
devices (data parallel inside `train_and_evaluate`). To use several hosts (or several processes each pinned to
its own devices, e.g. with CUDA_VISIBLE_DEVICES), start the same command with `--shard=i/k`, i = 0..k-1, on a
shared SWEEP_DIR: shard i runs runs i, i+k, i+2k, ... of the dependency-ordered list, and waits (polling) for a
pretraining run owned by another shard before fine-tuning from it.

Layout of SWEEP_DIR:
    study.json          the study config
    plan.json           every expanded run: name, depends_on, meta, config (experiments/plan.py)
    runs/<name>/        the run's workdir (config.json, checkpoints/, metrics.jsonl, summary.json) and
                        sweep_run.json (its full run config and meta, written before it starts)
    results.jsonl       one record per finished run: its summary.json merged with its meta; rewritten
                        atomically from all finished runs after each run, so reruns never duplicate lines.

Resuming: a run whose workdir has summary.json is skipped (its summary re-read); an unfinished run is started
again and `train_and_evaluate` resumes it from its latest checkpoint. A changed run config for an existing
run folder is an error (start a new SWEEP_DIR or delete that folder).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from experiments import plan as plan_lib
from experiments.study import RunSpec, expand_study, run_workdir
from fno_jax.json_io import to_json, write_json_atomic, write_jsonl_atomic

__all__ = ["run_sweep", "dry_run", "parse_shard", "collect_results", "SUMMARY_FILE", "RESULTS_FILE"]

RunFn = Callable[[ml_collections.ConfigDict, str], dict]
SUMMARY_FILE = "summary.json"
RESULTS_FILE = "results.jsonl"
RUN_FILE = "sweep_run.json"


def parse_shard(shard: str) -> tuple[int, int]:
    """'i/k' -> (i, k) with 0 <= i < k; '' -> (0, 1)."""
    if not shard:
        return 0, 1
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", shard)
    if not match or not int(match[1]) < int(match[2]):
        raise ValueError(f"shard must look like 'i/k' with 0 <= i < k (e.g. '0/4'), got {shard!r}.")
    return int(match[1]), int(match[2])


def _read_summary(workdir: str) -> dict | None:
    path = os.path.join(workdir, SUMMARY_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _record(spec: RunSpec, summary: dict) -> dict:
    """A results.jsonl line: the run's summary with the sweep's description of the run."""
    record = dict(summary)
    # The sweep knows which group/shift/pretrain a run belongs to; the trainer does not.
    for key in ("kind", "group", "shift", "task_ranges", "pretrain", "mode", "seed"):
        record[key] = spec.meta[key]
    record["name"] = spec.name
    record.setdefault("model", spec.meta["model"])
    record.setdefault("learning_rate", spec.meta["learning_rate"])
    if spec.meta["mode"] == "zeroshot":
        record["num_train"] = 0  # no downstream example was trained on
    return record


def collect_results(runs: Sequence[RunSpec], sweep_dir: str) -> list[dict]:
    """Rewrite SWEEP_DIR/results.jsonl from every finished run (any shard's), in plan order."""
    records = []
    for spec in runs:
        summary = _read_summary(run_workdir(sweep_dir, spec.name))
        if summary is not None:
            records.append(_record(spec, summary))
    write_jsonl_atomic(os.path.join(sweep_dir, RESULTS_FILE), records)
    return records


def _check_or_save_run(spec: RunSpec, workdir: str) -> None:
    """Save the run's full config; refuse to reuse a folder made by a different config."""
    config = to_json(spec.config.to_dict())
    path = os.path.join(workdir, RUN_FILE)
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)["config"]
        # init_from is an absolute path: moving the sweep folder must not invalidate it.
        ignore = {"init_from"}
        if {k: v for k, v in saved.items() if k not in ignore} != {k: v for k, v in config.items() if k not in ignore}:
            raise ValueError(
                f"Run folder {workdir} was made with a different run config than the study now gives. "
                "Use a new --workdir for a changed study, or delete that run folder to redo it."
            )
        return
    os.makedirs(workdir, exist_ok=True)
    payload = {"name": spec.name, "depends_on": list(spec.depends_on), "meta": spec.meta}
    payload["config"] = config
    write_json_atomic(path, payload)


def _select(runs: list[RunSpec], only: str | Sequence[str] | None) -> list[RunSpec]:
    """Runs whose name matches any `only` regex, plus (transitively) the runs they depend on."""
    if not only:
        return runs
    patterns = [only] if isinstance(only, str) else list(only)
    by_name = {r.name: r for r in runs}
    wanted = {r.name for r in runs if any(re.search(p, r.name) for p in patterns)}
    if not wanted:
        raise ValueError(f"only={patterns!r} matches no run; run names look like {runs[-1].name!r}.")
    stack = list(wanted)
    while stack:
        for dep in by_name[stack.pop()].depends_on:
            if dep not in wanted:
                wanted.add(dep)
                stack.append(dep)
    return [r for r in runs if r.name in wanted]


def _wait_for(dep_dirs: list[str], timeout_s: float, poll_s: float, name: str) -> None:
    start = time.monotonic()
    while not all(os.path.exists(os.path.join(d, SUMMARY_FILE)) for d in dep_dirs):
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(
                f"{name}: its pretraining run(s) {dep_dirs} did not finish within {timeout_s:.0f} s; "
                "start the shard that owns them (or run without --shard)."
            )
        print(f"    waiting for {[os.path.basename(d) for d in dep_dirs]} ...", flush=True)
        time.sleep(poll_s)


def run_sweep(
    study_config: ml_collections.ConfigDict,
    sweep_dir: str,
    *,
    run_fn: RunFn | None = None,
    only: str | Sequence[str] | None = None,
    shard: tuple[int, int] = (0, 1),
    keep_going: bool = False,
    dependency_timeout_s: float = 7 * 24 * 3600.0,
    poll_s: float = 30.0,
) -> list[dict]:
    """Run (or resume) every run of a study in `sweep_dir`; returns the finished runs' records.

    Args:
      study_config: a study (see experiments/study.py).
      sweep_dir: the sweep's folder; created if missing.
      run_fn: `run_fn(config, workdir) -> summary dict`, writing `workdir/summary.json`; default
        `fno_jax.train.train_and_evaluate`.
      only: regex (or list of regexes) over run names; their dependencies are included.
      shard: (i, k): run only runs i, i+k, ... of the (selected, ordered) list.
      keep_going: on a failing run, report it and continue with the runs that do not depend on it; raise at
        the end. Default: stop at the first failure (finished runs stay recorded).
      dependency_timeout_s, poll_s: how long / how often to wait for another shard's pretraining run.
    """
    if run_fn is None:
        from fno_jax.train import train_and_evaluate as run_fn  # heavy: import only when needed
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard must be (i, k) with 0 <= i < k, got {shard}.")
    runs = expand_study(study_config, sweep_dir)
    sweep_dir = os.path.abspath(sweep_dir)
    os.makedirs(sweep_dir, exist_ok=True)
    write_json_atomic(os.path.join(sweep_dir, "study.json"), to_json(study_config.to_dict()))
    plan_lib.write_plan(sweep_dir, runs)

    selected = _select(runs, only)
    mine = selected[index::count]
    mine_names = {r.name for r in mine}
    # Check every run folder up front, so a changed study fails before any work is done.
    for spec in mine:
        _check_or_save_run(spec, run_workdir(sweep_dir, spec.name))

    total, failed = len(mine), {}
    sweep_start = time.monotonic()
    print(f"Sweep {study_config.get('name', '')!r}: {total} run(s) in {sweep_dir}", flush=True)
    for k, spec in enumerate(mine, start=1):
        workdir = run_workdir(sweep_dir, spec.name)
        prefix = f"[{k}/{total}] {spec.name}"
        summary = _read_summary(workdir)
        if summary is not None:
            print(f"{prefix} ... done before, test_rel_l2={summary.get('test_rel_l2')}", flush=True)
            continue
        bad_deps = [d for d in spec.depends_on if d in failed]
        if bad_deps:
            print(f"{prefix} ... skipped: depends on failed {bad_deps}", flush=True)
            failed[spec.name] = f"dependency {bad_deps} failed"
            continue
        foreign = [run_workdir(sweep_dir, d) for d in spec.depends_on if d not in mine_names]
        _wait_for(foreign, dependency_timeout_s, poll_s, spec.name)
        print(f"{prefix} ...", flush=True)
        start = time.monotonic()
        try:
            result = run_fn(spec.config, workdir)
        except Exception as e:  # re-raised unless keep_going
            if not keep_going:
                collect_results(runs, sweep_dir)
                raise
            failed[spec.name] = f"{type(e).__name__}: {e}"
            print(f"{prefix} ... FAILED after {time.monotonic() - start:.1f} s: {e}", flush=True)
            continue
        summary = _read_summary(workdir)
        if summary is None:
            # The run function returned without writing its summary: keep what it returned.
            summary = dict(result)
            write_json_atomic(os.path.join(workdir, SUMMARY_FILE), summary, sort_keys=False)
        collect_results(runs, sweep_dir)
        elapsed, total_elapsed = time.monotonic() - start, time.monotonic() - sweep_start
        print(
            f"{prefix} ... test_rel_l2={summary.get('test_rel_l2', float('nan')):.4g} "
            f"val_rel_l2={summary.get('val_rel_l2', float('nan')):.4g} "
            f"({elapsed:.1f} s; sweep {total_elapsed:.0f} s)",
            flush=True,
        )
    records = collect_results(runs, sweep_dir)
    if failed:
        lines = "\n".join(f"  {name}: {why}" for name, why in failed.items())
        raise RuntimeError(f"{len(failed)} run(s) failed (rerun the same command to retry):\n{lines}")
    return records


def dry_run(
    study_config: ml_collections.ConfigDict,
    sweep_dir: str,
    *,
    samples_per_s: float = plan_lib.DEFAULT_SAMPLES_PER_S,
    eval_samples_per_s: float | None = None,
    run_overhead_s: float = 0.0,
) -> str:
    """Expand the study, write SWEEP_DIR/plan.json and return the plan in words; trains nothing."""
    runs = expand_study(study_config, sweep_dir)
    path = plan_lib.write_plan(os.path.abspath(sweep_dir), runs)
    text = plan_lib.describe(
        study_config.get("name", ""),
        runs,
        samples_per_s=samples_per_s,
        eval_samples_per_s=eval_samples_per_s,
        run_overhead_s=run_overhead_s,
    )
    return f"{text}\n\nWrote {path}"


def quiet_checkpoint_logs() -> None:
    """Hide the checkpoint library's INFO lines (dozens per run) and its notices about read-only (pretrained)
    checkpoint directories, so the per-run progress stays readable; its errors still show."""
    from absl import logging

    logging.get_absl_handler().addFilter(
        lambda record: record.levelno >= logging.converter.STANDARD_ERROR or "/orbax/" not in record.pathname
    )


def _cli() -> None:
    # Flags are defined only when this module is the program, so importing it (quickstart, tests,
    # experiments.main in the same process) never registers duplicate absl flags.
    config = config_flags.DEFINE_config_file("config", None, "Study config file.", lock_config=True)
    workdir = flags.DEFINE_string("workdir", None, "Sweep directory (created; reused to resume).")
    only = flags.DEFINE_multi_string("only", None, "Regex over run names (dependencies included).")
    shard = flags.DEFINE_string("shard", "", "i/k: run runs i, i+k, ... (one of k processes/hosts).")
    keep_going = flags.DEFINE_bool("keep_going", False, "Continue past failing runs; fail at the end.")
    plan_only = flags.DEFINE_bool("dry_run", False, "Write WORKDIR/plan.json and print the plan; train nothing.")
    samples_per_s = flags.DEFINE_float(
        "samples_per_s", plan_lib.DEFAULT_SAMPLES_PER_S, "Training samples/s for the dry run's estimate."
    )
    eval_samples_per_s = flags.DEFINE_float(
        "eval_samples_per_s", None, f"Evaluated samples/s (default {plan_lib.EVAL_SPEEDUP}x samples_per_s)."
    )
    run_overhead_s = flags.DEFINE_float("run_overhead_s", 0.0, "Seconds per run beyond its samples (start-up).")
    flags.mark_flags_as_required(["config", "workdir"])

    def main(argv: Sequence[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        if plan_only.value:
            text = dry_run(
                config.value,
                workdir.value,
                samples_per_s=samples_per_s.value,
                eval_samples_per_s=eval_samples_per_s.value,
                run_overhead_s=run_overhead_s.value,
            )
            print(text)
            return
        quiet_checkpoint_logs()
        run_sweep(
            config.value,
            workdir.value,
            only=only.value,
            shard=parse_shard(shard.value),
            keep_going=keep_going.value,
        )
        print(f"Done. Report: {sys.executable} -m experiments.report --sweep {workdir.value}")

    app.run(main)


if __name__ == "__main__":
    _cli()
