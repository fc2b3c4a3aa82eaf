"""A study config expanded into the concrete training runs of a sweep.

A *study* is an `ml_collections.ConfigDict` with

    name            str, used in logs and the report title.
    base            a complete run config (`experiments/configs/base.py` `get_config()`, overridden); every
                    expanded run starts from a copy of it, so every run config has exactly base.py's keys.
    models          tuple of (width, modes) pairs; empty = the single model of `base.model`. Every pretraining
                    run is repeated per model, and downstream runs fine-tune the pretrained run of *their* model.
    pretrain.<name> task (str) and overrides (partial run config, e.g. {"task_ranges": {...}, "train": {...}}).
    downstream.<group>
                    task, shift (label of the downstream ranges, e.g. "e5-10"), task_ranges (partial),
                    num_train (tuple of downstream sizes N), modes (subset of scratch / finetune / zeroshot),
                    pretrained (tuple of pretrain names fine-tuned / evaluated zero-shot), learning_rates (grid;
                    every LR is run, the report keeps the best-validation one per N), steps (epochs, min_steps,
                    max_steps: num_steps = clip(epochs * ceil(N / batch), min_steps, max_steps)), overrides
                    (partial run config applied to every run of the group).

Expansion rules (the "why" of each is in the code):
  * pretraining runs come first, downstream runs after, so running the list in order meets every dependency;
  * scratch:  init_from = "", the group's LR grid and step rule;
  * finetune: init_from = the pretrain run's workdir, its model and input layout (a `mixed` model keeps the
              7-channel layout on a single-PDE task);
  * zeroshot: train.num_steps = 0, init_from as finetune, one run per (group, pretrain, model) - no N, no LR -
              and the pretrained normalization statistics (downstream statistics would rescale the OOD
              coefficients back into the training range and hide the shift);
  * the global batch is min(train.batch_size, N) so tiny downstream sets still make full batches.

The workdir of a run is `SWEEP_DIR/runs/<name>/`; names are readable and unique, e.g.
`pretrain-poisson`, `poisson_e5-10-finetune-from-poisson-n00032-lr0.001`, `...-w32m8` when `models` is set.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

import ml_collections

from experiments.configs import base as base_config

MODES = ("scratch", "finetune", "zeroshot")
TASKS = ("poisson", "advection_diffusion", "helmholtz", "mixed")
# Input channels of each layout (source + coefficient channels), see fno_jax/channels.py.
LAYOUT_CHANNELS = {"poisson": 4, "advection_diffusion": 6, "helmholtz": 3, "mixed": 7}
# The task_ranges field each single-PDE family reads; used to describe a downstream shift.
RANGE_FIELD = {
    "poisson": "eigenvalue_range",
    "advection_diffusion": "ratio_range",
    "helmholtz": "omega_range",
}
_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training/evaluation run of a sweep.

    Properties:
      name: unique readable name, also the workdir's folder name under `SWEEP_DIR/runs/`.
      config: the complete, locked run config (base.py's keys only).
      depends_on: names of runs that must have finished (summary.json) before this one starts.
      meta: JSON-serialisable description merged into the run's results.jsonl record: kind
        ("pretrain" | "downstream"), group, shift, task_ranges, mode, pretrain, num_train, learning_rate, model.
    """

    name: str
    config: ml_collections.ConfigDict
    depends_on: tuple[str, ...]
    meta: dict[str, Any]


def run_workdir(sweep_dir: str, name: str) -> str:
    """The workdir of run `name` in a sweep: `SWEEP_DIR/runs/<name>`."""
    return os.path.join(sweep_dir, "runs", name)


def fno_num_params(
    width: int,
    modes: int,
    depth: int = 4,
    fc_dim: int = 128,
    in_channels: int = 4,
    out_dim: int = 1,
) -> int:
    """Exact parameter count of `fno_jax.FNO`.

    Per Fourier layer: spectral weights1 + weights2, each [width, width, modes, modes, 2] reals, so
    2 * width^2 * modes^2 * 2, plus a pointwise Dense width^2 + width; plus lift (in_channels + 1) * width,
    fc1 (width + 1) * fc_dim and fc2 (fc_dim + 1) * out_dim. 67,134,273 at (64, 32, 4, 128, 4).
    """
    for arg, value in (("width", width), ("modes", modes), ("depth", depth), ("fc_dim", fc_dim)):
        if value < 1:
            raise ValueError(f"fno_num_params: {arg} must be >= 1, got {value}.")
    spectral = depth * 2 * width * width * modes * modes * 2
    pointwise = depth * (width * width + width)
    lift = (in_channels + 1) * width
    head = (width + 1) * fc_dim + (fc_dim + 1) * out_dim
    return spectral + pointwise + lift + head


def parse_study_arg(arg: str | None, choices: Iterable[str]) -> set[str]:
    """Split a config-file ARG such as "poisson,runlocal" into options, each checked against `choices`."""
    choices = set(choices)
    options = {part.strip() for part in (arg or "").split(",") if part.strip()}
    unknown = options - choices
    if unknown:
        raise ValueError(
            f"Unknown study config argument(s) {sorted(unknown)} in {arg!r}; valid options are "
            f"{sorted(choices)}, comma-separated (e.g. ':runlocal')."
        )
    return options


def new_study(name: str) -> ml_collections.ConfigDict:
    """An empty study with `base` = base.py's run config; callers fill pretrain/downstream."""
    study = ml_collections.ConfigDict()
    study.name = name
    study.description = ""
    study.base = base_config.get_config()
    study.models = ()
    study.pretrain = ml_collections.ConfigDict()
    study.downstream = ml_collections.ConfigDict()
    return study


def pretrain_entry(task: str, **overrides: Any) -> ml_collections.ConfigDict:
    """A `study.pretrain.<name>` entry: the task and a partial run config applied over `study.base`."""
    return ml_collections.ConfigDict({"task": task, "overrides": overrides})


def downstream_group(
    task: str,
    task_ranges: dict[str, Any],
    *,
    num_train: Sequence[int],
    pretrained: Sequence[str],
    learning_rates: Sequence[float],
    epochs: int,
    min_steps: int,
    max_steps: int,
    modes: Sequence[str] = MODES,
    shift: str = "",
    **overrides: Any,
) -> ml_collections.ConfigDict:
    """A `study.downstream.<group>` entry; `shift` defaults to a label made from the task's range."""
    if not shift:
        shift = shift_label(task, task_ranges)
    return ml_collections.ConfigDict(
        {
            "task": task,
            "shift": shift,
            "task_ranges": dict(task_ranges),
            "num_train": tuple(int(n) for n in num_train),
            "modes": tuple(modes),
            "pretrained": tuple(pretrained),
            "learning_rates": tuple(float(lr) for lr in learning_rates),
            "steps": {"epochs": epochs, "min_steps": min_steps, "max_steps": max_steps},
            "overrides": overrides,
        }
    )


def shift_label(task: str, task_ranges: dict[str, Any]) -> str:
    """'e5-10', 'r1-2', 'w5-15' for the task's own range field; '' for mixed."""
    field = RANGE_FIELD.get(task)
    if field is None or field not in task_ranges:
        return ""
    lo, hi = task_ranges[field]
    prefix = {"eigenvalue_range": "e", "ratio_range": "r", "omega_range": "w"}[field]
    return f"{prefix}{lo:g}-{hi:g}"


def downstream_steps(num_train: int, batch_size: int, epochs: int, min_steps: int, max_steps: int) -> int:
    """clip(epochs * ceil(N / batch), min_steps, max_steps): a fixed number of epochs, bounded both ways."""
    per_epoch = math.ceil(num_train / batch_size)
    return int(min(max_steps, max(min_steps, epochs * per_epoch)))


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> set[str]:
    """Dotted paths of all leaves of a ConfigDict ("train.learning_rate", ...)."""
    keys = set()
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            keys |= flat_keys(value, path + ".")
        else:
            keys.add(path)
    return keys


def apply_overrides(config: ml_collections.ConfigDict, overrides: Any, where: str, _prefix: str = "") -> None:
    """Write a partial (nested) config into `config` in place; an unknown key is a ValueError."""
    if overrides is None:
        return
    items = overrides.items() if hasattr(overrides, "items") else None
    if items is None:
        raise ValueError(f"{where}: overrides must be a dict/ConfigDict, got {type(overrides).__name__}.")
    for key, value in items:
        path = f"{_prefix}{key}"
        if key not in config:
            raise ValueError(
                f"{where}: unknown run-config key '{path}'. Run configs have exactly the keys of "
                f"experiments/configs/base.py; check the spelling (valid here: {sorted(config.keys())})."
            )
        target = config[key]
        if isinstance(target, ml_collections.ConfigDict):
            apply_overrides(target, value, where, path + ".")
        else:
            try:
                config[key] = value
            except TypeError as e:
                raise ValueError(f"{where}: bad value {value!r} for '{path}': {e}") from e


def _check_name(kind: str, name: str) -> None:
    if not _NAME_RE.match(name):
        raise ValueError(
            f"{kind} name {name!r} is used as a folder name; use only letters, digits, '_', '.', '+', '-'."
        )


def _model_suffix(models: Sequence[Sequence[int]], width: int, modes: int) -> str:
    return f"-w{width}m{modes}" if models else ""


def _layout(config: ml_collections.ConfigDict) -> str:
    return config.data.layout or config.task


def expand_study(study: ml_collections.ConfigDict, sweep_dir: str) -> list[RunSpec]:
    """Expand a study into its runs, dependencies first (see the module docstring for the rules)."""
    where = f"study {study.get('name', '?')!r}"
    for field in ("base", "pretrain", "downstream"):
        if field not in study:
            raise ValueError(f"{where}: missing field '{field}' (start from experiments.study.new_study).")
    reference = flat_keys(base_config.get_config())
    extra = flat_keys(study.base) - reference
    missing = reference - flat_keys(study.base)
    if extra or missing:
        raise ValueError(
            f"{where}: study.base must have exactly the keys of experiments/configs/base.py; "
            f"extra {sorted(extra)}, missing {sorted(missing)}."
        )
    sweep_dir = os.path.abspath(sweep_dir)
    models = tuple(tuple(int(v) for v in m) for m in study.get("models", ()) or ())
    for m in models:
        if len(m) != 2 or min(m) < 1:
            raise ValueError(f"{where}: models must be (width, modes) pairs of positive ints, got {m}.")
    model_list = models or ((int(study.base.model.width), int(study.base.model.modes)),)

    runs: list[RunSpec] = []
    # (pretrain name, model index) -> (run name, run config)
    pretrained: dict[tuple[str, int], tuple[str, ml_collections.ConfigDict]] = {}
    for pname, entry in study.pretrain.items():
        _check_name("pretrain", pname)
        if entry.task not in TASKS:
            raise ValueError(f"{where}: pretrain {pname!r} has task {entry.task!r}; use one of {TASKS}.")
        for mi, (width, modes) in enumerate(model_list):
            config = copy.deepcopy(study.base)
            config.lock()
            config.task = entry.task
            apply_overrides(config, entry.get("overrides"), f"{where}, pretrain {pname!r}")
            if models:  # the study's model list wins over per-run overrides
                config.model.width, config.model.modes = width, modes
            name = f"pretrain-{pname}{_model_suffix(models, width, modes)}"
            meta = {
                "kind": "pretrain",
                "group": f"pretrain-{pname}",
                "shift": "pretrain",
                "task": config.task,
                "task_ranges": _ranges_of(config),
                "mode": "scratch",
                "pretrain": "",
                "num_train": int(config.data.num_train),
                "learning_rate": float(config.train.learning_rate),
                "model": _model_dict(config),
            }
            runs.append(RunSpec(name, config, (), meta))
            pretrained[(pname, mi)] = (name, config)

    for gname, group in study.downstream.items():
        _check_name("downstream group", gname)
        gwhere = f"{where}, downstream {gname!r}"
        if group.task not in TASKS:
            raise ValueError(f"{gwhere}: task {group.task!r}; use one of {TASKS}.")
        bad_modes = set(group.modes) - set(MODES)
        if bad_modes:
            raise ValueError(f"{gwhere}: unknown modes {sorted(bad_modes)}; use a subset of {MODES}.")
        sizes = tuple(int(n) for n in group.num_train)
        if not sizes or min(sizes) < 1:
            raise ValueError(f"{gwhere}: num_train must be a non-empty tuple of sizes >= 1, got {sizes}.")
        lrs = tuple(float(lr) for lr in group.learning_rates)
        if not lrs or min(lrs) <= 0:
            raise ValueError(f"{gwhere}: learning_rates must be a non-empty tuple of positive floats.")
        needs_pretrain = {"finetune", "zeroshot"} & set(group.modes)
        if needs_pretrain and not group.pretrained:
            raise ValueError(f"{gwhere}: modes {sorted(needs_pretrain)} need `pretrained` run names.")
        for pname in group.pretrained:
            if pname not in study.pretrain:
                raise ValueError(
                    f"{gwhere}: pretrained {pname!r} is not a study.pretrain entry "
                    f"(have {sorted(study.pretrain.keys())})."
                )
        for mi, (width, modes) in enumerate(model_list):
            suffix = _model_suffix(models, width, modes)
            downstream = copy.deepcopy(study.base)
            downstream.lock()
            downstream.task = group.task
            apply_overrides(downstream, {"task_ranges": group.task_ranges}, gwhere)
            apply_overrides(downstream, group.get("overrides"), gwhere)
            if models:
                downstream.model.width, downstream.model.modes = width, modes
            # Every N of the group draws from one train pool, so N=8 lies inside N=16 inside ... (unless a
            # stored dataset, whose train split is the pool, is used).
            downstream.data.num_train_pool = max(int(downstream.data.num_train_pool), max(sizes))

            for n in sizes:
                for mode in [m for m in MODES if m in group.modes and m != "zeroshot"]:
                    for pname in group.pretrained if mode == "finetune" else ("",):
                        for lr in lrs:
                            config, deps = _downstream_run(
                                downstream, mode, pretrained.get((pname, mi)), n, lr, group.steps, sweep_dir
                            )
                            source = f"-from-{pname}" if pname else ""
                            name = f"{gname}-{mode}{source}-n{n:05d}-lr{lr:g}{suffix}"
                            runs.append(RunSpec(name, config, deps, _meta(config, gname, group, mode, pname, n)))
            if "zeroshot" in group.modes:
                for pname in group.pretrained:
                    # N does not matter without training; the smallest keeps any split generation cheap.
                    config, deps = _downstream_run(
                        downstream, "zeroshot", pretrained[(pname, mi)], min(sizes), lrs[0], group.steps, sweep_dir
                    )
                    name = f"{gname}-zeroshot-from-{pname}{suffix}"
                    runs.append(RunSpec(name, config, deps, _meta(config, gname, group, "zeroshot", pname, 0)))

    names = [r.name for r in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{where}: expansion gives duplicate run names {duplicates}; make LRs/names distinct.")
    return runs


def _downstream_run(
    downstream: ml_collections.ConfigDict,
    mode: str,
    pre: tuple[str, ml_collections.ConfigDict] | None,
    n: int,
    lr: float,
    steps: ml_collections.ConfigDict,
    sweep_dir: str,
) -> tuple[ml_collections.ConfigDict, tuple[str, ...]]:
    """One downstream run config (a copy of the group's config) and its dependencies."""
    config = copy.deepcopy(downstream)
    deps: tuple[str, ...] = ()
    if mode != "scratch":
        pre_name, pre_config = pre
        deps = (pre_name,)
        config.init_from = run_workdir(sweep_dir, pre_name)
        # The pretrained network fixes the architecture and the input channels.
        config.model = copy.deepcopy(pre_config.model)
        layout = _layout(pre_config)
        # A mixed-layout model keeps its layout; otherwise the downstream task's own layout, whose channels
        # fno_jax.finetune.channel_map maps from the pretrained ones (a narrower layout would drop coefficients).
        config.data.layout = "mixed" if layout == "mixed" else ""
    batch = min(int(config.train.batch_size), n)
    config.train.batch_size = batch
    config.train.eval_batch_size = min(
        int(config.train.eval_batch_size), int(config.data.num_val), int(config.data.num_test)
    )
    config.data.num_train = n
    if mode == "zeroshot":
        num_steps = 0
        config.finetune.norm_stats = "pretrained"
    else:
        num_steps = downstream_steps(n, batch, int(steps.epochs), int(steps.min_steps), int(steps.max_steps))
        config.train.learning_rate = lr
    config.train.num_steps = num_steps
    if num_steps > 0:
        # Keep the step-based intervals meaningful for short runs.
        for key in ("eval_every", "checkpoint_every", "log_every"):
            config.train[key] = max(1, min(int(config.train[key]), num_steps))
    return config, deps


def _ranges_of(config: ml_collections.ConfigDict) -> dict[str, list[float]]:
    """The task_ranges fields the run's task actually reads (all three for mixed)."""
    fields = [RANGE_FIELD[config.task]] if config.task in RANGE_FIELD else list(RANGE_FIELD.values())
    return {f: [float(v) for v in config.task_ranges[f]] for f in fields}


def _model_dict(config: ml_collections.ConfigDict) -> dict[str, int]:
    m = config.model
    return {
        "width": int(m.width),
        "modes": int(m.modes),
        "depth": int(m.depth),
        "fc_dim": int(m.fc_dim),
    }


def _meta(config, gname, group, mode, pname, n) -> dict[str, Any]:
    return {
        "kind": "downstream",
        "group": gname,
        "shift": str(group.shift),
        "task": config.task,
        "task_ranges": _ranges_of(config),
        "mode": mode,
        "pretrain": pname,
        "num_train": int(n),
        "learning_rate": float(config.train.learning_rate),
        "model": _model_dict(config),
    }
