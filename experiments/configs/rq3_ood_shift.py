"""RQ3: how does the benefit of pre-training depend on how far the downstream task is out of distribution?

Pre-training (in-distribution) ranges and the downstream shifts, from mild/in-range to far out:

    poisson               e      pretrain [1, 5]    downstream [1, 2.5], [2.5, 7.5], [5, 10], [10, 20]
    advection_diffusion   ratio  pretrain [0.2, 1]  downstream [0.02, 0.2], [1, 2], [2, 5]
    helmholtz             omega  pretrain [1, 10]   downstream [5, 15], [10, 20], [20, 50]

For each shift: scratch vs fine-tuned vs zero-shot over the N ladder (the LR grid at each point). The cpu scale
runs Poisson's in-range [1, 2.5], moderate [5, 10] and far [10, 20] shifts with N = 2, 8, 32.

    python -m experiments.sweep --config=experiments/configs/rq3_ood_shift.py --workdir=runs/rq3 --dry_run
    python -m experiments.sweep --config=experiments/configs/rq3_ood_shift.py --workdir=runs/rq3
    python -m experiments.sweep --config=experiments/configs/rq3_ood_shift.py:helmholtz --workdir=runs/rq3
    python -m experiments.sweep --config=experiments/configs/rq3_ood_shift.py:cpu --workdir=runs/rq3_cpu
    python -m experiments.sweep --config=experiments/configs/rq3_ood_shift.py:runlocal --workdir=/tmp/rq3
    python -m experiments.report --sweep runs/rq3

ARG (comma-separated): a family (default all three, Poisson alone at the cpu scale) and/or a scale (runlocal | cpu |
gpu_minutes; none = the paper's).
"""

import ml_collections

from experiments.configs import study_scale
from experiments.study import downstream_group, new_study, pretrain_entry, shift_label
from solvers.families import FAMILIES, MIXTURE

ARGS = study_scale.args(MIXTURE)
# Sizes this study changes per scale: three shifts at the cpu scale fit its time budget with a shorter ladder.
CHANGES = {"cpu": {"num_train": (2, 8, 32)}}

SHIFTS = {
    "poisson": ((1.0, 2.5), (2.5, 7.5), (5.0, 10.0), (10.0, 20.0)),
    "advection_diffusion": ((0.02, 0.2), (1.0, 2.0), (2.0, 5.0)),
    "helmholtz": ((5, 15), (10, 20), (20, 50)),
}
# Shifts per scale where a scale runs fewer: the cpu scale runs one family, three shifts (in range, moderate, far).
SHIFTS_AT = {"cpu": {"poisson": ((1.0, 2.5), (5.0, 10.0), (10.0, 20.0))}}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    scale, options = study_scale.parse(arg, MIXTURE, changes=CHANGES)
    shifts = SHIFTS_AT.get(scale.name, SHIFTS)
    families = [f for f in MIXTURE if f in options] or list(shifts)

    study = new_study("rq3_ood_shift")
    study.description = "Downstream error vs N under increasing distribution shift."
    study_scale.apply_base(study.base, scale)
    study_scale.apply_study(study, scale)
    for family in families:
        study.pretrain[family] = pretrain_entry(family, **study_scale.pretrain_overrides(scale))
        for bounds in shifts.get(family, SHIFTS[family]):
            ranges = {FAMILIES[family].range_field: bounds}
            # ConfigDict keys cannot hold dots: e1-2.5 -> e1-2p5 in the group (and run) names.
            group = f"{family}_{shift_label(family, ranges)}".replace(".", "p")
            study.downstream[group] = downstream_group(
                family, ranges, pretrained=(family,), **study_scale.downstream_sizes(scale)
            )
    return study
