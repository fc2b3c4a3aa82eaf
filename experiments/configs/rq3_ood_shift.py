"""RQ3: how does the benefit of pre-training depend on how far the downstream task is out of distribution?

Pre-training (in-distribution) ranges and the downstream shifts, from mild/in-range to far out:

    poisson               e      pretrain [1, 5]    downstream [1, 2.5], [2.5, 7.5], [5, 10], [10, 20]
    advection_diffusion   ratio  pretrain [0.2, 1]  downstream [0.02, 0.2], [1, 2], [2, 5]
    helmholtz             omega  pretrain [1, 10]   downstream [5, 15], [10, 20], [20, 50]

For each shift: scratch vs fine-tuned vs zero-shot over N = 2^1 .. 2^15 (the LR grid at each point), at the
paper's scale (128 x 128, width 64, 32 modes, 32,768 pretraining examples).

    python -m experiments.sweep --config=experiments/configs/rq3_ood_shift.py --workdir=runs/rq3
    python -m experiments.sweep --config=experiments/configs/rq3_ood_shift.py:helmholtz --workdir=runs/rq3
    python -m experiments.sweep --config=experiments/configs/rq3_ood_shift.py:runlocal --workdir=/tmp/rq3
    python -m experiments.report --sweep runs/rq3

ARG (comma-separated): a family (default all three) and/or `runlocal`.
"""

import ml_collections

from experiments.configs import study_scale
from experiments.configs.rq1_data_size import FAMILIES
from experiments.study import (
    RANGE_FIELD,
    downstream_group,
    new_study,
    parse_study_arg,
    pretrain_entry,
    shift_label,
)

ARGS = ("", "runlocal", *FAMILIES, *(f"{f},runlocal" for f in FAMILIES))

SHIFTS = {
    "poisson": ((1.0, 2.5), (2.5, 7.5), (5.0, 10.0), (10.0, 20.0)),
    "advection_diffusion": ((0.02, 0.2), (1.0, 2.0), (2.0, 5.0)),
    "helmholtz": ((5, 15), (10, 20), (20, 50)),
}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    options = parse_study_arg(arg, ("runlocal", *FAMILIES))
    scale = study_scale.RUNLOCAL if "runlocal" in options else study_scale.PAPER
    families = [f for f in FAMILIES if f in options] or list(FAMILIES)

    study = new_study("rq3_ood_shift")
    study.description = "Downstream error vs N under increasing distribution shift."
    study_scale.apply_base(study.base, scale)
    for family in families:
        study.pretrain[family] = pretrain_entry(family, **study_scale.pretrain_overrides(scale))
        for bounds in SHIFTS[family]:
            ranges = {RANGE_FIELD[family]: bounds}
            # ConfigDict keys cannot hold dots: e1-2.5 -> e1-2p5 in the group (and run) names.
            group = f"{family}_{shift_label(family, ranges)}".replace(".", "p")
            study.downstream[group] = downstream_group(
                family,
                ranges,
                num_train=scale.num_train,
                pretrained=(family,),
                learning_rates=scale.learning_rates,
                epochs=scale.epochs,
                min_steps=scale.min_steps,
                max_steps=scale.max_steps,
                **study_scale.downstream_overrides(scale),
            )
    return study
