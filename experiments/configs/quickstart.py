"""The CPU-sized study behind `make quickstart`: does pre-training help when downstream data is scarce?

An FNO (width 16, 8 modes, 4 layers) is pre-trained on Poisson problems with e in [1, 5] at 32 x 32, then a
shifted downstream task, Poisson with e in [5, 10], is learned from N = 8, 32, 128, 512 examples from scratch
and by fine-tuning (each with the small LR grid; the report keeps the best-validation LR), and evaluated
zero-shot. Sized for about 10 minutes on 2 CPU cores; every size below is a named field to tune.

    python -m experiments.quickstart --workdir=runs/quickstart          # = make quickstart
    python -m experiments.sweep --config=experiments/configs/quickstart.py --workdir=runs/quickstart
    python -m experiments.quickstart --workdir=/tmp/qs --config=experiments/configs/quickstart.py:runlocal

ARG: `runlocal` (seconds: a few steps, for end-to-end tests) or empty.
"""

import ml_collections

from experiments.study import downstream_group, new_study, parse_study_arg, pretrain_entry

ARGS = ("", "runlocal")

# Grid and model.
RESOLUTION = 32
WIDTH = 16
MODES = 8
DEPTH = 4
FC_DIM = 64
# Pre-training on Poisson e in [1, 5].
PRETRAIN_NUM_TRAIN = 2048
PRETRAIN_STEPS = 1500
PRETRAIN_BATCH = 32
PRETRAIN_LR = 2e-3
# Downstream: Poisson e in [5, 10].
DOWNSTREAM_RANGE = (5.0, 10.0)
DOWNSTREAM_NUM_TRAIN = (8, 32, 128, 512)
DOWNSTREAM_LRS = (1e-3, 3e-3)
DOWNSTREAM_BATCH = 32
# Downstream steps = clip(EPOCHS * ceil(N / batch), MIN_STEPS, MAX_STEPS).
DOWNSTREAM_EPOCHS = 25
DOWNSTREAM_MIN_STEPS = 150
DOWNSTREAM_MAX_STEPS = 400
NUM_VAL = 64
NUM_TEST = 128


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    runlocal = "runlocal" in parse_study_arg(arg, ("runlocal",))
    study = new_study("quickstart")
    study.description = "Poisson e in [1, 5] -> e in [5, 10]: scratch vs fine-tuned vs zero-shot (CPU-sized)."
    base = study.base
    base.data.resolution = 16 if runlocal else RESOLUTION
    base.data.num_val = 8 if runlocal else NUM_VAL
    base.data.num_test = 8 if runlocal else NUM_TEST
    base.data.generate_chunk = 256
    base.model.width = 4 if runlocal else WIDTH
    base.model.modes = 2 if runlocal else MODES
    base.model.depth = 2 if runlocal else DEPTH
    base.model.fc_dim = 8 if runlocal else FC_DIM
    base.train.eval_batch_size = base.data.num_val
    base.train.eval_every = 50
    base.train.checkpoint_every = 250
    base.train.log_every = 50

    study.pretrain.poisson = pretrain_entry(
        "poisson",
        task_ranges={"eigenvalue_range": (1.0, 5.0)},
        data={"num_train": 32 if runlocal else PRETRAIN_NUM_TRAIN},
        train={
            "num_steps": 4 if runlocal else PRETRAIN_STEPS,
            "batch_size": 8 if runlocal else PRETRAIN_BATCH,
            "learning_rate": PRETRAIN_LR,
        },
    )
    study.downstream.poisson_e5_10 = downstream_group(
        "poisson",
        {"eigenvalue_range": DOWNSTREAM_RANGE},
        num_train=(2, 4) if runlocal else DOWNSTREAM_NUM_TRAIN,
        pretrained=("poisson",),
        learning_rates=DOWNSTREAM_LRS[:1] if runlocal else DOWNSTREAM_LRS,
        epochs=DOWNSTREAM_EPOCHS,
        min_steps=2 if runlocal else DOWNSTREAM_MIN_STEPS,
        max_steps=3 if runlocal else DOWNSTREAM_MAX_STEPS,
        train={"batch_size": DOWNSTREAM_BATCH},
    )
    return study
