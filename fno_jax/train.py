"""Training entry points: one run, or K runs that differ only in seed and learning rate as one program.

    fno_jax.train.train_and_evaluate(config, workdir)            # one run: its summary
    fno_jax.train.train_and_evaluate_packed(configs, workdirs)   # K runs (`fno_jax.training.packing.pack_key`)

Both are the same training path (`fno_jax.training.trainer`), one run being a group of one: validate -> open the
workdirs -> data -> init or transfer -> restore -> loop -> final evaluation. `experiments/main.py` is a thin CLI
around the first, the sweep uses the second. Running the same call again on the same workdirs resumes from the newest
checkpoint every run can restore and ends with the parameters of an uninterrupted run. On SIGTERM or SIGINT during
training the runs finish their step, save a checkpoint of it and raise `Preempted` (`fno_jax.runtime.preemption`;
its `exit_code` is 143 or 130).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ml_collections

from fno_jax.config import ConfigError, matmul_precision, validate_config
from fno_jax.runtime.preemption import Preempted
from fno_jax.training.packing import pack_key, plan_parts
from fno_jax.training.trainer import NonFiniteError, train_group

__all__ = ["NonFiniteError", "Preempted", "train_and_evaluate", "train_and_evaluate_packed"]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Train (or, with num_steps=0 and init_from, only evaluate) one run in `workdir`; returns its summary."""
    validate_config(config)
    with matmul_precision(config):
        return train_group([config], [workdir])[0]


def train_and_evaluate_packed(
    configs: Sequence[ml_collections.ConfigDict],
    workdirs: Sequence[str],
    *,
    memory_limit_bytes: int | None = None,
) -> list[dict[str, Any]]:
    """Train K runs that share a `pack_key` as one program; returns their summaries, in order.

    `memory_limit_bytes` (default: the device's own limit where the backend reports one) bounds the memory a part
    may plan to use; a group over it is split into parts that fit, trained one after another.
    """
    if len(configs) != len(workdirs) or not configs:
        raise ValueError(f"give one workdir per config; got {len(configs)} configs and {len(workdirs)} workdirs.")
    for config in configs:
        validate_config(config)
    if len({pack_key(c) for c in configs}) > 1:
        raise ConfigError(
            "packed runs must differ only in seed, train.learning_rate and data.pool_seed (and share their validation "
            "and test data: data.seed >= 0); group them with fno_jax.training.packing.group_by_pack_key."
        )
    summaries: list[dict[str, Any]] = []
    with matmul_precision(configs[0]):
        for part in plan_parts(configs, memory_limit_bytes):
            summaries += train_group([configs[i] for i in part], [workdirs[i] for i in part])
    return summaries
