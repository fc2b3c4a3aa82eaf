"""The scales every study config comes in, and how a config applies one.

Every study config (rq1..rq4, quickstart) takes a scale name in its ARG, with the same names everywhere:

    (none)        the paper's: 128 x 128, FNO width 64 / 32 modes, 32,768 pretraining samples, N = 2 .. 32,768.
    gpu_minutes   minutes on one GPU: 64 x 64, width 32 / 16 modes; the shape of the curves, not the paper's numbers.
    cpu           the study on a 2-core CPU: 32 x 32, width 16 / 8 modes; provisional sizes, see CPU below.
    runlocal      seconds per run: checks that a study wires up end to end; says nothing about the science.

The protocol is the paper's at every scale (see docs/FIDELITY.md): run lengths in epochs, cosine decay over the
run, batch min(N, batch_size) with the last partial batch dropped, the downstream LR grid with the best run
chosen by validation loss, an evaluation every epoch, the head width 2 x width. A scale changes only sizes: grid,
model, pretraining set and epochs, splits, the N ladder, the LR grid, epochs, seeds. A config that needs other
sizes at one scale (quickstart's shorter ladder, rq2's model ladder) passes them to `parse` for that scale name, so
every size of every study is read from one place.

    scale, options = study_scale.parse(arg, FAMILIES, changes={"cpu": {"num_train": (2, 8, 32)}})
    study_scale.apply_base(study.base, scale)
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import ml_collections

from fno_jax.config import ConfigError

__all__ = [
    "CPU",
    "GPU_MINUTES",
    "HEAD_FACTOR",
    "NAMES",
    "PAPER",
    "RUNLOCAL",
    "SCALES",
    "Scale",
    "apply_base",
    "apply_study",
    "args",
    "downstream_sizes",
    "parse",
    "pretrain_overrides",
]

# The paper's head: fc_dim = fc_cut * embed_cut = 2 x width (config/operators_*.yaml, models/fno.py).
HEAD_FACTOR = 2


@dataclasses.dataclass(frozen=True)
class Scale:
    """Sizes of one study scale.

    Properties:
      name: the name a config ARG uses ("" = the paper's).
      resolution, width, modes, depth: grid and FNO of every run; fc_dim is HEAD_FACTOR x width.
      pretrain_num_train, pretrain_epochs, pretrain_batch, pretrain_learning_rate: the pretraining runs
        (steps = epochs x floor(num_train / batch)). A mixture's size is per family (see study.mixture).
      num_val, num_test: validation (LR choice, checkpoint choice) and test split sizes of every run.
      num_train: the downstream sizes N.
      learning_rates: the downstream LR grid of scratch runs (and of fine-tuned runs unless
        finetune_learning_rates is set); every downstream point runs all of them.
      finetune_learning_rates: the fine-tuned runs' own grid (empty: learning_rates).
      epochs: downstream run length in epochs (steps = epochs x floor(N / min(N, batch_size))).
      batch_size: the downstream batch; a run at N uses min(N, batch_size).
      min_steps: the fewest steps of a downstream run (0 = none, the paper's): a reduced scale's few epochs would
        leave the smallest N a handful of steps.
      max_evals: bound on the evaluations of one run (evaluation is every epoch below it).
      checkpoint_every, log_every: steps between resume checkpoints / log lines (clipped to a run's length).
      seeds: seeds per downstream point (study.seeds).
      pretrain_seeds: pretraining runs per pretrain entry (study.pretrain_seeds; a study config may ask for more).
      vary_pool: each downstream seed draws its own training pool (study.vary_pool).
      length_check: the study reruns its pretraining runs (every seed) and its smallest and largest N with twice the
        steps (study.length_check).
      generate_chunk: samples generated per device call.
      models: the RQ2 ladder of (width, modes).
    """

    name: str
    resolution: int
    width: int
    modes: int
    depth: int
    pretrain_num_train: int
    pretrain_epochs: int
    pretrain_batch: int
    pretrain_learning_rate: float
    num_val: int
    num_test: int
    num_train: tuple[int, ...]
    learning_rates: tuple[float, ...]
    finetune_learning_rates: tuple[float, ...]
    epochs: int
    batch_size: int
    min_steps: int
    max_evals: int
    checkpoint_every: int
    log_every: int
    seeds: int
    pretrain_seeds: int
    vary_pool: bool
    length_check: bool
    generate_chunk: int
    models: tuple[tuple[int, int], ...]

    @property
    def fc_dim(self) -> int:
        return HEAD_FACTOR * self.width

    def replace(self, **changes: Any) -> Scale:
        return dataclasses.replace(self, **changes)


# The paper's released code (config/operators_*.yaml, config/sweep_config.yaml, utils/trainer.py): 500 epochs
# everywhere, pretraining 32,768 samples at batch 128 (128,000 steps), validation and test 4,096 each, the LR grid
# {1e-5, 5e-5, 1e-4, 5e-4, 1e-3}. One seed per point, as in the paper (study.seeds=3 for intervals).
PAPER = Scale(
    name="",
    resolution=128,
    width=64,
    modes=32,
    depth=4,
    pretrain_num_train=32768,
    pretrain_epochs=500,
    pretrain_batch=128,
    pretrain_learning_rate=1e-3,
    num_val=4096,
    num_test=4096,
    num_train=tuple(2**k for k in range(1, 16)),
    learning_rates=(1e-5, 5e-5, 1e-4, 5e-4, 1e-3),
    finetune_learning_rates=(),
    epochs=500,
    batch_size=128,
    min_steps=0,
    max_evals=1000,
    checkpoint_every=1000,
    log_every=100,
    seeds=1,
    pretrain_seeds=1,
    vary_pool=False,
    length_check=False,
    generate_chunk=512,
    # x4 parameters per step, ~69K to ~269M (experiments.study.fno_num_params); 128 x 128 allows modes <= 64.
    models=((16, 4), (16, 8), (32, 8), (32, 16), (64, 16), (64, 32), (128, 32)),
)

# Minutes on one GPU: 64 x 64, width 32 / 16 modes, 8,192 pretraining samples for 16 epochs; downstream N up to 512
# for 100 epochs with the paper's LR grid.
GPU_MINUTES = PAPER.replace(
    name="gpu_minutes",
    resolution=64,
    width=32,
    modes=16,
    pretrain_num_train=8192,
    pretrain_epochs=16,
    pretrain_batch=64,
    num_val=256,
    num_test=256,
    num_train=(2, 8, 32, 128, 512),
    epochs=100,
    batch_size=64,
    max_evals=100,
    checkpoint_every=1000,
    log_every=100,
    seeds=3,
    vary_pool=True,
    models=((16, 4), (16, 8), (32, 8), (32, 16)),
)

# CPU scale (2 cores): the study on a 2-core CPU, sized so that its runs converge (`length_check`: doubling a
# downstream run's steps changes its median error by a few percent; docs/STUDY.md has the measured changes and what
# pretraining does). Reduced against PAPER (docs/FIDELITY.md, "Reduced scales"): 32 x 32 grid; width 16 / 8 modes;
# pretraining 512 samples for 800 epochs at batch 32 (12,800 steps); validation 64 and test 256 samples; N = 2, 8,
# 32, 128 for 100 epochs at batch min(N, 32) and at least 200 steps (100 epochs of N <= 32 are 100 steps or fewer);
# separate 4-rate grids for scratch {1e-3, 3e-3, 1e-2, 3e-2} and fine-tuned runs {1e-4, 3e-4, 1e-3, 3e-3} (the
# 3-rate grids {1e-3, 3e-3, 1e-2} and {1e-4, 3e-4, 1e-3} of the 2026-12-06 RQ1 sweep left scratch at N = 128 with 3
# of 5 seeds, and fine-tuning at N = 8, 32, 128 with 4-5 of 5 seeds, on their top rate; fine-tuning at N = 2 picks
# 3e-4, so its bottom rate stays); at
# most 20 evaluations per run; 5 seeds per point, each with its own training pool; the RQ2 ladder (8, 4), (8, 8),
# (16, 8). Study configs shorten the ladder further.
CPU = PAPER.replace(
    name="cpu",
    resolution=32,
    width=16,
    modes=8,
    pretrain_num_train=512,
    pretrain_epochs=800,
    pretrain_batch=32,
    num_val=64,
    num_test=256,
    num_train=(2, 8, 32, 128),
    learning_rates=(1e-3, 3e-3, 1e-2, 3e-2),
    finetune_learning_rates=(1e-4, 3e-4, 1e-3, 3e-3),
    epochs=100,
    batch_size=32,
    min_steps=200,
    max_evals=20,
    checkpoint_every=1000,
    log_every=50,
    seeds=5,
    vary_pool=True,
    length_check=True,
    generate_chunk=256,
    models=((8, 4), (8, 8), (16, 8)),
)

# Seconds per run: 32 x 32, a tiny FNO, a few steps; two seeds so the seed and interval paths run too.
RUNLOCAL = PAPER.replace(
    name="runlocal",
    resolution=32,
    width=8,
    modes=4,
    pretrain_num_train=64,
    pretrain_epochs=4,
    pretrain_batch=16,
    num_val=16,
    num_test=16,
    num_train=(2, 8),
    learning_rates=(1e-3,),
    epochs=2,
    batch_size=16,
    max_evals=10,
    checkpoint_every=10,
    log_every=5,
    seeds=2,
    vary_pool=True,
    generate_chunk=64,
    models=((4, 2), (8, 4)),
)

SCALES: dict[str, Scale] = {s.name: s for s in (PAPER, GPU_MINUTES, CPU, RUNLOCAL)}
# The names a config ARG may carry (the paper's scale is the one named by none of them).
NAMES = tuple(name for name in SCALES if name)


def parse(
    arg: str | None, choices: Iterable[str] = (), *, changes: Mapping[str, Mapping[str, Any]] | None = None
) -> tuple[Scale, set[str]]:
    """Split a config ARG such as "poisson,cpu" into (scale, other options).

    At most one scale name; every other option must be in `choices`. `changes` maps a scale name ("" = the paper's)
    to the fields a config changes at that scale.
    """
    choices = set(choices)
    options = {part.strip() for part in (arg or "").split(",") if part.strip()}
    unknown = options - choices - set(NAMES)
    if unknown:
        raise ConfigError(
            f"Unknown study config argument(s) {sorted(unknown)} in {arg!r}; valid options are "
            f"{sorted(choices | set(NAMES))}, comma-separated (e.g. ':cpu'); no scale name = the paper's scale."
        )
    named = sorted(options & set(NAMES))
    if len(named) > 1:
        raise ConfigError(f"Choose at most one scale of {list(NAMES)} in {arg!r}, got {named}.")
    scale = SCALES[named[0] if named else ""]
    scale = scale.replace(**(changes or {}).get(scale.name, {}))
    return scale, options - set(NAMES)


def args(*option_sets: Iterable[str]) -> tuple[str, ...]:
    """Every ARG a config accepts: each scale (none included) alone and with one option of each set."""
    combos = [""]
    for options in option_sets:
        combos += list(options)
    out = []
    for combo, scale in itertools.product(combos, ("", *NAMES)):
        out.append(",".join(part for part in (combo, scale) if part))
    return tuple(out)


def apply_base(base: ml_collections.ConfigDict, scale: Scale) -> None:
    """Write the run-level sizes of `scale` into a study's base run config."""
    base.data.resolution = scale.resolution
    base.data.num_val = scale.num_val
    base.data.num_test = scale.num_test
    base.data.generate_chunk = scale.generate_chunk
    base.model.width = scale.width
    base.model.modes = scale.modes
    base.model.depth = scale.depth
    base.model.fc_dim = scale.fc_dim
    base.train.batch_size = scale.batch_size
    base.train.eval_batch_size = min(base.train.eval_batch_size, scale.num_val, scale.num_test)
    base.train.max_evals = scale.max_evals
    base.train.checkpoint_every = scale.checkpoint_every
    base.train.log_every = scale.log_every


def apply_study(study: ml_collections.ConfigDict, scale: Scale, *, pretrain_seeds: int | None = None) -> None:
    """Write the study-level settings of `scale` (seeds, pretraining seeds, a pool per seed, the length check) into
    a study; a config may ask for more pretraining seeds than its scale's."""
    study.seeds = scale.seeds
    study.pretrain_seeds = max(scale.pretrain_seeds, pretrain_seeds or 0)
    study.vary_pool = scale.vary_pool
    study.length_check = scale.length_check


def pretrain_overrides(scale: Scale) -> dict[str, Any]:
    """Partial run config of a pretraining run at this scale (a mixture's num_train is per family)."""
    return {
        "data": {"num_train": scale.pretrain_num_train},
        "train": {
            "num_epochs": scale.pretrain_epochs,
            "batch_size": scale.pretrain_batch,
            "learning_rate": scale.pretrain_learning_rate,
        },
    }


def downstream_sizes(scale: Scale) -> dict[str, Any]:
    """The size arguments of `experiments.study.downstream_group` at this scale."""
    return {
        "num_train": scale.num_train,
        "learning_rates": scale.learning_rates,
        "finetune_learning_rates": scale.finetune_learning_rates,
        "epochs": scale.epochs,
        "batch_size": scale.batch_size,
        "min_steps": scale.min_steps,
    }
