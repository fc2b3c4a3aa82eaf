"""The complete set of keys of one training run, their defaults, and the checks run before any work starts.

Every run config (`experiments/configs/*.py`) starts from `default_config()` and overrides fields. ml_collections
already refuses a mistyped key on a locked config (`--config.train.lerning_rate=...`) and a value of the wrong type;
`validate_config` adds what it cannot know: that a config built in code has exactly these keys, and the ranges,
sizes and cross-key rules (a batch larger than the data, zero-shot without a pretrained model, ...).
"""

import difflib
import importlib.util
import json
import math
from typing import Any

import ml_collections

from fno_jax.model import INITS as MODEL_INITS
from fno_jax.model import SIZE_KEYS as MODEL_SIZE_KEYS
from fno_jax.model import channels
from fno_jax.runtime.cli_errors import UserError
from fno_jax.runtime.parallel import PARALLEL_MODES
from fno_jax.training.tuning import MODES as TUNING_MODES
from fno_jax.training.tuning import TARGETS as TUNING_TARGETS
from solvers.families import FAMILIES, TASK_NAMES, TASK_OPTIONS, make_task

DTYPES = ("float32", "bfloat16")
NORM_STATS = ("downstream", "pretrained")
LOADERS = ("auto", "device", "host")
SELECT_BY = ("val_loss", "val_rel_l2", "val_rel_residual")
LOSSES = ("data", "residual", "hybrid")
LR_DECAYS = ("epoch", "step")
MATMUL_PRECISIONS = ("default", "high", "highest")
WANDB_MODES = ("", "online", "offline")


def default_config() -> ml_collections.ConfigDict:
    """All keys of one run with their defaults: the paper's pre-training run (128 x 128, 32,768 samples, batch 128,
    500 epochs with a cosine decay, validated every epoch, the lowest validation loss selected)."""
    config = ml_collections.ConfigDict()
    # Seeds parameter init, data order and the nested training subset; also the data splits unless data.seed is set.
    config.seed = 0
    # PDE family (`solvers.families`): poisson | advection_diffusion | helmholtz | darcy | mixed (the periodic three).
    config.task = "poisson"

    # Coefficient range of each family's sampler, by its range field (`solvers.families`; the paper's pre-training,
    # in-distribution, ranges by default): eigenvalue_range, e in the Poisson K = 0.01 R(-t) diag(1, e) R(t);
    # ratio_range, the advection-diffusion target ||v.grad u|| / ||div(K grad u)||; omega_range, the integer
    # Helmholtz omega.
    config.task_ranges = ml_collections.ConfigDict()
    for family in FAMILIES.values():
        config.task_ranges[family.range_field] = family.default_range

    # Sampler options of the families that have them (`solvers.families.TASK_OPTIONS`): Darcy's boundary condition
    # bc ("dirichlet": u = 0 on the boundary, f = 1, the FNO benchmark's; or "periodic") and its permeability
    # distribution ("threshold": a in {3, 12}, the benchmark's; or "lognormal"). The other families ignore them.
    config.task_options = ml_collections.ConfigDict(dict(TASK_OPTIONS))

    config.data = ml_collections.ConfigDict()
    config.data.resolution = 128  # grid points per side
    config.data.length = 1.0  # domain [0, length)^2
    config.data.num_train = 32768  # a nested, volume-fraction-stratified subset of the train pool
    # Size of the generated train pool the subset is drawn from (0 = num_train). Runs that share a pool (same data
    # seed, same pool size) train on nested subsets: N=8 inside N=16 inside ... A stored dataset's train split is
    # its pool.
    config.data.num_train_pool = 0
    # Validation (checkpoint and learning-rate choice) and test split sizes: the paper's 4,096 each.
    config.data.num_val = 4096
    config.data.num_test = 4096
    # Seed of the data splits (train pool, val, test) alone; -1 = `seed`. Runs that differ only in `seed` then share
    # their pool and test set and differ in init, data order and the subset drawn from the pool.
    config.data.seed = -1
    # Seed of the generated train pool alone; -1 = the data seed. Runs with their own pool seed but one data seed
    # draw their training data from pools of their own and share the validation and test sets (and still train as
    # one program: each run normalizes with its own pool's statistics).
    config.data.pool_seed = -1
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
    # Unlabelled inputs (sources and coefficients, no solutions) drawn from the task for a residual or hybrid loss
    # (train.loss), besides the num_train labelled ones; generated data only.
    config.data.num_unlabelled = 0

    config.model = ml_collections.ConfigDict()
    config.model.width = 64
    config.model.modes = 32
    config.model.depth = 4
    config.model.fc_dim = 128
    # Recompute each Fourier layer in the backward pass: less activation memory for about one more forward pass.
    config.model.remat = False
    # Initialization of the Dense layers: "torch" (the paper's: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights and
    # biases) or "flax" (LeCun-normal weights, zero biases).
    config.model.init = "torch"
    # Domain padding: zero cells appended to the bottom and right of the lifted fields before the Fourier layers
    # and cropped before the head (Li et al. pad non-periodic inputs this way, e.g. Darcy flow with u = 0 on the
    # boundary); 0 for periodic data. Not part of the architecture: parameters load across paddings.
    config.model.padding = 0

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 128  # global, split across devices
    # Run length in steps; 0 with init_from = zero-shot evaluation only; -1 = num_epochs epochs.
    config.train.num_steps = -1
    # Run length in epochs when num_steps = -1: num_epochs * floor(num_train / batch_size) steps (drop-last).
    config.train.num_epochs = 500
    config.train.learning_rate = 1e-3
    # What the run minimizes: "data" (the paper's sum of squared errors against the solutions), "residual" (the mean
    # relative PDE residual of the predictions on unlabelled inputs: no solutions needed; with data.num_train = 0 a
    # label-free run), or "hybrid" (data + residual_weight x residual).
    config.train.loss = "data"
    config.train.residual_weight = 1.0
    # Test-time adaptation (PINO-style): train on the residual of the test inputs themselves (train.loss =
    # "residual", no unlabelled set); the summary reports the test metrics before and after.
    config.train.test_time = False
    config.train.warmup_steps = 0
    # The cosine decay advances once per "epoch" (the paper's, a staircase) or every "step".
    config.train.lr_decay = "epoch"
    config.train.weight_decay = 0.0
    # Periodic actions, in steps; 0 = once per epoch.
    config.train.checkpoint_every = 1000
    config.train.eval_every = 0
    config.train.log_every = 100
    # At most this many evaluations per run: eval_every is raised to ceil(num_steps / max_evals) if needed.
    config.train.max_evals = 1000
    # The validation metric that picks the checkpoint a run is tested (and fine-tuned from) with.
    config.train.select_by = "val_loss"  # val_loss (the paper's) | val_rel_l2
    config.train.eval_batch_size = 128
    config.train.dtype = "float32"  # float32 | bfloat16 (mixed precision; FFTs stay float32)
    # Float32 matmul precision on accelerators: "highest" is full float32 (no TF32 on NVIDIA GPUs).
    config.train.matmul_precision = "highest"
    config.train.parallel = "shard_map"  # shard_map | pmap
    config.train.max_to_keep = 3  # newest checkpoints kept, besides the best one

    # Fine-tuning: a pretrained workdir (empty = train from scratch).
    config.init_from = ""
    # The pretrained run's step to start from; -1 = its best-validation step.
    config.init_step = -1
    # Set by fine-tuning configs: an empty init_from is then an error instead of a silent run from scratch.
    config.require_init_from = False
    config.finetune = ml_collections.ConfigDict()
    config.finetune.freeze = ()  # regexes over param paths ("lift", "spectral_.*") whose leaves stay fixed
    config.finetune.norm_stats = "downstream"  # downstream | pretrained
    # Which weights train (`fno_jax.training.tuning`): "full" (every weight, the paper's), "head" (the projection
    # head), "lora" (low-rank updates of rank finetune.rank on the targeted weights) or "band_adapter" (low-rank
    # updates of the spectral weights with more rank at low frequencies).
    config.finetune.mode = "full"
    config.finetune.rank = 4
    # The weights lora and band_adapter adapt: spectral (Fourier layers), pointwise (their 1x1 layers), head.
    config.finetune.lora_targets = ("spectral", "pointwise", "head")

    # What a run shows besides metrics.jsonl and summary.json (`fno_jax.storage.metric_writer`; written by process 0).
    config.logging = ml_collections.ConfigDict()
    # TensorBoard event files in the workdir: training loss, gradient norm, learning rate, steps/s, validation and
    # test metrics (`tensorboard --logdir WORKDIR`).
    config.logging.tensorboard = True
    # Validation samples drawn as images (source, target, prediction, error); 0 = none.
    config.logging.images = 2
    # At most this many evaluations of a run draw them (evenly spread, and the last): images are the bulk of an
    # event file, and a run of 500 epochs evaluates 500 times.
    config.logging.image_evals = 10
    # Also log to Weights & Biases (needs `pip install wandb`, and `wandb login` unless wandb_mode is "offline").
    config.logging.wandb = False
    config.logging.wandb_project = "fno-jax"
    # "online", "offline" (written under the workdir; `wandb sync` uploads it later) or "" (wandb's own default,
    # e.g. the WANDB_MODE environment variable).
    config.logging.wandb_mode = ""

    return config


class ConfigError(UserError, ValueError):
    """A config key or value that cannot work; the message says what to change."""


def model_size(config: ml_collections.ConfigDict) -> dict[str, int]:
    """The architecture keys of a run config, e.g. {"width": 64, "modes": 32, "depth": 4, "fc_dim": 128}."""
    return {k: int(config.model[k]) for k in MODEL_SIZE_KEYS}


def matmul_precision(config: ml_collections.ConfigDict):
    """The context a run traces its programs in: float32 matmuls at `train.matmul_precision` ("highest": full
    float32, no TF32 on NVIDIA GPUs; "default": the backend's choice)."""
    import jax

    precision = config.train.matmul_precision
    return jax.default_matmul_precision(None if precision == "default" else precision)


def task_of(config: ml_collections.ConfigDict):
    """The solvers task of a run config: `task`, `task_ranges`, `task_options` and `data.length` (validated by the
    task)."""
    return make_task(config.task, config.task_ranges, config.data.length, config.get("task_options"))


def layout_of(config: ml_collections.ConfigDict) -> str:
    """The run's input-channel layout: `data.layout`, or the task's own."""
    return channels.validate_layout(config.data.layout or config.task)


def with_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A run config saved as JSON by an earlier fno-jax, with every key it lacks set to today's default: a key added
    since behaves at its default as the code did before it existed, so an old workdir or sweep compares equal to the
    same run configured today."""

    def fill(node: dict, default: dict) -> dict:
        out = dict(node)
        for key, value in default.items():
            if key not in out:
                out[key] = value
            elif isinstance(value, dict) and isinstance(out[key], dict):
                out[key] = fill(out[key], value)
        return out

    return fill(saved, json.loads(default_config().to_json()))


def flat_items(config: Any, prefix: str = "") -> dict[str, Any]:
    """{"train.learning_rate": 1e-3, ...}: the leaves of a (nested) ConfigDict or dict by dotted path."""
    out = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict | dict):
            out.update(flat_items(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _check_keys(config: ml_collections.ConfigDict) -> None:
    """Exactly default_config()'s keys: a config built in code is not protected by ml_collections' locking."""
    default, given = flat_items(default_config()), flat_items(config)
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
    for path, value in given.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config.{path}={value} is not a finite number; give a finite value.")


def _check_range(path: str, value: Any, *, integer: bool = False) -> None:
    if len(value) != 2:
        raise ConfigError(f"config.{path}={tuple(value)!r} must be a pair (low, high).")
    low, high = value
    if not all(math.isfinite(v) for v in value):
        raise ConfigError(f"config.{path}={tuple(value)!r} must hold finite numbers.")
    if integer and (int(low) != low or int(high) != high):
        raise ConfigError(f"config.{path}={tuple(value)!r} must hold integers, e.g. (1, 10).")
    if not low <= high:
        raise ConfigError(f"config.{path}={tuple(value)!r} is inverted; write it as (low, high) with low <= high.")
    if low <= 0:
        raise ConfigError(f"config.{path}={tuple(value)!r} must be positive.")


def _check_choice(path: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"config.{path}={value!r} is not one of {choices}.")


def _check_at_least(config: ml_collections.ConfigDict, paths: tuple[str, ...], minimum: int) -> None:
    items = flat_items(config)
    for path in paths:
        if items[path] < minimum:
            raise ConfigError(f"config.{path}={items[path]} must be >= {minimum}.")


def _check_task_and_data(c: ml_collections.ConfigDict) -> None:
    _check_choice("task", c.task, TASK_NAMES)
    if c.data.layout:
        if c.data.layout not in TASK_NAMES:
            raise ConfigError(
                f"config.data.layout={c.data.layout!r} must be empty (the task's own) or one of {TASK_NAMES}."
            )
        if not channels.holds(c.data.layout, c.task):
            usable = tuple(name for name in TASK_NAMES if channels.holds(name, c.task))
            raise ConfigError(
                f"config.data.layout={c.data.layout!r} cannot hold every coefficient of config.task={c.task!r} (they "
                f"would be dropped from the inputs); use one of {usable} or leave it empty."
            )
    for family in FAMILIES.values():
        field = family.range_field
        _check_range(f"task_ranges.{field}", c.task_ranges[field], integer=family.integer_range)
    unknown = sorted(set(c.task_options) - set(TASK_OPTIONS))
    if unknown:
        raise ConfigError(f"config.task_options has unknown keys {unknown}; the options are {dict(TASK_OPTIONS)}.")
    if c.data.length <= 0:
        raise ConfigError(f"config.data.length={c.data.length} must be positive.")
    try:
        task = task_of(c)
    except ValueError as err:
        raise ConfigError(f"config.task={c.task!r} with config.task_ranges/task_options: {err}") from None
    n = c.data.resolution
    if getattr(task, "bc", "periodic") == "dirichlet":
        if n < 8:
            raise ConfigError(f"config.data.resolution={n} must be >= 8 (interior nodes per side of the grid).")
    elif n < 8 or n % 2:
        raise ConfigError(f"config.data.resolution={n} must be an even number >= 8 (the paper uses 128).")
    _check_at_least(c, ("data.num_val", "data.num_test", "data.generate_chunk"), 1)
    _check_at_least(c, ("data.num_train", "data.num_unlabelled"), 0)
    _check_at_least(c, ("data.seed", "data.pool_seed"), -1)
    if c.data.num_unlabelled and (c.data.source != "generate" or c.data.loader == "host"):
        raise ConfigError(
            f"config.data.num_unlabelled={c.data.num_unlabelled} draws unlabelled inputs from the task, which needs "
            f"generated data on the devices; config.data.source={c.data.source!r}, data.loader={c.data.loader!r}: "
            "use data.source='generate' with data.loader 'auto' or 'device'."
        )
    if c.data.pool_seed >= 0 and c.data.source not in ("generate",):
        raise ConfigError(
            f"config.data.pool_seed={c.data.pool_seed} draws a generated training pool, but config.data.source="
            f"{c.data.source!r} has none to draw (a stored dataset's train split is its pool; a stream draws fresh "
            "samples every step); set config.data.pool_seed=-1."
        )
    _check_choice("data.loader", c.data.loader, LOADERS)
    if c.data.loader != "auto" and c.data.source == "stream":
        raise ConfigError(
            "config.data.loader applies to stored or generated data; with data.source='stream' leave it 'auto'."
        )
    if c.data.num_train_pool and c.data.num_train_pool < c.data.num_train:
        raise ConfigError(
            f"config.data.num_train={c.data.num_train} exceeds config.data.num_train_pool={c.data.num_train_pool}; "
            "raise the pool or lower num_train."
        )


def _check_model(c: ml_collections.ConfigDict) -> None:
    _check_at_least(c, tuple(f"model.{k}" for k in MODEL_SIZE_KEYS), 1)
    _check_at_least(c, ("model.padding",), 0)
    n = c.data.resolution + c.model.padding
    if c.model.modes > n // 2:
        raise ConfigError(
            f"config.model.modes={c.model.modes} exceeds (resolution + padding) / 2 = {n // 2} "
            f"(data.resolution={c.data.resolution}, model.padding={c.model.padding}); "
            f"use modes <= {n // 2} or a finer resolution."
        )


def _check_train(c: ml_collections.ConfigDict) -> None:
    t = c.train
    _check_at_least(c, ("train.batch_size", "train.eval_batch_size", "train.max_to_keep", "train.max_evals"), 1)
    _check_at_least(c, ("train.checkpoint_every", "train.eval_every", "train.log_every", "train.warmup_steps"), 0)
    _check_at_least(c, ("train.num_steps",), -1)
    if t.num_steps == -1 and t.num_epochs < 1:
        raise ConfigError(
            f"config.train.num_epochs={t.num_epochs} must be >= 1 when config.train.num_steps=-1 (length in epochs)."
        )
    _check_losses(c)
    epoch_set, what = (c.data.num_train, "config.data.num_train") if t.loss != "residual" else (
        (c.data.num_test, "config.data.num_test (test-time adaptation)") if t.test_time
        else (c.data.num_unlabelled, "config.data.num_unlabelled"))  # fmt: skip
    if c.data.source != "stream" and t.num_steps != 0 and t.batch_size > epoch_set:
        raise ConfigError(
            f"config.train.batch_size={t.batch_size} is larger than the training data ({what}={epoch_set}); use "
            f"batch_size <= {max(epoch_set, 1)}."
        )
    if t.loss == "hybrid" and t.num_steps != 0 and t.batch_size > c.data.num_unlabelled:
        raise ConfigError(
            f"config.train.batch_size={t.batch_size} is larger than the unlabelled inputs (config.data.num_unlabelled="
            f"{c.data.num_unlabelled}) a hybrid loss draws a batch of every step; use more of them."
        )
    if t.num_steps == 0 and not c.init_from:
        raise ConfigError(
            "config.train.num_steps=0 evaluates a pretrained model (zero-shot) and needs config.init_from=WORKDIR."
        )
    if t.learning_rate <= 0:
        raise ConfigError(f"config.train.learning_rate={t.learning_rate} must be positive.")
    _check_choice("train.dtype", t.dtype, DTYPES)
    _check_choice("train.parallel", t.parallel, PARALLEL_MODES)
    _check_choice("train.select_by", t.select_by, SELECT_BY)
    _check_choice("train.matmul_precision", t.matmul_precision, MATMUL_PRECISIONS)
    _check_choice("model.init", c.model.init, MODEL_INITS)
    _check_choice("train.lr_decay", t.lr_decay, LR_DECAYS)


def _check_losses(c: ml_collections.ConfigDict) -> None:
    """The loss and the data it needs: labelled solutions for "data", unlabelled inputs for a residual term."""
    t, d = c.train, c.data
    _check_choice("train.loss", t.loss, LOSSES)
    if not (math.isfinite(t.residual_weight) and t.residual_weight >= 0):
        raise ConfigError(f"config.train.residual_weight={t.residual_weight} must be a finite number >= 0.")
    if d.num_train == 0 and t.loss != "residual" and t.num_steps != 0:
        raise ConfigError(
            f"config.data.num_train=0 leaves no labelled solutions for train.loss={t.loss!r}; label-free training "
            "minimizes the PDE residual: set config.train.loss='residual' (and data.num_unlabelled > 0)."
        )
    if t.test_time:
        if t.loss != "residual" or not c.init_from or d.num_unlabelled:
            raise ConfigError(
                "config.train.test_time=True adapts a pretrained model (config.init_from) on the residual of the test "
                "inputs: set train.loss='residual' and data.num_unlabelled=0 (the test inputs are the unlabelled set)."
            )
    elif t.loss != "data" and d.num_unlabelled == 0 and t.num_steps != 0:
        raise ConfigError(
            f"config.train.loss={t.loss!r} minimizes the PDE residual on unlabelled inputs, but "
            "config.data.num_unlabelled=0; draw some (e.g. --config.data.num_unlabelled=64) or set train.test_time."
        )
    if t.loss == "residual" and t.select_by != "val_rel_residual":
        raise ConfigError(
            f"config.train.loss='residual' trains without solutions, but config.train.select_by={t.select_by!r} would "
            "choose its checkpoint with labelled validation data; set config.train.select_by='val_rel_residual'."
        )


def _check_finetune(c: ml_collections.ConfigDict) -> None:
    _check_choice("finetune.norm_stats", c.finetune.norm_stats, NORM_STATS)
    _check_choice("finetune.mode", c.finetune.mode, TUNING_MODES)
    if c.finetune.mode != "full" and not c.init_from:
        raise ConfigError(
            f"config.finetune.mode={c.finetune.mode!r} adapts a pretrained model; set config.init_from to a workdir or "
            "bundle (or finetune.mode='full' to train from scratch)."
        )
    if c.finetune.rank < 1:
        raise ConfigError(f"config.finetune.rank={c.finetune.rank} must be >= 1.")
    bad = set(c.finetune.lora_targets) - set(TUNING_TARGETS)
    if bad or not c.finetune.lora_targets:
        raise ConfigError(
            f"config.finetune.lora_targets={tuple(c.finetune.lora_targets)} must be a non-empty subset of "
            f"{TUNING_TARGETS}."
        )
    if c.finetune.freeze and c.finetune.mode != "full":
        raise ConfigError(
            f"config.finetune.freeze applies to finetune.mode='full'; finetune.mode={c.finetune.mode!r} already "
            "decides which weights train. Leave finetune.freeze empty."
        )
    if c.require_init_from and not c.init_from:
        raise ConfigError(
            "this is a fine-tuning config: set --config.init_from=PRETRAINED_WORKDIR (a finished pretraining run)."
        )
    if c.finetune.freeze and not c.init_from:
        raise ConfigError(
            "config.finetune.freeze is set but config.init_from is empty; freezing needs a pretrained model."
        )


def _check_logging(c: ml_collections.ConfigDict) -> None:
    _check_at_least(c, ("logging.images",), 0)
    _check_at_least(c, ("logging.image_evals",), 1)
    _check_choice("logging.wandb_mode", c.logging.wandb_mode, WANDB_MODES)
    if c.logging.wandb and importlib.util.find_spec("wandb") is None:
        raise ConfigError(
            "config.logging.wandb=True needs the wandb package, which is not installed; `pip install wandb`, or set "
            "config.logging.wandb=False."
        )


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raise `ConfigError` for a missing or unknown key, a non-finite float, or a value that cannot work."""
    _check_keys(config)
    _check_task_and_data(config)
    _check_model(config)
    _check_train(config)
    _check_finetune(config)
    _check_logging(config)
