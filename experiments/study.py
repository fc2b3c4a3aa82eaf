"""A study config expanded into the concrete training runs of a sweep.

A *study* is an `ml_collections.ConfigDict` with

    name            str, used in logs and the report title.
    base            a complete run config (`experiments/configs/base.py` `get_config()`, overridden); every
                    expanded run starts from a copy of it, so every run config has exactly base.py's keys.
    models          tuple of (width, modes) pairs; empty = the single model of `base.model`. Every pretraining
                    run is repeated per model (head width fc_dim = 2 x width, the paper's rule), and downstream
                    runs fine-tune the pretrained run of *their* model.
    seeds           number of seeds per downstream point: every downstream run is repeated with seed
                    base.seed + s, s = 0 .. seeds-1. A seed varies the init, the data order and the nested
                    subset drawn from the pool (and the pool itself with `vary_pool`); never the validation or the
                    test set (`data.seed`).
    pretrain_seeds  number of pretraining runs per pretrain entry and model (seeds base.seed + p, p = 0 .. P-1);
                    downstream seed s fine-tunes (and evaluates zero-shot) the pretraining run of seed index s mod P,
                    so with P > 1 the intervals also cover pretraining's randomness. 1 (default): one pretrained
                    model, as the paper fine-tunes.
    vary_pool       True: each downstream seed draws its own training pool (`data.pool_seed`), so the intervals
                    also cover which problems the downstream pool holds; False (default): one pool per group.
    length_check    True: the study also reruns, with their length doubled, the pretraining runs (every seed) of
                    every pretrain entry and model, and the smallest and largest N of scratch and fine-tuned runs
                    of every group (every seed, at the learning rate its grid chose); the report compares the
                    medians over the same seeds (`length_check` in report.json).
    data_seed       pretrain, downstream: the `data.seed` of pretraining and of downstream runs. They differ, so
                    the downstream pool never repeats the pretraining pool's sources (the paper generated every
                    dataset with seed 0, so its downstream sources were its pretraining sources; equal seeds give
                    that back).
    mixture         "full" (default): a `mixed` pretraining run trains on every family's whole pretraining set
                    (its data.num_train is per family, times the number of families), so the mixed model has seen
                    everything each single-family model saw; "equal_total": data.num_train samples in total, the
                    same budget as one single-family run.
    pack            True (default): runs that differ only in seed and learning rate train as one program
                    (`fno_jax.training.packing`); False runs them one at a time.
    pretrain.<name> task (str) and overrides (partial run config, e.g. {"task_ranges": {...}, "train": {...}}).
    downstream.<group>
                    task, shift (label of the downstream ranges, e.g. "e5-10"), task_ranges (partial),
                    num_train (tuple of downstream sizes N), modes (subset of scratch / finetune / zeroshot),
                    pretrained (tuple of pretrain names fine-tuned / evaluated zero-shot), learning_rates (grid;
                    every LR is run, the report keeps the best-validation one per point and seed), epochs
                    (run length), batch_size (a run at N uses min(N, batch_size)), finetune_learning_rates (the
                    fine-tuned runs' own grid; empty: learning_rates), scratch_num_train (further sizes
                    for scratch runs only: a scratch curve that must reach the fine-tuned errors), variants
                    (fine-tuning variants: ({"label", "overrides"}, ...), e.g. adapters or residual losses; each a
                    point of its own), zeroshot_stats (the zero-shot statistics rules, default both), overrides
                    (partial run config applied to every run of the group).

Expansion rules (the "why" of each is in the code):
  * pretraining runs come first, downstream runs after, so running the list in order meets every dependency;
  * every training run's length is in epochs (train.num_epochs, train.num_steps = -1): steps =
    epochs x floor(num_train / batch) with the last partial batch dropped, as the paper's loader does;
  * every run evaluates once per epoch (train.eval_every = 0, bounded by train.max_evals) and keeps the
    checkpoint of lowest validation loss (train.select_by = "val_loss");
  * scratch:  init_from = "", the group's LR grid;
  * finetune: init_from = the pretrain run's workdir, its model and input layout (a `mixed` model keeps the
              7-channel layout on a single-PDE task), the same LR grid;
  * zeroshot: train.num_steps = 0, init_from as finetune, one run per (group, pretrain, model, pretraining seed,
              statistics rule) - no N, no LR - under both rules (`zeroshot_stats`): the pretraining statistics (the
              released code's inference path) and the downstream pool's;
  * every N of a group draws from one train pool of the largest N, whose inputs give the normalization
    statistics, the same at every N;
  * the global batch is min(batch_size, N) so tiny downstream sets still make full batches (the paper's rule).

The workdir of a run is `SWEEP_DIR/runs/<name>/`; names are readable and unique, e.g. `pretrain-poisson-s0`,
`poisson_e5-10-finetune-from-poisson-n00032-lr0.001-s1`, with `-w32m8` before the seed when `models` is set.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import ml_collections

from experiments.configs import base as base_config
from experiments.configs.study_scale import HEAD_FACTOR
from fno_jax.config import ConfigError, flat_items, layout_of, model_size
from fno_jax.model.channels import holds, num_channels
from fno_jax.storage import paths
from fno_jax.training.cadence import Cadence
from solvers.families import FAMILIES, MIXED, MIXTURE, TASK_NAMES

__all__ = [
    "MODES",
    "MIXTURES",
    "RunSpec",
    "apply_overrides",
    "downstream_group",
    "epoch_steps",
    "expand_study",
    "fno_num_params",
    "new_study",
    "num_steps_of",
    "pretrain_entry",
    "run_workdir",
    "shift_label",
]

MODES = ("scratch", "finetune", "zeroshot")
# Zero-shot runs normalize their inputs with the statistics of ("zeroshot_stats"): "pretrain", the pretraining data's
# (the released code's only inference path: its run.sh evaluates with the pretraining config's scales), or
# "downstream", the downstream pool's; `finetune.norm_stats` of each.
ZEROSHOT_STATS = ("pretrain", "downstream")
_NORM_STATS_OF = {"pretrain": "pretrained", "downstream": "downstream"}
# study.vary_pool: the pool seed of downstream seed s is POOL_SEED_BASE x (downstream data seed) + s, apart from the
# pretraining pool (data seed 0) and from every other seed's pool.
POOL_SEED_BASE = 1000
MIXTURES = ("full", "equal_total")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training/evaluation run of a sweep.

    Properties:
      name: unique readable name, also the workdir's folder name under `SWEEP_DIR/runs/`.
      config: the complete, locked run config (base.py's keys only).
      depends_on: names of runs that must have finished (summary.json) before this one starts.
      meta: JSON-serialisable description merged into the run's results.jsonl record: kind
        ("pretrain" | "downstream"), group, shift, task, task_ranges, mode, pretrain, pretrain_seed (the seed of the
        pretraining run it starts from; None for scratch), variant (a fine-tuning variant's label), num_train,
        learning_rate, epochs, length_check (a doubled run of the length check), zeroshot_stats (zero-shot runs:
        "pretrain" or "downstream"), model, seed, num_steps (the derived run length), num_params.
      select_lr_from: a length-check run's learning rate is not fixed in advance: the sweep gives it the rate of
        the run among these (its seed's grid at the same point) with the lowest validation error, as the report
        chooses it.
    """

    name: str
    config: ml_collections.ConfigDict
    depends_on: tuple[str, ...]
    meta: dict[str, Any]
    select_lr_from: tuple[str, ...] = ()


def run_workdir(sweep_dir: str, name: str) -> str:
    """The workdir of run `name` in a sweep: `SWEEP_DIR/runs/<name>`."""
    return paths.join(sweep_dir, "runs", name)


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
            raise ConfigError(f"fno_num_params: {arg} must be >= 1, got {value}.")
    spectral = depth * 2 * width * width * modes * modes * 2
    pointwise = depth * (width * width + width)
    lift = (in_channels + 1) * width
    head = (width + 1) * fc_dim + (fc_dim + 1) * out_dim
    return spectral + pointwise + lift + head


def epoch_steps(num_train: int, batch_size: int, epochs: int) -> int:
    """Steps of `epochs` epochs over `num_train` samples at `batch_size`, the last partial batch dropped.

    The paper's loader (utils/data_utils.py, drop_last=True) and its 500-epoch runs: 500 * floor(N / batch).
    """
    if batch_size < 1 or num_train < batch_size:
        raise ConfigError(f"epoch_steps: need 1 <= batch_size <= num_train, got batch {batch_size}, N {num_train}.")
    return int(epochs) * (int(num_train) // int(batch_size))


def new_study(name: str) -> ml_collections.ConfigDict:
    """An empty study: `base` = base.py's run config with the paper's protocol; callers fill pretrain/downstream."""
    study = ml_collections.ConfigDict()
    study.name = name
    study.description = ""
    study.base = base_config.get_config()
    _apply_protocol(study.base)
    study.models = ()
    study.seeds = 1
    study.pretrain_seeds = 1
    study.vary_pool = False
    study.length_check = False
    study.data_seed = ml_collections.ConfigDict({"pretrain": 0, "downstream": 1})
    study.mixture = "full"
    # Runs that differ only in seed and learning rate train as one program (fno_jax.training.packing); False: one at a
    # time.
    study.pack = True
    study.pretrain = ml_collections.ConfigDict()
    study.downstream = ml_collections.ConfigDict()
    return study


def _apply_protocol(base: ml_collections.ConfigDict) -> None:
    """The paper's training protocol, whatever the run-config defaults are (docs/FIDELITY.md)."""
    base.model.init = "torch"  # PyTorch's default Linear/Conv init, as the paper's model
    base.train.num_steps = -1  # lengths are epochs: steps derived from train.num_epochs
    base.train.eval_every = 0  # validate once per epoch (utils/trainer.py)
    base.train.select_by = "val_loss"  # keep the epoch of lowest validation loss
    base.train.matmul_precision = "highest"  # full float32: no TF32 on GPUs
    base.finetune.norm_stats = "downstream"  # statistics of the downstream pool, zero-shot included


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
    batch_size: int,
    min_steps: int = 0,
    modes: Sequence[str] = MODES,
    shift: str = "",
    scratch_num_train: Sequence[int] = (),
    finetune_learning_rates: Sequence[float] = (),
    variants: Sequence[dict[str, Any]] = (),
    zeroshot_stats: Sequence[str] = ZEROSHOT_STATS,
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
            "scratch_num_train": tuple(int(n) for n in scratch_num_train),
            "modes": tuple(modes),
            "pretrained": tuple(pretrained),
            "learning_rates": tuple(float(lr) for lr in learning_rates),
            "finetune_learning_rates": tuple(float(lr) for lr in finetune_learning_rates),
            "epochs": int(epochs),
            "batch_size": int(batch_size),
            "min_steps": int(min_steps),
            "variants": tuple(_variant(v) for v in variants),
            "zeroshot_stats": tuple(zeroshot_stats),
            "overrides": overrides,
        }
    )


def _variant(v: dict[str, Any]) -> dict[str, Any]:
    """A fine-tuning variant: label, overrides (partial run config), and optionally its own sizes N (`num_train`; a
    label-free variant runs at N = 0) and learning-rate grid (`learning_rates`)."""
    return {
        "label": str(v["label"]),
        "overrides": dict(v.get("overrides", {})),
        "num_train": tuple(int(n) for n in v.get("num_train", ())),
        "learning_rates": tuple(float(lr) for lr in v.get("learning_rates", ())),
    }


def shift_label(task: str, task_ranges: dict[str, Any]) -> str:
    """'e5-10', 'r1-2', 'w5-15' for the task's own range field; '' for mixed."""
    family = FAMILIES.get(task)
    if family is None or family.range_field not in task_ranges:
        return ""
    lo, hi = task_ranges[family.range_field]
    return f"{family.range_label}{lo:g}-{hi:g}"


def apply_overrides(config: ml_collections.ConfigDict, overrides: Any, where: str, _prefix: str = "") -> None:
    """Write a partial (nested) config into `config` in place; an unknown key is a ValueError."""
    if overrides is None:
        return
    items = overrides.items() if hasattr(overrides, "items") else None
    if items is None:
        raise ConfigError(f"{where}: overrides must be a dict/ConfigDict, got {type(overrides).__name__}.")
    for key, value in items:
        path = f"{_prefix}{key}"
        if key not in config:
            raise ConfigError(
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
                raise ConfigError(f"{where}: bad value {value!r} for '{path}': {e}") from e


def _check_name(kind: str, name: str) -> None:
    if not _NAME_RE.match(name):
        raise ConfigError(
            f"{kind} name {name!r} is used as a folder name; use only letters, digits, '_', '.', '+', '-'."
        )


def _check_study(study: ml_collections.ConfigDict, where: str) -> None:
    for field in ("base", "pretrain", "downstream"):
        if field not in study:
            raise ConfigError(f"{where}: missing field '{field}' (start from experiments.study.new_study).")
    reference = set(flat_items(base_config.get_config()))
    extra = set(flat_items(study.base)) - reference
    missing = reference - set(flat_items(study.base))
    if extra or missing:
        raise ConfigError(
            f"{where}: study.base must have exactly the keys of experiments/configs/base.py; "
            f"extra {sorted(extra)}, missing {sorted(missing)}."
        )
    if int(study.get("seeds", 1)) < 1:
        raise ConfigError(f"{where}: seeds must be >= 1, got {study.seeds}.")
    if study.get("mixture", "full") not in MIXTURES:
        raise ConfigError(f"{where}: mixture must be one of {MIXTURES}, got {study.mixture!r}.")


@dataclasses.dataclass(frozen=True)
class _Expansion:
    """What every run of one study shares while it is expanded."""

    study: ml_collections.ConfigDict
    sweep_dir: str
    where: str
    models: tuple[tuple[int, int], ...]  # the study's ladder; empty = base.model only

    @property
    def model_list(self) -> tuple[tuple[int, int], ...]:
        base = self.study.base.model
        return self.models or ((int(base.width), int(base.modes)),)

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(int(self.study.base.seed) + s for s in range(int(self.study.get("seeds", 1))))

    @property
    def pretrain_seeds(self) -> tuple[int, ...]:
        return tuple(int(self.study.base.seed) + s for s in range(int(self.study.get("pretrain_seeds", 1))))

    def pretrain_seed(self, seed: int) -> int:
        """The seed of the pretraining run a downstream run of `seed` starts from (round robin)."""
        return self.pretrain_seeds[self.seeds.index(seed) % len(self.pretrain_seeds)]

    def data_seed(self, kind: str) -> int:
        seeds = self.study.get("data_seed", {"pretrain": 0, "downstream": 1})
        return int(seeds[kind])

    def pool_seed(self, seed: int) -> int:
        """`data.pool_seed` of a downstream run of `seed`: its own pool (study.vary_pool), else the data seed's."""
        if not self.study.get("vary_pool", False):
            return -1
        return POOL_SEED_BASE * self.data_seed("downstream") + seed

    def set_model(self, config: ml_collections.ConfigDict, width: int, modes: int) -> None:
        if self.models:  # the study's model list wins over per-run overrides
            config.model.width, config.model.modes = width, modes
            config.model.fc_dim = HEAD_FACTOR * width

    def suffix(self, width: int, modes: int, seed: int) -> str:
        return (f"-w{width}m{modes}" if self.models else "") + f"-s{seed}"


def expand_study(study: ml_collections.ConfigDict, sweep_dir: str) -> list[RunSpec]:
    """Expand a study into its runs, dependencies first (see the module docstring for the rules)."""
    where = f"study {study.get('name', '?')!r}"
    _check_study(study, where)
    models = tuple(tuple(int(v) for v in m) for m in study.get("models", ()) or ())
    for m in models:
        if len(m) != 2 or min(m) < 1:
            raise ConfigError(f"{where}: models must be (width, modes) pairs of positive ints, got {m}.")
    ex = _Expansion(study, paths.abspath(sweep_dir), where, models)

    runs: list[RunSpec] = []
    # (pretrain name, model index, seed) -> (run name, run config)
    pretrained: dict[tuple[str, int, int], tuple[str, ml_collections.ConfigDict]] = {}
    for pname, entry in study.pretrain.items():
        _check_name("pretrain", pname)
        if entry.task not in TASK_NAMES:
            raise ConfigError(f"{where}: pretrain {pname!r} has task {entry.task!r}; use one of {TASK_NAMES}.")
        for mi, (width, modes) in enumerate(ex.model_list):
            seeds = []
            for seed in ex.pretrain_seeds:
                spec = _pretrain_run(ex, pname, entry, width, modes, seed)
                runs.append(spec)
                seeds.append(spec)
                pretrained[(pname, mi, seed)] = (spec.name, spec.config)
            if study.get("length_check", False):
                # Every seed: two pretraining runs of one length can differ by more than a doubling changes one.
                runs += [_doubled(spec, ()) for spec in seeds]

    for gname, group in study.downstream.items():
        runs += _group_runs(ex, gname, group, pretrained)

    names = [r.name for r in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{where}: expansion gives duplicate run names {duplicates}; make LRs/names distinct.")
    return runs


def _pretrain_run(
    ex: _Expansion, pname: str, entry: ml_collections.ConfigDict, width: int, modes: int, seed: int
) -> RunSpec:
    config = copy.deepcopy(ex.study.base)
    config.lock()
    config.task = entry.task
    apply_overrides(config, entry.get("overrides"), f"{ex.where}, pretrain {pname!r}")
    ex.set_model(config, width, modes)
    config.seed = seed
    config.data.seed = ex.data_seed("pretrain")
    if entry.task == MIXED and ex.study.get("mixture", "full") == "full":
        config.data.num_train = int(config.data.num_train) * len(MIXTURE)
    num_steps = _set_length(config)
    name = f"pretrain-{pname}{ex.suffix(width, modes, seed)}"
    meta = {
        "kind": "pretrain",
        "group": f"pretrain-{pname}",
        "shift": "pretrain",
        "task": config.task,
        "task_ranges": _ranges_of(config),
        "mode": "scratch",
        "pretrain": "",
        "pretrain_seed": None,
        "variant": "",
        "num_train": int(config.data.num_train),
        "learning_rate": float(config.train.learning_rate),
        "epochs": _epochs_of(config),
        "length_check": False,
        **_run_facts(config, seed, num_steps),
    }
    return RunSpec(name, config, (), meta)


def _epochs_of(config: ml_collections.ConfigDict) -> float:
    """A run's length in epochs (steps x batch / N; a floored run counts its floor)."""
    steps = num_steps_of(config)
    return steps / max(int(config.data.num_train) // int(config.train.batch_size), 1)


def _doubled(spec: RunSpec, select_lr_from: tuple[str, ...]) -> RunSpec:
    """The run `spec` with its length doubled (the length check): twice its steps, everything else the same; a
    downstream one takes the learning rate its seed's grid chose (`select_lr_from`, resolved by the sweep)."""
    config = copy.deepcopy(spec.config)
    config.train.num_steps = 2 * int(spec.meta["num_steps"])
    _clip_intervals(config, config.train.num_steps)
    meta = {**spec.meta, "num_steps": int(config.train.num_steps), "epochs": 2 * spec.meta["epochs"]}
    meta["length_check"] = True
    if select_lr_from:
        meta["learning_rate"] = None
    name = re.sub(r"-lr[^-]*(?=-)", "", spec.name) + "-x2"
    depends_on = spec.depends_on + tuple(n for n in select_lr_from if n not in spec.depends_on)
    return RunSpec(name, config, depends_on, meta, select_lr_from)


def _group_runs(
    ex: _Expansion,
    gname: str,
    group: ml_collections.ConfigDict,
    pretrained: dict[tuple[str, int, int], tuple[str, ml_collections.ConfigDict]],
) -> list[RunSpec]:
    """Every run of one downstream group: per model, N, mode, variant, pretrained model, LR and seed; then the
    length check (doubled runs of the smallest and largest N of each trained mode); then zero-shot."""
    _check_name("downstream group", gname)
    gwhere = f"{ex.where}, downstream {gname!r}"
    sizes, lrs = _check_group(ex, group, gwhere)
    runs = []
    for mi, (width, modes) in enumerate(ex.model_list):
        downstream = copy.deepcopy(ex.study.base)
        downstream.lock()
        downstream.task = group.task
        apply_overrides(downstream, {"task_ranges": group.task_ranges}, gwhere)
        apply_overrides(downstream, group.get("overrides"), gwhere)
        ex.set_model(downstream, width, modes)
        downstream.data.seed = ex.data_seed("downstream")
        # Every N of the group draws from one train pool (per seed with study.vary_pool), so N=8 lies inside N=16
        # inside ..., and the pool's inputs give the normalization statistics at every N (unless a stored dataset,
        # whose train split is the pool, is used).
        downstream.data.num_train_pool = max(int(downstream.data.num_train_pool), *_all_sizes(group, sizes))
        points: dict[tuple, list[RunSpec]] = {}  # (mode, variant, pname, n, seed) -> its grid runs
        for mode, n, variant, pname in _trained_points(group, sizes):
            rates = tuple(group.get("finetune_learning_rates", ())) if mode == "finetune" else ()
            rates = tuple(variant.get("learning_rates", ())) or rates
            for lr in rates or lrs:
                for seed in ex.seeds:
                    pre = pretrained.get((pname, mi, ex.pretrain_seed(seed)))
                    config, deps = _downstream_run(ex, downstream, mode, pre, n, group, seed, variant)
                    config.train.learning_rate = lr
                    source = f"-from-{pname}" if pname else ""
                    label = f"-{variant['label']}" if variant["label"] else ""
                    name = f"{gname}-{mode}{label}{source}-n{n:05d}-lr{lr:g}{ex.suffix(width, modes, seed)}"
                    meta = _meta(ex, config, gname, group, mode, pname, n, seed, variant)
                    spec = RunSpec(name, config, deps, meta)
                    runs.append(spec)
                    points.setdefault((mode, variant["label"], pname, n, seed), []).append(spec)
        if ex.study.get("length_check", False):
            runs += _length_check_runs(points)
        if "zeroshot" in group.modes:
            runs += _zeroshot_runs(ex, gname, group, downstream, pretrained, mi, sizes, (width, modes))
    return runs


def _all_sizes(group: ml_collections.ConfigDict, sizes: tuple[int, ...]) -> tuple[int, ...]:
    """Every N of a group: its sizes and the extra scratch sizes (`scratch_num_train`)."""
    return tuple(sorted(set(sizes) | {int(n) for n in group.get("scratch_num_train", ())}))


def _trained_points(group: ml_collections.ConfigDict, sizes: tuple[int, ...]):
    """(mode, N, variant, pretrain name) of every trained point of a group: scratch at its sizes (the group's, and
    `scratch_num_train` beyond them), fine-tuned per variant and pretrained model."""
    base_variant = {"label": "", "overrides": {}}
    for mode in [m for m in MODES if m in group.modes and m != "zeroshot"]:
        variants = (base_variant,) if mode == "scratch" else tuple(group.get("variants", ())) or (base_variant,)
        mode_sizes = _all_sizes(group, sizes) if mode == "scratch" else sizes
        for n in mode_sizes if mode == "scratch" else sorted({*sizes, *_variant_sizes(variants)}):
            for variant in variants:
                if n not in (variant.get("num_train") or mode_sizes):
                    continue
                for pname in group.pretrained if mode == "finetune" else ("",):
                    yield mode, n, variant, pname


def _variant_sizes(variants) -> set[int]:
    return {int(n) for v in variants for n in (v.get("num_train") or ())}


def _length_check_runs(points: dict[tuple, list[RunSpec]]) -> list[RunSpec]:
    """The doubled runs of the smallest and largest N of each trained mode (its first variant and pretrained model;
    every seed), each at the learning rate its seed's grid chose."""
    out = []
    for mode in ("scratch", "finetune"):
        keys = [k for k in points if k[0] == mode]
        if not keys:
            continue
        variant, pname = keys[0][1], keys[0][2]
        sizes = sorted({k[3] for k in keys if k[1] == variant and k[2] == pname})
        for n in sorted({sizes[0], sizes[-1]}):
            for key in [k for k in keys if k[1:4] == (variant, pname, n)]:
                grid = points[key]
                out.append(_doubled(grid[0], tuple(spec.name for spec in grid)))
    return out


def _zeroshot_runs(ex, gname, group, downstream, pretrained, mi, sizes, model) -> list[RunSpec]:
    """One zero-shot run per (pretrained model, pretraining seed, statistics rule): no training, so no N and no LR;
    the pool (and its statistics, for the "downstream" rule) is the group's."""
    out = []
    for pname in group.pretrained:
        for seed in ex.pretrain_seeds:
            for rule in tuple(group.get("zeroshot_stats", ZEROSHOT_STATS)):
                pre = pretrained[(pname, mi, seed)]
                config, deps = _downstream_run(ex, downstream, "zeroshot", pre, min(sizes), group, seed, None)
                config.finetune.norm_stats = _NORM_STATS_OF[rule]
                label = "" if rule == "downstream" else f"-{rule}stats"
                name = f"{gname}-zeroshot{label}-from-{pname}{ex.suffix(*model, seed)}"
                meta = _meta(ex, config, gname, group, "zeroshot", pname, 0, seed, None)
                meta["zeroshot_stats"] = rule
                out.append(RunSpec(name, config, deps, meta))
    return out


def _check_group(ex: _Expansion, group: ml_collections.ConfigDict, gwhere: str) -> tuple[tuple[int, ...], tuple]:
    if group.task not in TASK_NAMES:
        raise ConfigError(f"{gwhere}: task {group.task!r}; use one of {TASK_NAMES}.")
    bad_modes = set(group.modes) - set(MODES)
    if bad_modes:
        raise ConfigError(f"{gwhere}: unknown modes {sorted(bad_modes)}; use a subset of {MODES}.")
    sizes = tuple(int(n) for n in group.num_train)
    if not sizes or min(sizes) < 1:
        raise ConfigError(f"{gwhere}: num_train must be a non-empty tuple of sizes >= 1, got {sizes}.")
    lrs = tuple(float(lr) for lr in group.learning_rates)
    if not lrs or min(lrs) <= 0 or min(group.get("finetune_learning_rates", ()) or lrs) <= 0:
        raise ConfigError(f"{gwhere}: learning_rates must be a non-empty tuple of positive floats.")
    if int(group.epochs) < 1 or int(group.batch_size) < 1:
        raise ConfigError(f"{gwhere}: epochs and batch_size must be >= 1, got {group.epochs}, {group.batch_size}.")
    needs_pretrain = {"finetune", "zeroshot"} & set(group.modes)
    if needs_pretrain and not group.pretrained:
        raise ConfigError(f"{gwhere}: modes {sorted(needs_pretrain)} need `pretrained` run names.")
    for pname in group.pretrained:
        if pname not in ex.study.pretrain:
            raise ConfigError(
                f"{gwhere}: pretrained {pname!r} is not a study.pretrain entry "
                f"(have {sorted(ex.study.pretrain.keys())})."
            )
    return sizes, lrs


def _downstream_run(
    ex: _Expansion,
    downstream: ml_collections.ConfigDict,
    mode: str,
    pre: tuple[str, ml_collections.ConfigDict] | None,
    n: int,
    group: ml_collections.ConfigDict,
    seed: int,
    variant: dict | None,
) -> tuple[ml_collections.ConfigDict, tuple[str, ...]]:
    """One downstream run config (a copy of the group's config, with the variant's overrides) and its
    dependencies."""
    config = copy.deepcopy(downstream)
    deps: tuple[str, ...] = ()
    if mode != "scratch":
        pre_name, pre_config = pre
        deps = (pre_name,)
        config.init_from = run_workdir(ex.sweep_dir, pre_name)
        # The pretrained network fixes the architecture and the input channels; the domain padding is the
        # downstream task's (it changes no parameter).
        padding = config.model.padding
        config.model = copy.deepcopy(pre_config.model)
        config.model.padding = padding
        layout = layout_of(pre_config)
        # A mixed-layout model keeps its layout where it holds the task's coefficients; otherwise the downstream
        # task's own layout, whose channels fno_jax.training.finetune.channel_map maps from the pretrained ones (a
        # narrower layout would drop coefficients; Darcy's field a has no channel in the mixed layout).
        config.data.layout = MIXED if layout == MIXED and holds(MIXED, config.task) else ""
    if variant:
        apply_overrides(config, variant["overrides"], f"{ex.where}, variant {variant['label']!r}")
    config.seed = seed
    config.data.num_train = n
    if mode != "zeroshot":
        config.data.pool_seed = ex.pool_seed(seed)
    # The paper shrinks the batch for small sets (utils/trainer.py modify_bs_for_subsampling): min(N, 128); a
    # residual-only run's set is its unlabelled inputs.
    epoch_set = int(config.data.num_unlabelled) if config.train.loss == "residual" else n
    config.train.batch_size = min(int(group.batch_size), epoch_set if mode != "zeroshot" else n)
    config.train.eval_batch_size = min(
        int(config.train.eval_batch_size), int(config.data.num_val), int(config.data.num_test)
    )
    if mode == "zeroshot":
        config.train.num_steps = 0
        _clip_intervals(config, 0)
    else:
        config.train.num_epochs = int(group.epochs)
        # Reduced scales may floor a run's steps (the few steps of `epochs` at the smallest N train nothing);
        # the paper's scale has no floor.
        floor = int(group.get("min_steps", 0))
        if floor and num_steps_of(config) < floor:
            config.train.num_steps = floor
        _set_length(config)
    return config, deps


def _set_length(config: ml_collections.ConfigDict) -> int:
    """The run's length in steps, derived from its epochs unless an override fixed train.num_steps (>= 0)."""
    num_steps = num_steps_of(config)
    _clip_intervals(config, num_steps)
    return num_steps


def _clip_intervals(config: ml_collections.ConfigDict, num_steps: int) -> None:
    # Resume checkpoints and log lines stay within a short run; evaluation is per epoch (0) and bounded by
    # train.max_evals.
    if num_steps > 0:
        for key in ("checkpoint_every", "log_every"):
            config.train[key] = max(1, min(int(config.train[key]), num_steps))


def num_steps_of(config: ml_collections.ConfigDict) -> int:
    """The run's length in steps: train.num_steps, or derived from train.num_epochs when it is -1 (as the trainer
    resolves it, `fno_jax.training.cadence.Cadence`)."""
    return Cadence.from_config(config).num_steps


def _ranges_of(config: ml_collections.ConfigDict) -> dict[str, list[float]]:
    """The task_ranges fields the run's task actually reads (every family's for mixed)."""
    families = [FAMILIES[config.task]] if config.task in FAMILIES else [FAMILIES[f] for f in MIXTURE]
    return {f.range_field: [float(v) for v in config.task_ranges[f.range_field]] for f in families}


def _run_facts(config: ml_collections.ConfigDict, seed: int, num_steps: int) -> dict[str, Any]:
    m = config.model
    channels = num_channels(layout_of(config))
    return {
        "model": model_size(config),
        "num_params": fno_num_params(int(m.width), int(m.modes), int(m.depth), int(m.fc_dim), channels),
        "seed": int(seed),
        "num_steps": int(num_steps),
    }


def _meta(ex: _Expansion, config, gname, group, mode, pname, n, seed, variant) -> dict[str, Any]:
    trained = mode != "zeroshot"
    return {
        "kind": "downstream",
        "group": gname,
        "shift": str(group.shift),
        "task": config.task,
        "task_ranges": _ranges_of(config),
        "mode": mode,
        "pretrain": pname,
        # The seed of the pretraining run a fine-tuned or zero-shot run starts from; None for scratch.
        "pretrain_seed": None if mode == "scratch" else (ex.pretrain_seed(seed) if trained else seed),
        "variant": variant["label"] if variant else "",
        "num_train": int(n),
        "learning_rate": float(config.train.learning_rate) if trained else None,
        "epochs": _epochs_of(config) if trained else None,
        "length_check": False,
        "pool_seed": int(config.data.pool_seed),
        **_run_facts(config, int(config.seed), num_steps_of(config)),
    }
