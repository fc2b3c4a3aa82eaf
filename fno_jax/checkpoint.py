"""Orbax checkpoints under `workdir/checkpoints/<step>/`.

Each step holds `params` and `opt_state` (array trees, `StandardSave`) and `meta` (JSON: a `RunMeta`); a step saved
after an evaluation also carries orbax metrics `{"val_loss", "val_rel_l2", "selection"}`, where `selection` is the
metric the run selects its best checkpoint by (`train.select_by`). Retention is orbax's: the newest `max_to_keep`
steps (`LatestN`) and the best step by `selection` (`BestN`) are kept, the rest deleted; `best_step()` is orbax's
best-by-metric. Fine-tuning restores the `params` item alone.

Restoring onto any topology. A restore names the layout the arrays must have on this run's devices (an abstract tree
of `jax.ShapeDtypeStruct`s with shardings, `DataParallel.abstract_state`); orbax then reads a checkpoint written on
any number of devices or processes into that layout. A target without shardings is refused (orbax would fall back
to the saving run's device ids and fail on another topology).

What a failed restore means. A killed save never looks like a checkpoint: locally orbax writes each step into a
temporary directory and renames it when complete; on GCS (`gs://` workdirs), which has no directory rename, it
writes the step in place and commits it by writing `<step>/commit_success.txt` last, and a step without that marker
is not listed. Before any array is read, the step's metadata is compared with the
target: a step of another state (model, optimizer, dtype) or another fno-jax version stops the run with a
`CheckpointMismatchError` and nothing is moved. A step whose files cannot be read (e.g. a corrupted array file) is
skipped with a warning in favour of the previous one, and moved to `workdir/broken_checkpoints/<step>` so that the
resumed run can write that step again; nothing is deleted (on GCS the move is a copy and a delete, preceded by
removing the step's commit marker, so a move cut short leaves an uncommitted step that orbax ignores). Running out
of memory is not a read error: the run stops.
When checkpoints exist but none can be read, the run stops too (`CheckpointError`) instead of starting again from
step 0 over them.

One policy for one run and for a group of K runs trained together (`restore_latest`): the group resumes from the
newest step that every run has and that restores for every run. A run whose copy of that step is unreadable has it
moved aside and the group falls back to the previous common step, with a message; a step of another state stops the
group (nothing moved, metrics untouched). The only start from step 0 over existing checkpoints is a group stopped
before every run had saved its first one (there is no common step to resume from; the skipped runs' steps are
recomputed bitwise), and it is logged.

Across processes, every process reads, the processes agree on each step's outcome before acting on it, and process
0 alone moves a broken step while the others wait (`fno_jax.runtime.distributed.barrier`).
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers as policies

from fno_jax.config import ConfigError
from fno_jax.runtime.cli_errors import UserError
from fno_jax.runtime.distributed import barrier, each_process, is_main_process
from fno_jax.storage import paths
from fno_jax.storage.integrity import seal
from fno_jax.storage.workdir import RunMeta

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointWriteError",
    "Checkpointer",
    "checkpoint_dir",
    "load_meta",
    "load_params",
    "restore_latest",
]

# The file orbax writes last into a step on GCS, committing it (orbax's CommitFileTemporaryPath).
_COMMIT_MARKER = "commit_success.txt"
# Outcome of one process's attempt to restore a step (agreed on by all processes before anyone acts on it).
_RESTORED, _UNREADABLE, _FAILED = 0, 1, 2


def checkpoint_dir(workdir: str | os.PathLike) -> str:
    return paths.join(paths.abspath(workdir), "checkpoints")


def _handlers() -> dict[str, Any]:
    # Registered up front so that item metadata (shapes, dtypes) can be read before any restore.
    return {
        "params": ocp.StandardCheckpointHandler(),
        "opt_state": ocp.StandardCheckpointHandler(),
        "meta": ocp.JsonCheckpointHandler(),
    }


def _selection(metrics: dict[str, float]) -> float:
    """The ranking value of a step: its `selection` metric; +inf for a step saved without an evaluation (its
    metrics are {}) or a NaN validation, which never count as the best."""
    value = float(metrics.get("selection", math.inf))
    return value if math.isfinite(value) else math.inf


class CheckpointError(UserError, RuntimeError):
    """No usable checkpoint where one was expected."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (a full disk, an unwritable directory); the complete ones are intact."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint that holds another state than the one asked for (model, optimizer, dtype, version)."""


def _signature(leaves) -> list[tuple[tuple[int, ...], str]]:
    """The (shape, dtype) of each array, sorted: what a target and a checkpoint's metadata must share."""
    return sorted((tuple(int(n) for n in leaf.shape), str(np.dtype(leaf.dtype))) for leaf in leaves)


def _require_shardings(abstract, what: str) -> None:
    missing = [leaf for leaf in jax.tree_util.tree_leaves(abstract) if getattr(leaf, "sharding", None) is None]
    if missing:
        raise ValueError(
            f"the restore target for {what} has {len(missing)} array(s) without a sharding; build it with "
            "DataParallel.abstract_state (or fno_jax.runtime.parallel.abstract_arrays) so the checkpoint loads "
            "onto this run's devices whatever topology wrote it."
        )


def _outcome(error: BaseException | None) -> int:
    """What one process's restore attempt means: restored; unreadable files (move the step aside); or a failure
    that says nothing about the files, such as running out of host or device memory (stop and say so)."""
    if error is None:
        return _RESTORED
    if isinstance(error, MemoryError) or "RESOURCE_EXHAUSTED" in str(error):
        return _FAILED
    return _UNREADABLE


class Checkpointer:
    """Saves and restores a run's state; keeps the newest `max_to_keep` steps and the best one."""

    def __init__(self, workdir: str | os.PathLike, *, max_to_keep: int = 3, read_only: bool = False):
        self.directory = checkpoint_dir(workdir)
        self.read_only = read_only
        keep = policies.AnyPreservationPolicy(
            [
                policies.LatestN(n=max(int(max_to_keep), 1)),
                policies.BestN(get_metric_fn=_selection, reverse=True, n=1, keep_checkpoints_without_metrics=False),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            best_fn=_selection,
            best_mode="min",
            preservation_policy=None if read_only else keep,
            create=not read_only,
            read_only=read_only,
            enable_async_checkpointing=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=_handlers())

    # ---- queries ---------------------------------------------------------------------------------------------
    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the best validation `selection` metric; the latest step when none was evaluated."""
        best = self.manager.best_step()
        return best if best is not None else self.latest_step()

    def best_metrics(self) -> dict[str, float] | None:
        """The validation metrics saved with the best step (None when no step carries metrics)."""
        best = self.best_step()
        metrics = self.manager.metrics(best) if best is not None else None
        return dict(metrics) if metrics is not None else None

    def meta(self, step: int) -> RunMeta:
        """The `RunMeta` saved with `step`; `CheckpointError` naming the step's directory when it cannot be read."""
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
            return RunMeta.from_json(dict(restored["meta"]))
        except Exception as err:  # noqa: BLE001 - orbax, json and RunMeta raise many types for a damaged file
            raise CheckpointError(
                f"the metadata of checkpoint {self.directory}/{step} cannot be read ({type(err).__name__}: "
                f"{str(err)[:300]}); use another step, or retrain."
            ) from err

    # ---- save ------------------------------------------------------------------------------------------------
    def save(self, step: int, state: dict, meta: RunMeta, metrics: dict[str, float] | None = None) -> None:
        """Save `state` ({"params", "opt_state", ...}) at `step`, asynchronously (arrays are copied off the devices
        before this returns); `metrics` (with "selection") make the step a candidate for the best one.

        Raises `CheckpointWriteError` when this save, or the previous asynchronous one, could not be written.
        """
        if step in self.manager.all_steps():
            return
        try:
            self.manager.save(
                step,
                args=ocp.args.Composite(
                    params=ocp.args.StandardSave(state["params"]),
                    opt_state=ocp.args.StandardSave(state["opt_state"]),
                    meta=ocp.args.JsonSave(seal(meta.to_json())),  # a damaged byte: an error, not other stats
                ),
                metrics=metrics or {},
                force=True,
            )
        except Exception as err:  # noqa: BLE001 - OSError, or tensorstore's ValueError wrapping one
            raise self._write_error(err) from err

    def wait(self) -> None:
        """Block until the asynchronous saves are on disk; `CheckpointWriteError` if one could not be written."""
        try:
            self.manager.wait_until_finished()
        except Exception as err:  # noqa: BLE001 - as in save
            raise self._write_error(err) from err

    def _write_error(self, err: Exception) -> CheckpointWriteError:
        """The error for a failed save. Orbax lists a step only once it is complete (renamed from a temporary
        directory locally, committed by its marker file on GCS), so the newest listed step is whole."""
        kept = self.latest_step()
        resume = f"the newest complete checkpoint, step {kept}, is intact" if kept is not None else "none was complete"
        if isinstance(err, TimeoutError):  # orbax's deadline for a save: a stalled process or slow storage
            cause = "The save did not finish in time: was the process stopped or suspended, or the storage slow?"
        else:
            cause = "If the disk is full or the directory not writable, fix that."
        return CheckpointWriteError(
            f"cannot write a checkpoint in {self.directory} ({type(err).__name__}: {str(err)[:300]}); {resume}. "
            f"{cause} Run the same command again to resume."
        )

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    # ---- restore ---------------------------------------------------------------------------------------------
    def check_architecture(self, model: dict[str, int], layout: str) -> None:
        """Refuse (ConfigError) a workdir whose newest readable checkpoint holds another model or channel layout."""
        for step in reversed(self.steps()):
            try:
                previous = self.meta(step)
            except Exception:  # noqa: BLE001, S112 - an unreadable step: look at an older one (restore deals with it)
                continue
            if previous.model != model or previous.layout != layout:
                raise ConfigError(
                    f"workdir {paths.dirname(self.directory)} holds checkpoints of another architecture (model "
                    f"{previous.model}, layout {previous.layout!r}; this config: model {model}, layout {layout!r}); "
                    "use a new --workdir."
                )
            return

    def check_fits(self, step: int, abstract_state: dict) -> None:
        """Raise CheckpointMismatchError unless `step` holds arrays of the target's shapes and dtypes.

        Reads the step's metadata only; a step whose metadata cannot be read raises what the reader raised.
        """
        metadata = self.manager.item_metadata(step)
        for item in ("params", "opt_state"):
            saved = _signature(jax.tree_util.tree_leaves(metadata[item]))
            wanted = _signature(jax.tree_util.tree_leaves(abstract_state[item]))
            if saved != wanted:
                extra = sorted(set(saved) - set(wanted))[:3]
                lacking = sorted(set(wanted) - set(saved))[:3]
                raise CheckpointMismatchError(
                    f"checkpoint {self.directory}/{step} holds another {item} than this run builds ({len(saved)} "
                    f"arrays there, {len(wanted)} here; e.g. {extra} there but {lacking} here): another model, "
                    "optimizer (e.g. finetune.freeze) or dtype. Nothing was changed; run the config that wrote it, "
                    "or use a new --workdir."
                )

    def restore(self, step: int, abstract_state: dict) -> tuple[dict, RunMeta]:
        """({"params", "opt_state"} laid out like `abstract_state`'s ShapeDtypeStructs, meta) of `step`.

        Every leaf of `abstract_state` must carry its target sharding (`DataParallel.abstract_state`); the step
        may have been written on any number of devices or processes.
        """
        _require_shardings(abstract_state, f"step {step}")
        self.check_fits(step, abstract_state)
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(abstract_state["params"]),
                opt_state=ocp.args.StandardRestore(abstract_state["opt_state"]),
                meta=ocp.args.JsonRestore(),
            ),
        )
        state = {"params": restored["params"], "opt_state": restored["opt_state"]}
        return state, self._run_meta(step, restored["meta"])

    def _run_meta(self, step: int, data) -> RunMeta:
        try:
            return RunMeta.from_json(dict(data))
        except (ValueError, TypeError, KeyError) as err:
            raise CheckpointMismatchError(f"checkpoint {self.directory}/{step}: {err}") from err

    def _try_restore(self, step: int, abstract_state: dict) -> tuple[tuple[dict, RunMeta] | None, Exception | None]:
        """(state, meta) of `step`, or the error that stopped this process reading it; a mismatch raises."""
        _require_shardings(abstract_state, f"step {step}")
        try:
            return self.restore(step, abstract_state), None
        except CheckpointMismatchError:
            raise
        except Exception as err:  # noqa: BLE001 - orbax/tensorstore raise many types for unreadable files
            return None, err

    def _quarantine(self, steps: list[int]) -> None:
        """Move unrestorable steps to `workdir/broken_checkpoints/<step>[.N]` (process 0) and forget them (all)."""
        if self.read_only or not steps:
            return
        if is_main_process():
            target_root = paths.join(paths.dirname(self.directory), "broken_checkpoints")
            paths.makedirs(target_root)
            for step in steps:
                target, n = paths.join(target_root, str(step)), 0
                while paths.exists(target):
                    n += 1
                    target = paths.join(target_root, f"{step}.{n}")
                source = paths.join(self.directory, str(step))
                if paths.is_remote(source):  # uncommitted first: a move cut short leaves no step orbax would list
                    paths.remove(paths.join(source, _COMMIT_MARKER))
                paths.move(source, target)
                logging.warning("moved the unrestorable checkpoint of step %d to %s.", step, target)
        barrier("checkpoint_quarantine")
        self.manager.reload()

    def restore_params(self, step: int, abstract_params=None):
        """The `params` item of `step`, laid out like `abstract_params` (default: on this process's first device).

        A target's leaves must carry shardings (`DataParallel.abstract_state`). Without a target the arrays are
        placed on one local device, so a checkpoint written on any number of devices (or hosts) loads anywhere.
        """
        if abstract_params is not None:
            _require_shardings(abstract_params, f"the params of step {step}")
        else:
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            metadata = self.manager.item_metadata(step)["params"]
            abstract_params = jax.tree_util.tree_map(
                lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata
            )
        restored = self.manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params)))
        return restored["params"]


def _resolve_step(ckpt: Checkpointer, step: int | None | str) -> int:
    steps = ckpt.steps()
    if not steps:
        raise CheckpointError(
            f"no checkpoint under {ckpt.directory}; train a model there first "
            "(python -m experiments.main --config=... --workdir=...)."
        )
    if step is None:
        return steps[-1]
    if step == "best" or step == -1:
        return int(ckpt.best_step())
    if int(step) not in steps:
        raise CheckpointError(f"no checkpoint for step {step} in {ckpt.directory}; available steps: {steps}.")
    return int(step)


def load_params(workdir: str | os.PathLike, step: int | None | str = None):
    """The params pytree saved in `workdir` at `step` (latest by default; "best" or -1: best validation)."""
    ckpt = Checkpointer(workdir, read_only=True)
    try:
        resolved = _resolve_step(ckpt, step)
        try:
            params = ckpt.restore_params(resolved)
        except Exception as err:  # noqa: BLE001 - orbax/tensorstore raise many types for unreadable files
            older = [s for s in ckpt.steps() if s < resolved]
            hint = f"load an older step ({older[-1]})" if older else "retrain"
            raise CheckpointError(
                f"checkpoint step {resolved} in {ckpt.directory} cannot be read ({type(err).__name__}: "
                f"{str(err)[:160]}); {hint}."
            ) from err
    finally:
        ckpt.close()
    return jax.tree_util.tree_map(np.asarray, params)


def load_meta(workdir: str | os.PathLike, step: int | None | str = None) -> tuple[int, RunMeta]:
    """(step, meta) of a checkpoint in `workdir` (latest by default; "best" or -1: best validation).

    `meta.norm_stats` is the `NormStats` the model's inputs are normalized with; see `fno_jax.storage.workdir.RunMeta`.
    """
    ckpt = Checkpointer(workdir, read_only=True)
    try:
        resolved = _resolve_step(ckpt, step)
        return resolved, ckpt.meta(resolved)
    finally:
        ckpt.close()


def restore_latest(
    checkpointers: list[Checkpointer], abstract_state: dict
) -> tuple[int, list[dict], list[RunMeta]] | None:
    """The newest step every run of a group (one Checkpointer per run; one run: a list of one) can restore, as
    (step, [state per run], [meta per run]); None when no run has a checkpoint. See the module docstring.

    `abstract_state` is one run's {"params", "opt_state"} target, laid out for this run's devices
    (`DataParallel.abstract_state`). Raises CheckpointMismatchError for a step of another state (nothing moved), and
    CheckpointError when a step cannot be restored for another reason (e.g. out of memory) or when checkpoints exist
    but no step common to every run can be read (the unreadable ones are moved to `broken_checkpoints/`).
    """
    steps = [set(ckpt.steps()) for ckpt in checkpointers]
    if not any(steps):
        return None
    broken: list[list[int]] = [[] for _ in checkpointers]
    for step in sorted(set.intersection(*steps), reverse=True):
        restored = [_agreed_restore(ckpt, step, abstract_state) for ckpt in checkpointers]
        if all(r is not None for r in restored):
            for ckpt, bad in zip(checkpointers, broken, strict=True):
                ckpt._quarantine(bad)
            return step, [r[0] for r in restored], [r[1] for r in restored]
        for r, bad in zip(restored, broken, strict=True):
            if r is None:
                bad.append(step)
    for ckpt, bad in zip(checkpointers, broken, strict=True):
        ckpt._quarantine(bad)
    if any(broken):
        where = [f"{ckpt.directory} {sorted(s)}" for ckpt, s in zip(checkpointers, steps, strict=True)]
        moved = "moved to broken_checkpoints/" if not checkpointers[0].read_only else "left in place (read-only)"
        raise CheckpointError(
            f"no checkpoint step common to every run can be read ({'; '.join(where)}; the unreadable ones were "
            f"{moved}); the run stops rather than start again from step 0. Rerun the same command to train from "
            "scratch, or restore the checkpoints from a backup first."
        )
    with_steps = [ckpt.directory for ckpt, s in zip(checkpointers, steps, strict=True) if s]
    without = [ckpt.directory for ckpt, s in zip(checkpointers, steps, strict=True) if not s]
    logging.warning(
        "no checkpoint step is common to every run of the group (%s have checkpoints, %s none: the group was stopped "
        "before every run had saved its first one); it starts again from step 0, recomputing the same steps.",
        with_steps, without,
    )  # fmt: skip
    return None


def _agreed_restore(ckpt: Checkpointer, step: int, abstract_state: dict) -> tuple[dict, RunMeta] | None:
    """(state, meta) of `step`, or None when a process could not read its files (all processes agree); raises
    CheckpointMismatchError for another state and CheckpointError for a failure that is not a read error."""
    restored, error = ckpt._try_restore(step, abstract_state)
    outcomes = each_process(_outcome(error))
    if _FAILED in outcomes:
        cause = f"{type(error).__name__}: {str(error)[:300]}" if error else "see the failing process's log"
        raise CheckpointError(
            f"checkpoint {ckpt.directory}/{step} could not be restored on process(es) "
            f"{[i for i, o in enumerate(outcomes) if o == _FAILED]} ({cause}). This is not a read error, so "
            "nothing was moved; give the run more memory (or fewer runs per host) and rerun the same command."
        ) from error
    if _UNREADABLE in outcomes:
        why = f"{type(error).__name__}: {str(error)[:200]}" if error else "another process could not read it"
        logging.warning(
            "checkpoint %s/%d could not be restored (%s); falling back to the previous checkpoint.",
            ckpt.directory, step, why,
        )  # fmt: skip
        return None
    return restored
