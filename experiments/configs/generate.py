"""Write a dataset once: the train/val/test splits of a run, stored as a tensorstore zarr dataset.

    python -m experiments.main --config=experiments/configs/generate.py:poisson --workdir=DATASET_DIR
    python -m experiments.main --config=experiments/configs/pretrain.py:poisson --workdir=runs/p \
        --config.data.source=DATASET_DIR

The stored splits are exactly those a run with data.source="generate" and the same seed, task, task_ranges,
data.resolution, data.length and data.generate_chunk makes in memory, so the two commands above train the same
model as pretrain.py:poisson alone. Rerunning the generate command after an interruption finishes the dataset.

ARG: poisson | advection_diffusion | helmholtz | mixed, optionally followed by ",runlocal" (the data of
pretrain.py:TASK,runlocal: 32x32, 256/64/64 samples) or ",tiny" (the data of pretrain.py:TASK,tiny: 16x16, 32/16/16).
"""

import ml_collections

from experiments.configs import pretrain
from solvers.families import TASK_NAMES as TASKS


def get_config(arg: str = "poisson") -> ml_collections.ConfigDict:
    task, _, variant = (arg or "poisson").partition(",")
    if task not in TASKS:
        raise ValueError(f"generate.py:{arg}: the PDE must be one of {TASKS}, e.g. generate.py:poisson.")
    if variant not in ("", "runlocal", "tiny"):
        raise ValueError(f"generate.py:{arg}: unknown variant {variant!r}; use 'runlocal' or 'tiny'.")
    # The training run whose data this stores: its seed, ranges and split sizes, so the two cannot drift apart.
    run = pretrain.get_config(arg)

    config = ml_collections.ConfigDict()
    # experiments/main.py runs fno_jax.data.build.generate_dataset(config, workdir) for this job.
    config.job = "generate"
    # Seeds the splits exactly as in a training run (each split from fold_in(seed, split)).
    config.seed = run.seed
    config.task = task
    # Coefficient ranges (same keys and defaults as a training config): the paper's pre-training ranges.
    config.task_ranges = ml_collections.ConfigDict(run.task_ranges.to_dict())

    config.data = ml_collections.ConfigDict()
    config.data.resolution = run.data.resolution  # grid points per side
    config.data.length = run.data.length  # domain [0, length)^2
    config.data.num_train = run.data.num_train  # the stored train split: a run's train pool
    config.data.num_val = run.data.num_val
    config.data.num_test = run.data.num_test
    # Samples per device call; part of what the sample values are: keep it equal to the training config's.
    config.data.generate_chunk = run.data.generate_chunk

    config.dataset = ml_collections.ConfigDict()
    # Samples per stored zarr chunk: storage, read and resume granularity only (values do not depend on it).
    config.dataset.chunk = 8 if variant == "tiny" else 64
    return config
