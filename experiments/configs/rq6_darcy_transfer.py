"""RQ6: does pre-training on constant-coefficient periodic PDEs transfer to Darcy flow?

Darcy flow -div(a(x) grad u) = 1 on the unit square with u = 0 on the boundary and a piecewise-constant permeability
(a = 12 where a Gaussian random field is >= 0, else 3: Li et al.'s FNO benchmark, `solvers.tasks.Darcy`) differs
from every pre-training task in three ways at once: its coefficient is a field, not one number per sample; its
boundary is Dirichlet, not periodic; its source is constant. The downstream task is learned from N examples from
scratch, fine-tuned from the Poisson model (RQ1's pre-training: e in [1, 5]) and from the mixture model (RQ4's),
and evaluated zero-shot from both. A fine-tuned run's lift takes the field a's row from the pretrained K11 and K22
rows (a I is the diffusion tensor of Darcy's operator, `fno_jax.training.finetune.channel_map`).

Every Darcy run pads the domain (`model.padding`, resolution / 8 cells: Li et al. pad their Darcy FNO the same
way), pretrained or not; the pre-training runs are RQ1's and RQ4's unchanged (periodic, no padding), so a sweep
with `--reuse_from` those sweeps copies them instead of training them again.

    python -m experiments.sweep --config=experiments/configs/rq6_darcy_transfer.py --workdir=runs/rq6 --dry_run
    python -m experiments.sweep --config=experiments/configs/rq6_darcy_transfer.py:cpu --workdir=runs/rq6_cpu \
        --reuse_from=runs/rq1_cpu --reuse_from=runs/rq4_cpu
    python -m experiments.sweep --config=experiments/configs/rq6_darcy_transfer.py:runlocal --workdir=/tmp/rq6
    python -m experiments.report --sweep runs/rq6_cpu

ARG: a scale (runlocal | cpu | gpu_minutes; none = the paper's, see study_scale.py).
"""

import ml_collections

from experiments.configs import study_scale
from experiments.configs.rq4_mixed import EQUAL_STEPS
from experiments.study import downstream_group, new_study, pretrain_entry
from solvers.families import FAMILIES, MIXED, MIXTURE

ARGS = study_scale.args(())
# Domain padding of the Darcy runs, as a fraction of the resolution.
PADDING_FRACTION = 1 / 8
PRETRAINED = ("poisson", MIXED)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    scale, _ = study_scale.parse(arg)
    study = new_study("rq6_darcy_transfer")
    study.description = (
        "Periodic constant-coefficient pre-training -> Darcy flow (field coefficient, u = 0 on the boundary)."
    )
    study_scale.apply_base(study.base, scale)
    study_scale.apply_study(study, scale)
    study.pretrain["poisson"] = pretrain_entry("poisson", **study_scale.pretrain_overrides(scale))
    mixed = study_scale.pretrain_overrides(scale)
    if scale.name in EQUAL_STEPS:
        mixed["train"]["num_epochs"] = scale.pretrain_epochs // len(MIXTURE)
    study.pretrain[MIXED] = pretrain_entry(MIXED, **mixed)
    darcy = FAMILIES["darcy"]
    study.downstream["darcy"] = downstream_group(
        "darcy",
        {darcy.range_field: darcy.default_range},
        pretrained=PRETRAINED,
        model={"padding": max(1, round(scale.resolution * PADDING_FRACTION))},
        **study_scale.downstream_sizes(scale),
    )
    return study
