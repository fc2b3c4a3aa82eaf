"""Fine-tuning a pretrained FNO on a downstream task (all weights train, fresh optimizer and schedule).

    python -m experiments.main --config=experiments/configs/finetune.py:poisson \
        --config.init_from=runs/pretrain_poisson --config.task_ranges.eigenvalue_range="(5.0, 10.0)" \
        --config.data.num_train=64 --workdir=runs/finetune_poisson_5_10_n64

Zero-shot evaluation of the pretrained model: add --config.train.num_steps=0.
ARG: the downstream PDE, optionally ",runlocal" for the CPU-sized variant matching pretrain.py:TASK,runlocal.
"""

from experiments.configs import pretrain


def get_config(arg: str = "poisson"):
    config = pretrain.get_config(arg)
    # Downstream data are few: the paper's batch min(N, 128) and 500 epochs of floor(N / batch) steps, validated
    # every epoch (the small variants keep their short runs).
    small = "runlocal" in (arg or "") or "tiny" in (arg or "")
    config.data.num_train = 64 if not small else min(config.data.num_train, 32)
    config.train.batch_size = min(config.train.batch_size, config.data.num_train)
    steps_per_epoch = config.data.num_train // config.train.batch_size
    config.train.num_steps = 500 * steps_per_epoch if not small else min(config.train.num_steps, 100)
    config.train.eval_every = steps_per_epoch if not small else min(config.train.eval_every, config.train.num_steps)
    config.train.checkpoint_every = min(config.train.checkpoint_every, config.train.num_steps)
    config.require_init_from = True  # set --config.init_from=PRETRAINED_WORKDIR
    return config
