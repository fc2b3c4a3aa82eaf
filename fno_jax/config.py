"""The complete set of keys of one training run, their defaults, and the checks run before any work starts.

Every run config (`experiments/configs/*.py`) starts from `default_config()` and overrides fields, so that a key
mistyped on the command line (`--config.train.lerning_rate=...`) is an error, not a silent no-op.
`validate_config` then checks names, types and values, and says what to change.
"""

import difflib
from typing import Any

import ml_collections

TASKS = ("poisson", "advection_diffusion", "helmholtz", "mixed")
DTYPES = ("float32", "bfloat16")
NORM_STATS = ("downstream", "pretrained")
LOADERS = ("auto", "device", "host")
# Channel layouts that hold every coefficient a task's samples carry (a Poisson sample has v = 0 and no omega);
# any other layout would drop a coefficient without a word (e.g. mixed data in the poisson layout loses v and omega).
LAYOUTS_FOR_TASK = {
    "poisson": ("poisson", "advection_diffusion", "mixed"),
    "advection_diffusion": ("advection_diffusion", "mixed"),
    "helmholtz": ("helmholtz", "mixed"),
    "mixed": ("mixed",),
}


def default_config() -> ml_collections.ConfigDict:
    """All keys of one run with their defaults (the paper's pre-training setup at 128x128)."""
    config = ml_collections.ConfigDict()
    # Seeds data generation (train/val/test splits are derived from it), parameter init and data order.
    config.seed = 0
    # PDE family: poisson | advection_diffusion | helmholtz | mixed.
    config.task = "poisson"

    # Coefficient ranges of the task; the pre-training (in-distribution) ranges of the paper.
    config.task_ranges = ml_collections.ConfigDict()
    config.task_ranges.eigenvalue_range = (1.0, 5.0)  # poisson: e in K = 0.01 R(-t) diag(1, e) R(t)
    config.task_ranges.ratio_range = (
        0.2,
        1.0,
    )  # advection_diffusion: ||v.grad u|| / ||div(K grad u)||
    config.task_ranges.omega_range = (1, 10)  # helmholtz: integer omega

    config.data = ml_collections.ConfigDict()
    config.data.resolution = 128  # grid points per side
    config.data.length = 1.0  # domain [0, length)^2
    config.data.num_train = 32768  # a nested, volume-fraction-stratified subset of the train pool
    # Size of the generated train pool the subset is drawn from (0 = num_train). Runs that share a pool (same seed,
    # same pool size) train on nested subsets: N=8 inside N=16 inside ... A stored dataset's train split is its pool.
    config.data.num_train_pool = 0
    config.data.num_val = 1024
    config.data.num_test = 1024
    # "generate" (made on the devices from the seed), "stream" (fresh samples every step), or a dataset directory.
    config.data.source = "generate"
    # Input-channel layout; empty = the task's own (`mixed` for the union layout).
    config.data.layout = ""
    # Where training batches come from: "device" (the training set lives on every device), "host" (each batch is
    # read on the host and prefetched; each process reads only its devices' rows), or "auto" (device when the
    # training set fits in 4 GiB and one process reads it, else host). All three give the same batches.
    config.data.loader = "auto"
    # Samples generated per device call when making splits.
    config.data.generate_chunk = 512

    config.model = ml_collections.ConfigDict()
    config.model.width = 64
    config.model.modes = 32
    config.model.depth = 4
    config.model.fc_dim = 128
    # Recompute each Fourier layer in the backward pass: less activation memory for about one more forward pass.
    config.model.remat = False

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 128  # global, split across devices
    config.train.num_steps = 25_000  # 0 with init_from = zero-shot evaluation only
    config.train.learning_rate = 1e-3
    config.train.warmup_steps = 0
    config.train.weight_decay = 0.0
    config.train.checkpoint_every = 1000
    config.train.eval_every = 500
    config.train.log_every = 100
    config.train.eval_batch_size = 128
    config.train.dtype = "float32"  # float32 | bfloat16 (mixed precision; FFTs stay float32)
    config.train.parallel = "shard_map"  # shard_map | pmap
    config.train.max_to_keep = 3

    # Fine-tuning: a pretrained workdir (empty = train from scratch).
    config.init_from = ""
    config.init_step = -1
    # Set by fine-tuning configs: an empty init_from is then an error instead of a silent run from scratch.
    config.require_init_from = False  # -1 = the pretrained run's best-validation step
    config.finetune = ml_collections.ConfigDict()
    config.finetune.freeze = ()  # regexes over param paths ("lift", "spectral_.*") whose leaves stay fixed
    config.finetune.norm_stats = "downstream"  # downstream | pretrained

    return config


class ConfigError(ValueError):
    """A config key, type or value that cannot work; the message says what to change."""


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    out = {}
    items = config.items() if hasattr(config, "items") else []
    for key, value in items:
        path = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict | dict):
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


def _check_type(path: str, value: Any, default: Any) -> None:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, tuple | list):
        ok = isinstance(value, tuple | list)
    else:
        ok = True
    if not ok:
        raise ConfigError(
            f"config.{path}={value!r} has type {type(value).__name__}; expected {type(default).__name__} "
            f"like the default {default!r}."
        )


def _check_range(path: str, value: Any, *, integer: bool = False, positive: bool = True) -> None:
    if len(value) != 2:
        raise ConfigError(f"config.{path}={tuple(value)!r} must be a pair (low, high).")
    low, high = value
    if integer and (int(low) != low or int(high) != high):
        raise ConfigError(f"config.{path}={tuple(value)!r} must hold integers, e.g. (1, 10).")
    if not low <= high:
        raise ConfigError(f"config.{path}={tuple(value)!r} is inverted; write it as (low, high) with low <= high.")
    if positive and low <= 0:
        raise ConfigError(f"config.{path}={tuple(value)!r} must be positive.")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raise `ConfigError` for an unknown or missing key, a wrong type, or a value that cannot work."""
    default = _flatten(default_config())
    given = _flatten(config)
    for path in given:
        if path not in default:
            close = difflib.get_close_matches(path, list(default), n=1)
            hint = f" Did you mean config.{close[0]}?" if close else ""
            raise ConfigError(f"unknown config key config.{path}.{hint}")
    for path, value in default.items():
        if path not in given:
            raise ConfigError(
                f"config.{path} is missing; start configs from fno_jax.config.default_config() (default {value!r})."
            )
        _check_type(path, given[path], value)

    c = config
    if c.task not in TASKS:
        raise ConfigError(f"config.task={c.task!r} is not one of {TASKS}.")
    if c.data.layout and c.data.layout not in TASKS:
        raise ConfigError(f"config.data.layout={c.data.layout!r} must be empty (the task's own) or one of {TASKS}.")
    if c.data.layout and c.data.layout not in LAYOUTS_FOR_TASK[c.task]:
        raise ConfigError(
            f"config.data.layout={c.data.layout!r} cannot hold every coefficient of config.task={c.task!r} (they "
            f"would be dropped from the inputs); use one of {LAYOUTS_FOR_TASK[c.task]} or leave it empty."
        )
    _check_range("task_ranges.eigenvalue_range", c.task_ranges.eigenvalue_range)
    _check_range("task_ranges.ratio_range", c.task_ranges.ratio_range)
    _check_range("task_ranges.omega_range", c.task_ranges.omega_range, integer=True)

    n = c.data.resolution
    if n < 8 or n % 2:
        raise ConfigError(f"config.data.resolution={n} must be an even number >= 8 (the paper uses 128).")
    if c.data.length <= 0:
        raise ConfigError(f"config.data.length={c.data.length} must be positive.")
    for key in ("num_train", "num_val", "num_test", "generate_chunk"):
        if c.data[key] < 1:
            raise ConfigError(f"config.data.{key}={c.data[key]} must be >= 1.")
    if c.data.loader not in LOADERS:
        raise ConfigError(f"config.data.loader={c.data.loader!r} is not one of {LOADERS}.")
    if c.data.loader != "auto" and c.data.source == "stream":
        raise ConfigError(
            "config.data.loader applies to stored or generated data; with data.source='stream' leave it 'auto'."
        )
    if c.data.num_train_pool and c.data.num_train_pool < c.data.num_train:
        raise ConfigError(
            f"config.data.num_train={c.data.num_train} exceeds config.data.num_train_pool={c.data.num_train_pool}; "
            "raise the pool or lower num_train."
        )

    m = c.model
    for key in ("width", "modes", "depth", "fc_dim"):
        if m[key] < 1:
            raise ConfigError(f"config.model.{key}={m[key]} must be >= 1.")
    if m.modes > n // 2:
        raise ConfigError(
            f"config.model.modes={m.modes} exceeds resolution/2 = {n // 2} (data.resolution={n}); "
            f"use modes <= {n // 2} or a finer resolution."
        )

    t = c.train
    if t.batch_size < 1 or t.eval_batch_size < 1:
        raise ConfigError("config.train.batch_size and config.train.eval_batch_size must be >= 1.")
    if c.data.source != "stream" and t.num_steps > 0 and t.batch_size > c.data.num_train:
        raise ConfigError(
            f"config.train.batch_size={t.batch_size} is larger than the training data "
            f"(config.data.num_train={c.data.num_train}); use batch_size <= {c.data.num_train}."
        )
    if t.num_steps < 0:
        raise ConfigError(f"config.train.num_steps={t.num_steps} must be >= 0 (0 = evaluate only).")
    if t.num_steps == 0 and not c.init_from:
        raise ConfigError(
            "config.train.num_steps=0 evaluates a pretrained model (zero-shot) and needs config.init_from=WORKDIR."
        )
    if t.learning_rate <= 0:
        raise ConfigError(f"config.train.learning_rate={t.learning_rate} must be positive.")
    for key in ("checkpoint_every", "eval_every", "log_every", "max_to_keep"):
        if t[key] < 1:
            raise ConfigError(f"config.train.{key}={t[key]} must be >= 1.")
    if t.warmup_steps < 0:
        raise ConfigError(f"config.train.warmup_steps={t.warmup_steps} must be >= 0.")
    if t.dtype not in DTYPES:
        raise ConfigError(f"config.train.dtype={t.dtype!r} is not one of {DTYPES}.")
    if t.parallel not in ("shard_map", "pmap"):
        raise ConfigError(f"config.train.parallel={t.parallel!r} is not one of ('shard_map', 'pmap').")
    if c.finetune.norm_stats not in NORM_STATS:
        raise ConfigError(f"config.finetune.norm_stats={c.finetune.norm_stats!r} is not one of {NORM_STATS}.")
    if c.require_init_from and not c.init_from:
        raise ConfigError(
            "this is a fine-tuning config: set --config.init_from=PRETRAINED_WORKDIR (a finished pretraining run)."
        )
    if c.finetune.freeze and not c.init_from:
        raise ConfigError(
            "config.finetune.freeze is set but config.init_from is empty; freezing needs a pretrained model."
        )
