"""Pre-training on one PDE family (or the mixture), at the paper's scale and with its schedule.

    python -m experiments.main --config=experiments/configs/pretrain.py:poisson --workdir=runs/pretrain_poisson
    python -m experiments.main --config=experiments/configs/pretrain.py:mixed --workdir=runs/pretrain_mixed

ARG: poisson | advection_diffusion | helmholtz | mixed, optionally followed by ",runlocal" for a CPU-sized variant
(32x32, small model, a few hundred steps) that checks the whole path in about a minute, or ",tiny" (16x16, ten
steps: seconds; what the tests run).
"""

from experiments.configs.study_scale import PAPER
from fno_jax.config import default_config
from solvers.families import TASK_NAMES as TASKS


def get_config(arg: str = "poisson"):
    task, _, variant = (arg or "poisson").partition(",")
    if task not in TASKS:
        raise ValueError(f"pretrain.py:{arg}: the PDE must be one of {TASKS}, e.g. pretrain.py:poisson.")
    config = default_config()
    config.task = task
    # The paper's in-distribution ranges (defaults of default_config): e in [1, 5], ratio in [0.2, 1], omega 1..10.
    # The paper's pretraining, from the study scale table: 32,768 samples at batch 128 for 500 epochs (128,000 steps,
    # the last partial batch dropped), validated every epoch, validation and test 4,096 each. The `runlocal` and
    # `tiny` variants below are single runs that tests and examples rely on, not study scales.
    config.data.num_train = PAPER.pretrain_num_train
    config.data.num_val = PAPER.num_val
    config.data.num_test = PAPER.num_test
    config.train.batch_size = PAPER.pretrain_batch
    config.train.learning_rate = PAPER.pretrain_learning_rate
    config.train.num_steps = -1  # the length is num_epochs
    config.train.num_epochs = PAPER.pretrain_epochs
    config.train.eval_every = 0  # every epoch
    if variant == "runlocal":
        config.data.resolution = 32
        config.data.num_train = 256
        config.data.num_val = 64
        config.data.num_test = 64
        config.model.width = 16
        config.model.modes = 8
        config.train.batch_size = 32
        config.train.num_steps = 200
        config.train.eval_every = 50
        config.train.checkpoint_every = 100
        config.train.log_every = 25
    elif variant == "tiny":  # seconds on a CPU: the test suite's end-to-end runs
        config.data.resolution = 16
        config.data.num_train = 32
        config.data.num_val = 16
        config.data.num_test = 16
        config.data.generate_chunk = 16
        config.model.width = 8
        config.model.modes = 4
        config.model.depth = 2
        config.model.fc_dim = 16
        config.train.batch_size = 8
        config.train.eval_batch_size = 16
        config.train.num_steps = 10
        config.train.eval_every = 5
        config.train.checkpoint_every = 5
        config.train.log_every = 5
    elif variant:
        raise ValueError(f"pretrain.py:{arg}: unknown variant {variant!r}; use 'runlocal' or 'tiny'.")
    return config
