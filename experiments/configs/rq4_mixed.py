"""RQ4: does pre-training on a mixture of operators transfer as well as pre-training on the same family?

One model is pre-trained on the mixture of all three families (`mixed` task: Poisson e in [1, 5],
advection-diffusion ratio in [0.2, 1], Helmholtz omega in [1, 10]; 7-channel input layout, 32,768 examples in
total), and one per family on that family alone. Each family's shifted downstream task (as in RQ1: Poisson
e in [5, 10], advection-diffusion ratio in [1, 2], Helmholtz omega in [5, 15]) is then learned from scratch,
fine-tuned from the mixed model and from its single-family model, and evaluated zero-shot from both. A run
fine-tuned from the mixed model keeps the 7-channel layout (zeros for coefficients the PDE lacks).

    python -m experiments.sweep --config=experiments/configs/rq4_mixed.py --workdir=runs/rq4
    python -m experiments.sweep --config=experiments/configs/rq4_mixed.py:runlocal --workdir=/tmp/rq4
    python -m experiments.report --sweep runs/rq4

ARG: `runlocal` (CPU-sized) or empty.
"""

import ml_collections

from experiments.configs import study_scale
from experiments.configs.rq1_data_size import DOWNSTREAM, FAMILIES
from experiments.study import downstream_group, new_study, parse_study_arg, pretrain_entry

ARGS = ("", "runlocal")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    options = parse_study_arg(arg, ("runlocal",))
    scale = study_scale.RUNLOCAL if "runlocal" in options else study_scale.PAPER

    study = new_study("rq4_mixed")
    study.description = "Mixed-operator vs single-family pre-training, fine-tuned and zero-shot per family."
    study_scale.apply_base(study.base, scale)
    # base.task_ranges already holds the three in-distribution ranges the mixture draws from.
    study.pretrain.mixed = pretrain_entry("mixed", **study_scale.pretrain_overrides(scale))
    for family in FAMILIES:
        study.pretrain[family] = pretrain_entry(family, **study_scale.pretrain_overrides(scale))
        study.downstream[family] = downstream_group(
            family,
            DOWNSTREAM[family],
            num_train=scale.num_train,
            pretrained=("mixed", family),
            learning_rates=scale.learning_rates,
            epochs=scale.epochs,
            min_steps=scale.min_steps,
            max_steps=scale.max_steps,
            **study_scale.downstream_overrides(scale),
        )
    return study
