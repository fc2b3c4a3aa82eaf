"""RQ1: how does the benefit of pre-training scale with the downstream data size?

Each PDE family is pre-trained on its in-distribution ranges (Poisson e in [1, 5], advection-diffusion ratio in
[0.2, 1], Helmholtz omega in [1, 10]), then a moderately shifted downstream task (Poisson e in [5, 10],
advection-diffusion ratio in [1, 2], Helmholtz omega in [5, 15]) is learned from N downstream examples from
scratch and by fine-tuning, and evaluated zero-shot. Every (mode, N, seed) runs the learning-rate grid; the report
keeps the best-validation LR. At the paper's scale: 32,768 pretraining examples at 128 x 128, FNO width 64 /
32 modes, N = 2^1 .. 2^15, 500 epochs per run, LRs {1e-5, 5e-5, 1e-4, 5e-4, 1e-3}, validation and test 4,096.

    python -m experiments.sweep --config=experiments/configs/rq1_data_size.py:poisson --workdir=runs/rq1 --dry_run
    python -m experiments.sweep --config=experiments/configs/rq1_data_size.py --workdir=runs/rq1
    python -m experiments.sweep --config=experiments/configs/rq1_data_size.py:poisson --workdir=runs/rq1
    python -m experiments.sweep --config=experiments/configs/rq1_data_size.py:poisson,cpu --workdir=runs/rq1_cpu
    python -m experiments.sweep --config=experiments/configs/rq1_data_size.py:poisson,gpu_minutes --workdir=runs/rq1g
    python -m experiments.sweep --config=experiments/configs/rq1_data_size.py:runlocal --workdir=/tmp/rq1
    python -m experiments.report --sweep runs/rq1

ARG (comma-separated): a family (poisson | advection_diffusion | helmholtz; default all three, Poisson alone at the
cpu scale) and/or a scale (runlocal | cpu | gpu_minutes; none = the paper's, see study_scale.py).
"""

import ml_collections

from experiments.configs import study_scale
from experiments.study import downstream_group, new_study, pretrain_entry
from solvers.families import MIXTURE

ARGS = study_scale.args(MIXTURE)

# The downstream (shifted) range per family.
DOWNSTREAM = {
    "poisson": {"eigenvalue_range": (5.0, 10.0)},
    "advection_diffusion": {"ratio_range": (1.0, 2.0)},
    "helmholtz": {"omega_range": (5, 15)},
}
# Families run when none is named: all, except at the cpu scale (one family fits its time budget).
DEFAULT_FAMILIES = {"cpu": ("poisson",)}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    scale, options = study_scale.parse(arg, MIXTURE)
    families = [f for f in MIXTURE if f in options] or list(DEFAULT_FAMILIES.get(scale.name, MIXTURE))

    study = new_study("rq1_data_size")
    study.description = "Downstream error vs downstream data size: scratch, fine-tuned, zero-shot."
    study_scale.apply_base(study.base, scale)
    # Two pretraining seeds at the reduced scales: the intervals then cover which pretrained model a seed starts from.
    study_scale.apply_study(study, scale, pretrain_seeds=2 if scale.name in ("cpu", "gpu_minutes") else None)
    for family in families:
        study.pretrain[family] = pretrain_entry(family, **study_scale.pretrain_overrides(scale))
        study.downstream[family] = downstream_group(
            family, DOWNSTREAM[family], pretrained=(family,), **study_scale.downstream_sizes(scale)
        )
    return study
