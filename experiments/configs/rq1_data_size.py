"""RQ1: how does the benefit of pre-training scale with the downstream data size?

Each PDE family is pre-trained on its in-distribution ranges (Poisson e in [1, 5], advection-diffusion ratio in
[0.2, 1], Helmholtz omega in [1, 10]) with 32,768 examples at 128 x 128 (FNO width 64, 32 modes), then a
moderately shifted downstream task (Poisson e in [5, 10], advection-diffusion ratio in [1, 2], Helmholtz omega in
[5, 15]) is learned from N = 2^1 .. 2^15 examples from scratch and by fine-tuning, and evaluated zero-shot. Every
(mode, N) runs the learning-rate grid; the report keeps the best-validation LR.

    python -m experiments.sweep --config=experiments/configs/rq1_data_size.py --workdir=runs/rq1
    python -m experiments.sweep --config=experiments/configs/rq1_data_size.py:poisson --workdir=runs/rq1
    python -m experiments.sweep --config=experiments/configs/rq1_data_size.py:runlocal --workdir=/tmp/rq1
    python -m experiments.sweep --config=experiments/configs/rq1_data_size.py:poisson,gpu_minutes --workdir=runs/rq1g
    python -m experiments.report --sweep runs/rq1

ARG (comma-separated): a family (poisson | advection_diffusion | helmholtz; default all three) and/or
`runlocal` (CPU-sized: 32 x 32, tiny FNO, a few steps; minutes) or `gpu_minutes` (64 x 64, width 32, N up to 512:
a few minutes on one GPU).
"""

import ml_collections

from experiments.configs import study_scale
from experiments.study import downstream_group, new_study, parse_study_arg, pretrain_entry

FAMILIES = ("poisson", "advection_diffusion", "helmholtz")
ARGS = ("", "runlocal", "gpu_minutes", *FAMILIES, *(f"{f},{v}" for f in FAMILIES for v in ("runlocal", "gpu_minutes")))

# The downstream (shifted) range per family.
DOWNSTREAM = {
    "poisson": {"eigenvalue_range": (5.0, 10.0)},
    "advection_diffusion": {"ratio_range": (1.0, 2.0)},
    "helmholtz": {"omega_range": (5, 15)},
}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    options = parse_study_arg(arg, (*study_scale.SCALES, *FAMILIES))
    scale = study_scale.scale_of(options)
    families = [f for f in FAMILIES if f in options] or list(FAMILIES)

    study = new_study("rq1_data_size")
    study.description = "Downstream error vs downstream data size: scratch, fine-tuned, zero-shot."
    study_scale.apply_base(study.base, scale)
    for family in families:
        study.pretrain[family] = pretrain_entry(family, **study_scale.pretrain_overrides(scale))
        study.downstream[family] = downstream_group(
            family,
            DOWNSTREAM[family],
            num_train=scale.num_train,
            pretrained=(family,),
            learning_rates=scale.learning_rates,
            epochs=scale.epochs,
            min_steps=scale.min_steps,
            max_steps=scale.max_steps,
            **study_scale.downstream_overrides(scale),
        )
    return study
