"""Orbax checkpoints under `workdir/checkpoints/<step>/`.

Each step holds `params` and `opt_state` (array trees, `StandardSave`) and `meta` (JSON: a `RunMeta`); a step saved
after an evaluation also carries orbax metrics `{"val_loss", "val_rel_l2", "selection"}`, where `selection` is the
metric the run selects its best checkpoint by (`train.select_by`). Retention is orbax's: the newest `max_to_keep`
steps (`LatestN`) and the best step by `selection` (`BestN`) are kept, the rest deleted; `best_step()` is orbax's
best-by-metric. Fine-tuning restores the `params` item alone.

Orbax writes each step into a temporary directory and renames it when complete, so a killed save never looks like a
checkpoint. A step that still fails to restore (e.g. a corrupted array file) is skipped with a warning in favour of
the previous one, and moved to `workdir/broken_checkpoints/<step>` so that the resumed run can write that step again;
nothing is deleted.
"""

from __future__ import annotations

import math
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers as policies

from fno_jax.workdir import RunMeta

__all__ = ["CheckpointError", "Checkpointer", "checkpoint_dir", "load_meta", "load_params"]


def checkpoint_dir(workdir: str | os.PathLike) -> str:
    return os.path.join(os.path.abspath(os.fspath(workdir)), "checkpoints")


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


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was expected."""


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
        restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return RunMeta.from_json(dict(restored["meta"]))

    # ---- save ------------------------------------------------------------------------------------------------
    def save(self, step: int, state: dict, meta: RunMeta, metrics: dict[str, float] | None = None) -> None:
        """Save `state` ({"params", "opt_state", ...}) at `step`, asynchronously (arrays are copied off the devices
        before this returns); `metrics` (with "selection") make the step a candidate for the best one."""
        if step in self.manager.all_steps():
            return
        self.manager.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(state["params"]),
                opt_state=ocp.args.StandardSave(state["opt_state"]),
                meta=ocp.args.JsonSave(meta.to_json()),
            ),
            metrics=metrics or {},
            force=True,
        )

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    # ---- restore ---------------------------------------------------------------------------------------------
    def restore(self, step: int, abstract_state: dict) -> tuple[dict, RunMeta]:
        """({"params", "opt_state"} laid out like `abstract_state`'s ShapeDtypeStructs, meta) of `step`."""
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(abstract_state["params"]),
                opt_state=ocp.args.StandardRestore(abstract_state["opt_state"]),
                meta=ocp.args.JsonRestore(),
            ),
        )
        state = {"params": restored["params"], "opt_state": restored["opt_state"]}
        return state, RunMeta.from_json(dict(restored["meta"]))

    def restore_latest(self, abstract_state: dict) -> tuple[int, dict, RunMeta] | None:
        """The newest step that restores, as (step, state, meta); None when no step restores.

        Broken newer steps are reported with a warning and, unless read-only, moved to
        `workdir/broken_checkpoints/` (kept for inspection, out of the way of the resumed run's saves).
        """
        broken: list[int] = []
        for step in reversed(self.steps()):
            try:
                state, meta = self.restore(step, abstract_state)
            except Exception as err:  # noqa: BLE001 - any unreadable step falls back to an older one
                broken.append(step)
                logging.warning(
                    "checkpoint %s/%d could not be restored (%s: %s); falling back to the previous checkpoint.",
                    self.directory, step, type(err).__name__, str(err)[:200],
                )  # fmt: skip
                continue
            self._quarantine(broken)
            return step, state, meta
        return None

    def _quarantine(self, steps: list[int]) -> None:
        """Move unrestorable steps to `workdir/broken_checkpoints/<step>[.N]` and forget them."""
        if self.read_only or not steps:
            return
        target_root = os.path.join(os.path.dirname(self.directory), "broken_checkpoints")
        os.makedirs(target_root, exist_ok=True)
        for step in steps:
            target, n = os.path.join(target_root, str(step)), 0
            while os.path.exists(target):
                n += 1
                target = os.path.join(target_root, f"{step}.{n}")
            shutil.move(os.path.join(self.directory, str(step)), target)
            logging.warning("moved the unrestorable checkpoint of step %d to %s.", step, target)
        self.manager.reload()

    def restore_params(self, step: int, abstract_params=None):
        """The `params` item of `step`, laid out like `abstract_params` (default: on this process's first device).

        Without a target the arrays are placed on one local device, so a checkpoint written on any number of
        devices (or hosts) loads anywhere.
        """
        if abstract_params is None:
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

    `meta.norm_stats` is the `NormStats` the model's inputs are normalized with; see `fno_jax.workdir.RunMeta`.
    """
    ckpt = Checkpointer(workdir, read_only=True)
    try:
        resolved = _resolve_step(ckpt, step)
        return resolved, ckpt.meta(resolved)
    finally:
        ckpt.close()
