"""RQ2: how does the benefit of pre-training change with the model size?

A ladder of FNOs from ~69K to ~269M parameters (width x modes, each step x4 parameters; the count is
2 * depth * width^2 * modes^2 * 2 spectral + lift/pointwise/fc, see `experiments.study.fno_num_params`):

    width x modes   16x4    16x8     32x8    32x16   64x16    64x32    128x32
    parameters      69,009  265,617  1.06M   4.20M   16.8M    67.1M    268.5M   (Poisson, 4 input channels)

Each model is pre-trained on Poisson e in [1, 5] (32,768 examples, 128 x 128) and then trained from scratch /
fine-tuned / evaluated zero-shot on Poisson e in [5, 10] for N = 2, 8, 32, ..., 32768 (every other power of 2,
the LR grid at each point). Families other than Poisson via ARG.

    python -m experiments.sweep --config=experiments/configs/rq2_model_size.py --workdir=runs/rq2
    python -m experiments.sweep --config=experiments/configs/rq2_model_size.py:runlocal --workdir=/tmp/rq2
    python -m experiments.report --sweep runs/rq2

ARG (comma-separated): a family (poisson | advection_diffusion | helmholtz; default poisson) and/or `runlocal`.
"""

import ml_collections

from experiments.configs import study_scale
from experiments.configs.rq1_data_size import DOWNSTREAM, FAMILIES
from experiments.study import downstream_group, new_study, parse_study_arg, pretrain_entry

ARGS = ("", "runlocal", *FAMILIES, *(f"{f},runlocal" for f in FAMILIES))

# (width, modes) ladder, x4 parameters per step (128 x 128 grid allows modes <= 64).
MODELS = ((16, 4), (16, 8), (32, 8), (32, 16), (64, 16), (64, 32), (128, 32))
# Downstream sizes: every other power of two keeps the 7-model sweep affordable.
NUM_TRAIN = tuple(2**k for k in range(1, 16, 2))
# runlocal: two tiny models on a 32 x 32 grid (modes <= 16).
RUNLOCAL_MODELS = ((4, 2), (8, 4))


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    options = parse_study_arg(arg, ("runlocal", *FAMILIES))
    runlocal = "runlocal" in options
    scale = study_scale.RUNLOCAL if runlocal else study_scale.PAPER
    families = [f for f in FAMILIES if f in options] or ["poisson"]

    study = new_study("rq2_model_size")
    study.description = "Downstream error vs model size (and N): scratch, fine-tuned, zero-shot."
    study_scale.apply_base(study.base, scale)
    study.models = RUNLOCAL_MODELS if runlocal else MODELS
    for family in families:
        study.pretrain[family] = pretrain_entry(family, **study_scale.pretrain_overrides(scale))
        study.downstream[family] = downstream_group(
            family,
            DOWNSTREAM[family],
            num_train=scale.num_train if runlocal else NUM_TRAIN,
            pretrained=(family,),
            learning_rates=scale.learning_rates,
            epochs=scale.epochs,
            min_steps=scale.min_steps,
            max_steps=scale.max_steps,
            **study_scale.downstream_overrides(scale),
        )
    return study
