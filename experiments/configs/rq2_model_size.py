"""RQ2: how does the benefit of pre-training change with the model size?

A ladder of FNOs, each step x4 parameters, with the paper's head width fc_dim = 2 x width (config/operators_*.yaml:
fc_dim = embed_cut * fc_cut, fc_cut = 2). Parameters (Poisson, 4 input channels; see
`experiments.study.fno_num_params`):

    width x modes   16x4    16x8     32x8    32x16   64x16    64x32    128x32
    parameters      67,281  263,889  1.06M   4.20M   16.8M    67.1M    268.5M

Each model is pre-trained on Poisson e in [1, 5] and then trained from scratch / fine-tuned / evaluated zero-shot on
Poisson e in [5, 10] over the N ladder (every other power of 2 at the paper's scale: 2, 8, ..., 32,768), the LR grid
at each point. The cpu scale climbs (8, 4), (8, 8), (16, 8) with N = 2, 8, 32. Families other than Poisson via ARG.

    python -m experiments.sweep --config=experiments/configs/rq2_model_size.py --workdir=runs/rq2 --dry_run
    python -m experiments.sweep --config=experiments/configs/rq2_model_size.py --workdir=runs/rq2
    python -m experiments.sweep --config=experiments/configs/rq2_model_size.py:cpu --workdir=runs/rq2_cpu
    python -m experiments.sweep --config=experiments/configs/rq2_model_size.py:runlocal --workdir=/tmp/rq2
    python -m experiments.report --sweep runs/rq2

ARG (comma-separated): a family (poisson | advection_diffusion | helmholtz; default poisson) and/or a scale
(runlocal | cpu | gpu_minutes; none = the paper's).
"""

import ml_collections

from experiments.configs import study_scale
from experiments.configs.rq1_data_size import DOWNSTREAM
from experiments.study import downstream_group, new_study, pretrain_entry
from solvers.families import MIXTURE

ARGS = study_scale.args(MIXTURE)

# Sizes this study changes per scale: every other power of two keeps the 7-model paper sweep affordable.
CHANGES = {
    "": {"num_train": tuple(2**k for k in range(1, 16, 2))},
    "cpu": {"num_train": (2, 8, 32)},
}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    scale, options = study_scale.parse(arg, MIXTURE, changes=CHANGES)
    families = [f for f in MIXTURE if f in options] or ["poisson"]

    study = new_study("rq2_model_size")
    study.description = "Downstream error vs model size (and N): scratch, fine-tuned, zero-shot."
    study_scale.apply_base(study.base, scale)
    study_scale.apply_study(study, scale)
    study.models = scale.models
    for family in families:
        study.pretrain[family] = pretrain_entry(family, **study_scale.pretrain_overrides(scale))
        study.downstream[family] = downstream_group(
            family, DOWNSTREAM[family], pretrained=(family,), **study_scale.downstream_sizes(scale)
        )
    return study
