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
pretraining run owned by another shard before fine-tuning from it (or gives up on it if that run failed).

Multi-host: launched as several processes (docs/DISTRIBUTED.md), the sweep is one job whose runs each use all
hosts, and process 0 alone writes the sweep's files; `--shard` is refused there (it is for independent
single-host jobs).

Layout of SWEEP_DIR:
    study.json          the study config
    plan.json           every expanded run: name, depends_on, meta, config (experiments/plan.py)
    runs/<name>/        the run's workdir (config.json, checkpoints/, metrics.jsonl, summary.json) and
                        sweep_run.json (its full run config and meta, written before it starts);
                        sweep_failure.json while its last attempt failed (the error, host, time)
    results.jsonl       one record per finished run: its summary.json merged with its meta, in plan order
    failures.jsonl      one record per run whose last attempt failed (name, error, ...); absent when none did
    stale/<name>-lr<r>/ a length-check run set aside because its seed's grid now chooses another rate (the grid
                        grew); it runs again at the chosen rate
    .sweep.lock         serializes the shards' rewrites of the files above

Shards write one SWEEP_DIR at the same time safely: every run writes only its own folder, and results.jsonl and
failures.jsonl are rebuilt from all run folders under an exclusive `flock` on .sweep.lock (on GCS, where SWEEP_DIR
may be `gs://bucket/path`: a lease object on .sweep.lock, `fno_jax.storage.lease`), then replaced
atomically (`fno_jax.storage.json_io`). Every shard rebuilds them after each of its runs, so the last rebuild, whichever
shard makes it, sees every run that had finished before it took the lock: the files never lose a run or show
half of one. plan.json and study.json hold the same content from every shard and are replaced atomically.

Resuming: a run whose workdir has summary.json is skipped (its summary re-read); an unfinished run is started
again and `train_and_evaluate` resumes it from its latest checkpoint, so a sweep killed at any moment and run
again ends with the results of an uninterrupted one. SIGTERM or SIGINT stops the run in flight at a checkpoint
(`fno_jax.runtime.preemption`) and the sweep with status 143 or 130. A changed run config for an existing run folder is
an error (start a new SWEEP_DIR or delete that folder).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import fcntl
import json
import math
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from experiments import plan as plan_lib
from experiments.study import RunSpec, expand_study, run_workdir
from fno_jax.config import ConfigError, with_defaults
from fno_jax.runtime.distributed import barrier, maybe_initialize, on_main_process
from fno_jax.runtime.log_setup import configure_logging
from fno_jax.runtime.preemption import exit_on_preemption
from fno_jax.storage import paths
from fno_jax.storage.json_io import to_json
from fno_jax.storage.json_io import write_json_atomic as _write_json_atomic
from fno_jax.storage.json_io import write_jsonl_atomic as _write_jsonl_atomic
from fno_jax.storage.lease import Lease

# In a multi-host sweep every process runs every run; process 0 alone writes the sweep's own files.
write_json_atomic = on_main_process(_write_json_atomic)
write_jsonl_atomic = on_main_process(_write_jsonl_atomic)

__all__ = [
    "FAILURES_FILE",
    "RESULTS_FILE",
    "SUMMARY_FILE",
    "DependencyWait",
    "collect_results",
    "dry_run",
    "parse_shard",
    "run_sweep",
    "work_units",
]

RunFn = Callable[[ml_collections.ConfigDict, str], dict]
PackFn = Callable[[list[ml_collections.ConfigDict], list[str]], list[dict]]
SUMMARY_FILE = "summary.json"
RESULTS_FILE = "results.jsonl"
FAILURES_FILE = "failures.jsonl"
RUN_FILE = "sweep_run.json"
FAILURE_FILE = "sweep_failure.json"
LOCK_FILE = ".sweep.lock"
# The sweep lease on GCS: the rebuild of results.jsonl takes seconds; a shard waits this long for another's.
LOCK_TTL_S = 60.0
LOCK_WAIT_S = 600.0


def parse_shard(shard: str) -> tuple[int, int]:
    """'i/k' -> (i, k) with 0 <= i < k; '' -> (0, 1)."""
    if not shard:
        return 0, 1
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", shard)
    if not match or not int(match[1]) < int(match[2]):
        raise ConfigError(f"--shard must look like 'i/k' with 0 <= i < k (e.g. '0/4'), got {shard!r}.")
    return int(match[1]), int(match[2])


def check_shard(shard: tuple[int, int], process_count: int) -> None:
    """Refuse `--shard` in a multi-process job: there every run uses all processes, so the processes must run the
    same runs in the same order. Shards are for independent single-host jobs."""
    if shard[1] > 1 and process_count > 1:
        raise ValueError(
            f"--shard={shard[0]}/{shard[1]} splits a sweep across independent single-host jobs, but this job has "
            f"{process_count} processes that train every run together; drop --shard to run the whole sweep on "
            "all hosts, or start one single-host job per shard."
        )


@dataclasses.dataclass(frozen=True)
class DependencyWait:
    """How a shard waits for a pretraining run that another shard owns: at most `timeout_s`, polling every
    `poll_s` seconds."""

    timeout_s: float = 7 * 24 * 3600.0
    poll_s: float = 30.0


def _read_json(path: str) -> dict | None:
    if not paths.exists(path):
        return None
    return paths.read_json(path)


def _read_summary(workdir: str) -> dict | None:
    return _read_json(paths.join(workdir, SUMMARY_FILE))


def _read_failure(workdir: str) -> dict | None:
    """The last attempt's failure record, unless the run has finished since."""
    return None if _read_summary(workdir) is not None else _read_json(paths.join(workdir, FAILURE_FILE))


def _record_failure(workdir: str, name: str, error: str) -> None:
    record = {"name": name, "error": error, "host": socket.gethostname(), "pid": os.getpid()}
    record["failed_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    paths.makedirs(workdir)
    write_json_atomic(paths.join(workdir, FAILURE_FILE), record)


def _clear_failure(workdir: str) -> None:
    paths.remove(paths.join(workdir, FAILURE_FILE))


@contextlib.contextmanager
def _sweep_lock(sweep_dir: str) -> Iterator[None]:
    """Exclusive `flock` on SWEEP_DIR/.sweep.lock (released by the kernel if the holder dies). On a filesystem
    without locks the rewrite goes ahead unlocked: each rewrite is still atomic, and the next one repairs a stale
    view. On GCS: the lease SWEEP_DIR/.sweep.lock, waited for up to LOCK_WAIT_S."""
    if paths.is_remote(sweep_dir):
        lease = Lease(paths.join(sweep_dir, LOCK_FILE), ttl_s=LOCK_TTL_S)
        lease.acquire(wait_s=LOCK_WAIT_S, poll_s=0.5)
        lease.start_heartbeat()
        try:
            yield
        finally:
            lease.release()
        return
    with open(os.path.join(sweep_dir, LOCK_FILE), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError as err:
            logging.info(f"    warning: cannot lock {f.name} ({err}); rewriting the results unlocked")
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(f, fcntl.LOCK_UN)


# Meta fields a study's runs may carry (experiments.study) that the report reads.
_OPTIONAL_META = ("pretrain_seed", "variant", "zeroshot_stats", "length_check", "epochs", "pool_seed")


def _record(spec: RunSpec, summary: dict) -> dict:
    """A results.jsonl line: the run's summary with the sweep's description of the run."""
    record = dict(summary)
    # The sweep knows which group/shift/pretrain a run belongs to; the trainer does not.
    for key in ("kind", "group", "shift", "task_ranges", "pretrain", "mode", "seed", *_OPTIONAL_META):
        if key in spec.meta:
            record[key] = spec.meta[key]
    record["name"] = spec.name
    record.setdefault("model", spec.meta["model"])
    record.setdefault("learning_rate", spec.meta["learning_rate"])
    if spec.meta["mode"] == "zeroshot":
        record["num_train"] = 0  # no downstream example was trained on
    return record


def collect_results(runs: Sequence[RunSpec], sweep_dir: str) -> list[dict]:
    """Rebuild SWEEP_DIR/results.jsonl (and failures.jsonl) from every run folder (any shard's), in plan order."""
    with _sweep_lock(sweep_dir):
        records, failures = [], []
        for spec in runs:
            workdir = run_workdir(sweep_dir, spec.name)
            summary = _read_summary(workdir)
            if summary is not None:
                records.append(_record(spec, summary))
            elif (failure := _read_failure(workdir)) is not None:
                failures.append(failure)
        write_jsonl_atomic(paths.join(sweep_dir, RESULTS_FILE), records)
        failures_path = paths.join(sweep_dir, FAILURES_FILE)
        if failures:
            write_jsonl_atomic(failures_path, failures)
        else:
            paths.remove(failures_path)
    return records


def _check_or_save_run(spec: RunSpec, workdir: str) -> None:
    """Save the run's full config; refuse to reuse a folder made by a different config. A length-check run's
    learning rate is chosen when it starts (`resolve_learning_rate`): its folder is checked without the rate, and
    saved once the rate is known."""
    config = to_json(spec.config.to_dict())
    path = paths.join(workdir, RUN_FILE)
    resolved = not spec.select_lr_from or spec.meta["learning_rate"] is not None
    if paths.exists(path):
        saved = with_defaults(paths.read_json(path)["config"])  # keys added since it was saved: at their defaults
        # init_from is an absolute path: moving the sweep folder must not invalidate it.
        ignore = {"init_from"}
        mine = config
        if spec.select_lr_from:
            saved, mine = (_without_learning_rate(c) for c in (saved, config))
        if {k: v for k, v in saved.items() if k not in ignore} != {k: v for k, v in mine.items() if k not in ignore}:
            raise ValueError(
                f"Run folder {workdir} was made with a different run config than the study now gives. "
                "Use a new --workdir for a changed study, or delete that run folder to redo it."
            )
        if not (spec.select_lr_from and resolved):
            return
    if not resolved:
        return
    paths.makedirs(workdir)
    payload = {"name": spec.name, "depends_on": list(spec.depends_on), "meta": spec.meta}
    payload["config"] = config
    write_json_atomic(path, payload)


def _config_key(config: dict) -> str:
    return json.dumps(config, sort_keys=True)


def _without_learning_rate(config: dict) -> dict:
    return {**config, "train": {k: v for k, v in config["train"].items() if k != "learning_rate"}}


def resolve_learning_rate(spec: RunSpec, sweep_dir: str) -> RunSpec:
    """A length-check run with its learning rate chosen: the rate of the run of `spec.select_lr_from` (its seed's
    grid at the same point, all finished) with the lowest validation relative L2, the report's rule. Other runs are
    returned as they are."""
    if not spec.select_lr_from:
        return spec
    summaries = []
    for name in spec.select_lr_from:
        summary = _read_summary(run_workdir(sweep_dir, name))
        if summary is None:
            raise RuntimeError(f"{spec.name}: its learning rate comes from {name}, which has not finished.")
        summaries.append(summary)
    best = min(summaries, key=lambda s: (_finite_or_inf(s.get("val_rel_l2")), float(s["learning_rate"])))
    config = copy.deepcopy(spec.config)
    config.train.learning_rate = float(best["learning_rate"])
    meta = {**spec.meta, "learning_rate": float(best["learning_rate"])}
    return dataclasses.replace(spec, config=config, meta=meta)


def _copy_run(source: str, workdir: str) -> None:
    paths.rmtree(workdir)
    paths.copytree(source, workdir)


def _move_aside(workdir: str, aside: str) -> None:
    if paths.exists(aside):
        paths.rmtree(aside)
    paths.makedirs(paths.dirname(aside))
    paths.move(workdir, aside)


def _finite_or_inf(value) -> float:
    return float(value) if value is not None and math.isfinite(float(value)) else math.inf


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


class _DependencyFailed(RuntimeError):
    """A run this one depends on failed (in this shard or another)."""


def work_units(runs: list[RunSpec], pack: bool) -> list[list[RunSpec]]:
    """The runs as units of work, in order: groups of runs that train as one program
    (`fno_jax.training.packing.pack_key`:
    they differ only in seed and learning rate, hence also share their dependencies), the rest one per unit."""
    if not pack:
        return [[r] for r in runs]
    from fno_jax.training.packing import pack_key  # heavy: import only when packing

    units: dict[str, list[RunSpec]] = {}
    for spec in runs:
        trains = spec.config.train.num_steps != 0
        key = pack_key(spec.config) if trains else f"single:{spec.name}"
        units.setdefault(key, []).append(spec)
    return list(units.values())


def _group_label(unit: list[RunSpec]) -> str:
    """'poisson_e5_10-scratch-n00008: 6 packed runs (lr 0.0001, 0.001; seeds 0, 1, 2)'."""
    stem = re.sub(r"-s\d+(-x2)?$", r"\1", re.sub(r"-lr[^-]*(-.*)?$", "", unit[0].name))
    if any(r.select_lr_from for r in unit):
        rates = "each seed's chosen"
    else:
        rates = ", ".join(f"{lr:g}" for lr in sorted({float(r.meta["learning_rate"]) for r in unit}))
    seeds = ", ".join(str(s) for s in sorted({int(r.meta["seed"]) for r in unit}))
    return f"{stem}: {len(unit)} packed runs (lr {rates}; seeds {seeds})"


@dataclasses.dataclass
class _Sweep:
    """One shard's pass over its runs: skip the finished, wait for other shards' dependencies, record failures.

    Runs that can train as one program (`fno_jax.training.packing`) run together when `pack_fn` is given."""

    runs: list[RunSpec]
    sweep_dir: str
    run_fn: RunFn
    pack_fn: PackFn | None
    keep_going: bool
    wait: DependencyWait
    reuse_from: tuple[str, ...] = ()
    failed: dict[str, str] = dataclasses.field(default_factory=dict)

    def workdir(self, name: str) -> str:
        return run_workdir(self.sweep_dir, name)

    def run_all(self, mine: list[RunSpec]) -> None:
        start, done = time.monotonic(), 0
        for unit in work_units(mine, self.pack_fn is not None):
            first, done = done + 1, done + len(unit)
            label = unit[0].name if len(unit) == 1 else _group_label(unit)
            prefix = f"[{first}/{len(mine)}] {label}" if len(unit) == 1 else f"[{first}-{done}/{len(mine)}] {label}"
            for spec in unit:
                self._reuse(spec, prefix)
                self._retire_stale_rate(spec, prefix)
            todo = [spec for spec in unit if _read_summary(self.workdir(spec.name)) is None]
            if len(todo) < len(unit):
                finished = f"{len(unit) - len(todo)} of {len(unit)} " if len(unit) > 1 else ""
                logging.info(f"{prefix} ... {finished}done before")
            if not todo:
                continue
            try:
                self._wait_for_dependencies(todo[0], mine)
                self._run_unit(todo, prefix)
            except Exception as err:  # a failed run (or dependency); Preempted is no Exception and stops the sweep
                for spec in todo:
                    self._fail(spec, prefix, err, reraise=spec is todo[-1])
                continue
            logging.info(f"    sweep {time.monotonic() - start:.0f} s")

    def _reuse(self, spec: RunSpec, prefix: str) -> None:
        """Copy a finished run of another sweep (`reuse_from`) with this run's config (under any name) into this
        sweep, instead of training it again. Only runs that start from nothing (pretraining and scratch runs): a run
        fine-tuned there started from that sweep's pretrained model."""
        workdir = self.workdir(spec.name)
        if spec.config.init_from or _read_summary(workdir) is not None:
            return
        source = self._finished_elsewhere().get(_config_key(to_json(spec.config.to_dict())))
        if source is None:
            return
        # Multi-host: every process found the same source; process 0 copies, the others wait.
        barrier(f"reuse-read:{spec.name}")
        on_main_process(_copy_run)(source, workdir)
        barrier(f"reuse-copied:{spec.name}")
        logging.info(f"{prefix} ... {spec.name} reused from {source}")

    def _retire_stale_rate(self, spec: RunSpec, prefix: str) -> None:
        """A finished length-check run whose learning rate is no longer the one its seed's grid chooses (the grid grew
        since it ran) is moved to SWEEP_DIR/stale/ and runs again at the chosen rate; the report would otherwise set
        a doubled run at one rate beside a point at another."""
        workdir = self.workdir(spec.name)
        summary = _read_summary(workdir) if spec.select_lr_from else None
        if summary is None or any(_read_summary(self.workdir(name)) is None for name in spec.select_lr_from):
            return
        chosen = resolve_learning_rate(spec, self.sweep_dir).meta["learning_rate"]
        if float(summary["learning_rate"]) == chosen:
            return
        aside = paths.join(self.sweep_dir, "stale", f"{spec.name}-lr{summary['learning_rate']:g}")
        # Multi-host: every process has read the same files and decided alike; process 0 moves, the others wait.
        barrier(f"stale-rate-read:{spec.name}")
        on_main_process(_move_aside)(workdir, aside)
        barrier(f"stale-rate-moved:{spec.name}")
        logging.info(
            f"{prefix} ... {spec.name} ran at lr {summary['learning_rate']:g}, its seed now chooses {chosen:g}: "
            f"moved to {aside}, runs again"
        )

    def _finished_elsewhere(self) -> dict[str, str]:
        """config key -> run folder, for the finished runs without init_from of the `reuse_from` sweeps."""
        found: dict[str, str] = {}
        for other in self.reuse_from:
            root = paths.join(other, "runs")
            for name in paths.listdir(root) if paths.isdir(root) else ():
                saved = _read_json(paths.join(root, name, RUN_FILE))
                if saved is None or saved["config"].get("init_from") or _read_summary(paths.join(root, name)) is None:
                    continue
                found.setdefault(_config_key(with_defaults(saved["config"])), paths.join(root, name))
        return found

    def _run_unit(self, unit: list[RunSpec], prefix: str) -> None:
        unit = [resolve_learning_rate(spec, self.sweep_dir) for spec in unit]
        workdirs = [self.workdir(spec.name) for spec in unit]
        for spec, workdir in zip(unit, workdirs, strict=True):
            _check_or_save_run(spec, workdir)
        logging.info(f"{prefix} ...")
        start = time.monotonic()
        if len(unit) == 1:
            results = [self.run_fn(unit[0].config, workdirs[0])]
        else:
            results = self.pack_fn([spec.config for spec in unit], workdirs)
        for spec, workdir, result in zip(unit, workdirs, results, strict=True):
            summary = _read_summary(workdir)
            if summary is None:
                # The run function returned without writing its summary: keep what it returned.
                summary = dict(result)
                write_json_atomic(paths.join(workdir, SUMMARY_FILE), summary, sort_keys=False)
            _clear_failure(workdir)
            logging.info(
                f"    {spec.name}: test_rel_l2={summary.get('test_rel_l2', float('nan')):.4g} "
                f"val_rel_l2={summary.get('val_rel_l2', float('nan')):.4g}"
            )
        collect_results(self.runs, self.sweep_dir)
        logging.info(f"{prefix} ... {time.monotonic() - start:.1f} s")

    def _fail(self, spec: RunSpec, prefix: str, err: Exception, *, reraise: bool = True) -> None:
        why = str(err) if isinstance(err, _DependencyFailed) else f"{type(err).__name__}: {err}"
        self.failed[spec.name] = why
        _record_failure(self.workdir(spec.name), spec.name, why)
        collect_results(self.runs, self.sweep_dir)
        logging.info(f"{prefix} ... {spec.name} FAILED: {why}")
        if reraise and not self.keep_going:
            raise err

    def _wait_for_dependencies(self, spec: RunSpec, mine: list[RunSpec]) -> None:
        """Raise _DependencyFailed if a dependency failed; wait for those of other shards to finish."""
        mine_names = {r.name for r in mine}
        failed = [d for d in spec.depends_on if d in self.failed]
        if failed:
            raise _DependencyFailed(f"skipped: depends on failed {failed}")
        foreign = [d for d in spec.depends_on if d not in mine_names]
        start = time.monotonic()
        while True:
            pending = [d for d in foreign if _read_summary(self.workdir(d)) is None]
            if not pending:
                return
            failed = [d for d in pending if _read_failure(self.workdir(d)) is not None]
            if failed:
                raise _DependencyFailed(f"skipped: depends on {failed}, which failed in another shard")
            if time.monotonic() - start > self.wait.timeout_s:
                raise TimeoutError(
                    f"{spec.name}: its pretraining run(s) {pending} did not finish within "
                    f"{self.wait.timeout_s:.0f} s; start the shard that owns them (or run without --shard)."
                )
            logging.info(f"    waiting for {pending} ...")
            time.sleep(self.wait.poll_s)


def run_sweep(
    study_config: ml_collections.ConfigDict,
    sweep_dir: str,
    *,
    run_fn: RunFn | None = None,
    pack_fn: PackFn | None = None,
    only: str | Sequence[str] | None = None,
    shard: tuple[int, int] = (0, 1),
    keep_going: bool = False,
    wait: DependencyWait | None = None,
    reuse_from: Sequence[str] = (),
) -> list[dict]:
    """Run (or resume) every run of a study in `sweep_dir`; returns the finished runs' records.

    Args:
      study_config: a study (see experiments/study.py).
      sweep_dir: the sweep's folder; created if missing.
      run_fn: `run_fn(config, workdir) -> summary dict`, writing `workdir/summary.json`; default
        `fno_jax.train.train_and_evaluate`.
      pack_fn: `pack_fn(configs, workdirs) -> summaries` for runs that train as one program
        (`fno_jax.training.packing`); default `fno_jax.train.train_and_evaluate_packed` when the study packs
        (`study.pack`) and `run_fn` is the default; with a `run_fn` of your own, runs are packed only through a
        `pack_fn` of your own.
      only: regex (or list of regexes) over run names; their dependencies are included.
      shard: (i, k): run only runs i, i+k, ... of the (selected, ordered) list.
      keep_going: on a failing run, record it (failures.jsonl) and continue with the runs that do not depend on
        it; raise at the end. Default: record it and stop (finished runs stay recorded).
      wait: how long / how often to wait for another shard's pretraining run.
      reuse_from: other sweep directories whose finished pretraining and scratch runs of the same name and config
        are copied in instead of trained again (e.g. studies that pretrain the same model).

    Raises:
      Preempted: SIGTERM/SIGINT stopped the run in flight (at a checkpoint); rerun to resume.
    """
    if run_fn is None:
        from fno_jax.train import train_and_evaluate as run_fn  # heavy: import only when needed

        if pack_fn is None and study_config.get("pack", True):
            from fno_jax.train import train_and_evaluate_packed as pack_fn
        _use_compilation_cache(sweep_dir)
    if not study_config.get("pack", True):
        pack_fn = None
    sweep_dir = paths.abspath(sweep_dir)
    runs, mine = _prepare(study_config, sweep_dir, only, shard)
    logging.info(f"Sweep {study_config.get('name', '')!r}: {len(mine)} run(s) in {sweep_dir}")
    reused = tuple(paths.abspath(d) for d in reuse_from)
    sweep = _Sweep(runs, sweep_dir, run_fn, pack_fn, keep_going, wait or DependencyWait(), reused)
    sweep.run_all(mine)
    records = collect_results(runs, sweep_dir)
    if sweep.failed:
        lines = "\n".join(f"  {name}: {why}" for name, why in sweep.failed.items())
        raise RuntimeError(
            f"{len(sweep.failed)} run(s) failed (recorded in {paths.join(sweep_dir, FAILURES_FILE)}; rerun the "
            f"same command to retry):\n{lines}"
        )
    return records


def _prepare(
    study_config: ml_collections.ConfigDict, sweep_dir: str, only, shard: tuple[int, int]
) -> tuple[list[RunSpec], list[RunSpec]]:
    """Expand the study, write study.json and plan.json, and check (or save) this shard's run folders up front, so a
    changed study fails before any work is done; returns (every run, this shard's runs)."""
    index, count = shard
    if not 0 <= index < count:
        raise ConfigError(f"shard must be (i, k) with 0 <= i < k, got {shard}.")
    check_shard(shard, jax.process_count())
    runs = expand_study(study_config, sweep_dir)
    paths.makedirs(sweep_dir)
    write_json_atomic(paths.join(sweep_dir, "study.json"), to_json(study_config.to_dict()))
    on_main_process(plan_lib.write_plan)(sweep_dir, runs)
    mine = _select(runs, only)[index::count]
    for spec in mine:
        _check_or_save_run(spec, run_workdir(sweep_dir, spec.name))
        _clear_failure(run_workdir(sweep_dir, spec.name))  # this attempt retries the runs that failed before
    collect_results(runs, sweep_dir)  # results.jsonl exists (and is current) from the start
    return runs, mine


def _use_compilation_cache(sweep_dir: str) -> None:
    """Keep compiled programs in SWEEP_DIR/.jax_cache (unless a cache is configured already): a study's runs share
    a handful of shapes, so every run after the first of a shape loads its programs instead of compiling them. A
    `gs://` SWEEP_DIR gets none (a round trip per program); set JAX_COMPILATION_CACHE_DIR to a local directory."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR") or jax.config.jax_compilation_cache_dir:
        return
    if paths.is_remote(sweep_dir):
        return
    jax.config.update("jax_compilation_cache_dir", os.path.join(os.path.abspath(sweep_dir), ".jax_cache"))


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
    path = plan_lib.write_plan(paths.abspath(sweep_dir), runs)
    text = plan_lib.describe(
        study_config.get("name", ""),
        runs,
        samples_per_s=samples_per_s,
        eval_samples_per_s=eval_samples_per_s,
        run_overhead_s=run_overhead_s,
    )
    return f"{text}\n\nWrote {path}"


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
    reuse_from = flags.DEFINE_multi_string(
        "reuse_from", None, "Another sweep dir whose finished pretraining/scratch runs of the same config are reused."
    )
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
        maybe_initialize()  # a sweep launched as several processes is one multi-host job
        try:
            check_shard(parse_shard(shard.value), jax.process_count())
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        configure_logging()
        with exit_on_preemption():  # Preempted -> exit status 143 (SIGTERM) or 130 (SIGINT)
            run_sweep(
                config.value,
                workdir.value,
                only=only.value,
                shard=parse_shard(shard.value),
                keep_going=keep_going.value,
                reuse_from=reuse_from.value or (),
            )
        print(f"Done. Report: {sys.executable} -m experiments.report --sweep {workdir.value}")

    from fno_jax.runtime.cli_errors import run_absl_main

    run_absl_main(main, "experiments.sweep")


if __name__ == "__main__":
    _cli()
