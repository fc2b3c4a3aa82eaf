"""The two scales every study config comes in: the paper's and a CPU-sized `runlocal` one.

A study config picks a `Scale`, writes its run-level settings into `study.base` (`apply_base`) and uses its
pretraining / downstream sizes for the pretrain entries and downstream groups.
"""

import dataclasses
from typing import Any

import ml_collections


@dataclasses.dataclass(frozen=True)
class Scale:
    """Sizes of one study scale.

    Properties:
      resolution, width, modes, depth, fc_dim: grid and FNO of every run (RQ2 varies width/modes).
      pretrain_num_train, pretrain_steps, pretrain_batch: the pretraining runs.
      num_val, num_test: validation/test split sizes of every run (LR selection uses validation).
      num_train: downstream sizes N.
      learning_rates: downstream LR grid (each LR is run; the report keeps the best-validation one).
      epochs, min_steps, max_steps: downstream steps = clip(epochs * ceil(N / batch), min_steps, max_steps).
      batch_size: downstream global batch (runs use min(batch_size, N)).
      eval_every, checkpoint_every, log_every: step intervals (clipped to a run's length).
    """

    resolution: int
    width: int
    modes: int
    depth: int
    fc_dim: int
    pretrain_num_train: int
    pretrain_steps: int
    pretrain_batch: int
    num_val: int
    num_test: int
    num_train: tuple[int, ...]
    learning_rates: tuple[float, ...]
    epochs: int
    min_steps: int
    max_steps: int
    batch_size: int
    eval_every: int
    checkpoint_every: int
    log_every: int
    generate_chunk: int


# 128 x 128, FNO width 64 / 32 modes (67M parameters), 32,768 pretraining examples for 25k steps of 128;
# downstream N = 2^1 .. 2^15; the largest N gets the pretraining budget (100 epochs capped at 25k steps).
PAPER = Scale(
    resolution=128,
    width=64,
    modes=32,
    depth=4,
    fc_dim=128,
    pretrain_num_train=32768,
    pretrain_steps=25_000,
    pretrain_batch=128,
    num_val=1024,
    num_test=1024,
    num_train=tuple(2**k for k in range(1, 16)),
    learning_rates=(1e-3, 3e-4, 1e-4),
    epochs=100,
    min_steps=1000,
    max_steps=25_000,
    batch_size=128,
    eval_every=500,
    checkpoint_every=1000,
    log_every=100,
    generate_chunk=512,
)

# Tiny and fast: checks that a study wires up end to end on a CPU, says nothing about the science.
RUNLOCAL = Scale(
    resolution=32,
    width=8,
    modes=4,
    depth=4,
    fc_dim=16,
    pretrain_num_train=64,
    pretrain_steps=20,
    pretrain_batch=16,
    num_val=16,
    num_test=16,
    num_train=(2, 8),
    learning_rates=(1e-3,),
    epochs=2,
    min_steps=5,
    max_steps=10,
    batch_size=16,
    eval_every=10,
    checkpoint_every=10,
    log_every=5,
    generate_chunk=64,
)


# A few minutes on one GPU: 64 x 64, FNO width 32 / 16 modes, 8,192 pretraining examples; N = 2 .. 512.
# Shows the shape of a study's curves on an accelerator; the paper's numbers need PAPER.
GPU_MINUTES = Scale(
    resolution=64,
    width=32,
    modes=16,
    depth=4,
    fc_dim=128,
    pretrain_num_train=8192,
    pretrain_steps=2000,
    pretrain_batch=64,
    num_val=256,
    num_test=256,
    num_train=(2, 8, 32, 128, 512),
    learning_rates=(1e-3,),
    epochs=100,
    min_steps=300,
    max_steps=1000,
    batch_size=64,
    eval_every=100,
    checkpoint_every=1000,
    log_every=100,
    generate_chunk=512,
)

SCALES = {"runlocal": RUNLOCAL, "gpu_minutes": GPU_MINUTES}


def scale_of(options: set[str]) -> Scale:
    """The scale named among a study config's ARG options (`runlocal`, `gpu_minutes`), else the paper's."""
    named = [SCALES[o] for o in options if o in SCALES]
    if len(named) > 1:
        raise ValueError(f"choose one scale of {sorted(SCALES)}, got {sorted(o for o in options if o in SCALES)}.")
    return named[0] if named else PAPER


def apply_base(base: ml_collections.ConfigDict, scale: Scale) -> None:
    """Write the run-level settings of `scale` into a study's base run config."""
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
    base.train.eval_every = scale.eval_every
    base.train.checkpoint_every = scale.checkpoint_every
    base.train.log_every = scale.log_every


def pretrain_overrides(scale: Scale, **extra: Any) -> dict[str, Any]:
    """Partial run config of a pretraining run at this scale."""
    overrides = {
        "data": {"num_train": scale.pretrain_num_train},
        "train": {"num_steps": scale.pretrain_steps, "batch_size": scale.pretrain_batch},
    }
    for key, value in extra.items():
        overrides.setdefault(key, {}).update(value)
    return overrides


def downstream_overrides(scale: Scale) -> dict[str, Any]:
    """Partial run config shared by the downstream runs at this scale (batch size; N and steps come per run)."""
    return {"train": {"batch_size": scale.batch_size}}
