"""Orbax checkpoints under `workdir/checkpoints/<step>/`.

Each step holds three items: `params` and `opt_state` (array trees, `StandardSave`) and `meta` (JSON: model config,
channel layout, normalization statistics, task spec, run config, provenance, best-validation bookkeeping). Fine-tuning
restores the `params` item alone. Orbax writes each step into a temporary directory and renames it when complete, so
a killed save never looks like a checkpoint. A step that still fails to restore (e.g. a corrupted array file) is
skipped with a warning in favour of the previous one, and moved to `workdir/broken_checkpoints/<step>` so that the
resumed run can write that step again; nothing is deleted.
"""

import json
import os
import shutil
import warnings
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

ITEMS = ("params", "opt_state", "meta")


def checkpoint_dir(workdir: str | os.PathLike) -> str:
    return os.path.join(os.path.abspath(os.fspath(workdir)), "checkpoints")


def _handlers() -> dict[str, Any]:
    # Registered up front so that item metadata (shapes, dtypes) can be read before any restore.
    return {
        "params": ocp.StandardCheckpointHandler(),
        "opt_state": ocp.StandardCheckpointHandler(),
        "meta": ocp.JsonCheckpointHandler(),
    }


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was expected."""


class Checkpointer:
    """Saves and restores a run's state; keeps the newest `max_to_keep` steps plus any protected (best) step."""

    def __init__(self, workdir: str | os.PathLike, *, max_to_keep: int = 3, read_only: bool = False):
        self.directory = checkpoint_dir(workdir)
        self.read_only = read_only
        self.max_to_keep = max(int(max_to_keep), 1)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None,
            create=not read_only,
            read_only=read_only,
            enable_async_checkpointing=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=_handlers())

    # ---- queries ---------------------------------------------------------------------------------------------
    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def meta(self, step: int) -> dict[str, Any]:
        restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    # ---- save ------------------------------------------------------------------------------------------------
    def save(self, step: int, params, opt_state, meta: dict[str, Any], *, protect: Iterable[int] = ()) -> None:
        """Save `step` (asynchronously; arrays are copied off the device before this returns)."""
        self.manager.wait_until_finished()
        if step in self.manager.all_steps():
            return
        self.manager.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params),
                opt_state=ocp.args.StandardSave(opt_state),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )
        self._prune(keep={step, *protect})

    def _prune(self, keep: set[int]) -> None:
        steps = sorted(self.manager.all_steps())
        newest = set(steps[-self.max_to_keep :])
        for s in steps:
            if s not in newest and s not in keep:
                self.manager.wait_until_finished()
                self.manager.delete(s)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    # ---- restore ---------------------------------------------------------------------------------------------
    def restore(self, step: int, abstract_params, abstract_opt_state) -> tuple[Any, Any, dict]:
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(abstract_params),
                opt_state=ocp.args.StandardRestore(abstract_opt_state),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return restored["params"], restored["opt_state"], dict(restored["meta"])

    def restore_latest(self, abstract_params, abstract_opt_state) -> tuple[int, Any, Any, dict] | None:
        """The newest step that restores, as (step, params, opt_state, meta); None when no step restores.

        Broken newer steps are reported with a warning and, unless read-only, moved to
        `workdir/broken_checkpoints/` (kept for inspection, out of the way of the resumed run's saves).
        """
        broken: list[int] = []
        for step in reversed(self.steps()):
            try:
                params, opt_state, meta = self.restore(step, abstract_params, abstract_opt_state)
            except Exception as err:  # noqa: BLE001 - any unreadable step falls back to an older one
                broken.append(step)
                warnings.warn(
                    f"checkpoint {self.directory}/{step} could not be restored ({type(err).__name__}: "
                    f"{str(err)[:200]}); falling back to the previous checkpoint.",
                    stacklevel=2,
                )
                continue
            self._quarantine(broken)
            return step, params, opt_state, meta
        return None

    def _quarantine(self, steps: Iterable[int]) -> None:
        """Move unrestorable steps to `workdir/broken_checkpoints/<step>[.N]` and forget them."""
        steps = list(steps)
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
            warnings.warn(f"moved the unrestorable checkpoint of step {step} to {target}.", stacklevel=3)
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


def _resolve_step(ckpt: Checkpointer, workdir, step: int | None | str) -> int:
    steps = ckpt.steps()
    if not steps:
        raise CheckpointError(
            f"no checkpoint under {ckpt.directory}; train a model there first "
            "(python -m experiments.main --config=... --workdir=...)."
        )
    if step is None:
        return steps[-1]
    if step == "best" or step == -1:
        best = ckpt.meta(steps[-1]).get("best_step")
        if best is None or best not in steps:
            return steps[-1]
        return int(best)
    if int(step) not in steps:
        raise CheckpointError(f"no checkpoint for step {step} in {ckpt.directory}; available steps: {steps}.")
    return int(step)


def load_params(workdir: str | os.PathLike, step: int | None | str = None):
    """The params pytree saved in `workdir` at `step` (latest by default; "best" or -1: best validation)."""
    ckpt = Checkpointer(workdir, read_only=True)
    try:
        resolved = _resolve_step(ckpt, workdir, step)
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


def load_meta(workdir: str | os.PathLike, step: int | None | str = None) -> tuple[int, dict[str, Any]]:
    """(step, meta) of a checkpoint in `workdir` (latest by default; "best" or -1: best validation)."""
    ckpt = Checkpointer(workdir, read_only=True)
    try:
        resolved = _resolve_step(ckpt, workdir, step)
        return resolved, ckpt.meta(resolved)
    finally:
        ckpt.close()


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON to `path` through a temporary file and a rename, so readers never see half a file."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=_json_default)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_default(obj):
    if isinstance(obj, np.generic | np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
