"""The study behind `make quickstart`: does pre-training help when downstream data is scarce?

An FNO is pre-trained on Poisson problems with e in [1, 5], then a shifted downstream task, Poisson with e in
[5, 10], is learned from N examples from scratch and by fine-tuning (each with the LR grid; the report keeps the
best-validation LR per point and seed), and evaluated zero-shot. `make quickstart` runs it at a shortened cpu scale
(32 x 32, width 16 / 8 modes, N = 2, 8, 32, 3 seeds; see CHANGES: minutes, not converged runs); with no scale named
it is RQ1's Poisson study at the paper's scale.

    python -m experiments.quickstart --workdir=runs/quickstart          # = make quickstart (ARG cpu)
    python -m experiments.sweep --config=experiments/configs/quickstart.py:cpu --workdir=runs/quickstart --dry_run
    python -m experiments.sweep --config=experiments/configs/quickstart.py:cpu --workdir=runs/quickstart
    python -m experiments.quickstart --workdir=/tmp/qs --config=experiments/configs/quickstart.py:runlocal

ARG: a scale (runlocal | cpu | gpu_minutes; none = the paper's, see study_scale.py).
"""

import ml_collections

from experiments.configs import study_scale
from experiments.study import downstream_group, new_study, pretrain_entry

ARGS = study_scale.args()

# Sizes the quickstart changes per scale: at the cpu scale it fits `make quickstart`'s few minutes, which the
# converged cpu scale (12,800-step pretraining, 5 seeds with a pool each, two 4-rate grids, the length check) does
# not: 2,048 pretraining samples for 20 epochs, N = 2, 8, 32 for 25 epochs (at least 200 steps), one grid
# {1e-4, 1e-3}, 3 seeds on one pool, no length check. Its runs are not converged: it shows the tool end to end, and
# RQ1 at the cpu scale is the evidence (docs/STUDY.md).
CHANGES = {
    "cpu": {
        "pretrain_num_train": 2048,
        "pretrain_epochs": 20,
        "learning_rates": (1e-4, 1e-3),
        "finetune_learning_rates": (),
        "epochs": 25,
        "num_train": (2, 8, 32),
        "max_evals": 10,
        "checkpoint_every": 500,
        "seeds": 3,
        "pretrain_seeds": 1,
        "vary_pool": False,
        "length_check": False,
    }
}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    scale, _ = study_scale.parse(arg, changes=CHANGES)
    study = new_study("quickstart")
    study.description = "Poisson e in [1, 5] -> e in [5, 10]: scratch vs fine-tuned vs zero-shot."
    study_scale.apply_base(study.base, scale)
    study_scale.apply_study(study, scale)
    study.pretrain.poisson = pretrain_entry(
        "poisson", task_ranges={"eigenvalue_range": (1.0, 5.0)}, **study_scale.pretrain_overrides(scale)
    )
    study.downstream.poisson_e5_10 = downstream_group(
        "poisson", {"eigenvalue_range": (5.0, 10.0)}, pretrained=("poisson",), **study_scale.downstream_sizes(scale)
    )
    return study
