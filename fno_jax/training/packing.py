"""Which runs train as one program, and in how many parts a group fits in device memory.

K runs whose configs agree on everything but `seed` and `train.learning_rate` (`pack_key`) share one pool, one
validation and test split and one compiled step (`fno_jax.training.trainer`): params and optimizer states carry a
leading run axis and the step is `jax.vmap`ped over it (each run's rate is a leaf of its optimizer state, see
`fno_jax.training.optim`). A group that would not fit in device memory, by XLA's compiled memory analysis of one run's
program, is trained in several parts (`plan_parts`).

Packed runs' final params equal those of one-at-a-time runs to float32 rounding, not bitwise: a vmapped matmul may
sum in another order. tests/test_group.py bounds the difference. A group of one carries no run axis and is bitwise
the run trained alone.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from fno_jax.config import layout_of
from fno_jax.model import channels, from_config
from fno_jax.model.normalization import ScaleArrays
from fno_jax.training import steps
from fno_jax.training.optim import optimizer_from_config

__all__ = ["MEMORY_FRACTION", "group_by_pack_key", "pack_key", "packed_step_bytes", "plan_parts"]

# Fraction of a device's memory a packed group may plan to use (the rest: runtime, fragmentation, other buffers).
MEMORY_FRACTION = 0.8


def pack_key(config: ml_collections.ConfigDict) -> str:
    """Runs with equal keys can train as one program: everything but `seed`, `train.learning_rate`,
    `data.pool_seed`, and the data or hybrid loss with its weight agrees (each run keeps its own init, order,
    training pool, statistics and loss weights; a residual-only loss counts its epochs in unlabelled inputs, so it
    packs only with its kind).

    A run whose data splits follow its seed (`data.seed` = -1) keeps its seed in the key: runs with other validation
    and test sets cannot share one.
    """
    flat = json.loads(config.to_json())
    flat["train"].pop("learning_rate")
    flat["data"].pop("pool_seed")
    if flat["train"]["loss"] != "residual":
        flat["train"].pop("loss")
        flat["train"].pop("residual_weight")
    if flat["data"]["seed"] >= 0:
        flat.pop("seed")
    return json.dumps(flat, sort_keys=True)


def group_by_pack_key(configs: Sequence[ml_collections.ConfigDict]) -> list[list[int]]:
    """Indices of `configs` grouped by `pack_key`, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(pack_key(config), []).append(i)
    return list(groups.values())


def plan_parts(configs: Sequence[ml_collections.ConfigDict], memory_limit_bytes: int | None) -> list[list[int]]:
    """The group's runs in parts that fit the memory limit (default: the device's own limit where the backend
    reports one; one part when no limit is known)."""
    k = len(configs)
    limit = memory_limit_bytes if memory_limit_bytes is not None else _device_memory_limit()
    if limit is None or k == 1:
        return [list(range(k))]
    per_run = packed_step_bytes(configs[0])
    most = max(1, min(k, int(MEMORY_FRACTION * limit // per_run)))
    if most < k:
        logging.info("packing %d runs in parts of %d: one run's step needs %.3g GB of %.3g GB", k, most, per_run / 1e9,
                     limit / 1e9)  # fmt: skip
    return [list(range(i, min(i + most, k))) for i in range(0, k, most)]


def _device_memory_limit() -> int | None:
    stats = jax.local_devices()[0].memory_stats()
    return int(stats["bytes_limit"]) if stats and "bytes_limit" in stats else None


def packed_step_bytes(config: ml_collections.ConfigDict) -> int:
    """Bytes one run adds to a packed group's train step (arguments, outputs not aliased, temporaries; its
    device-resident training set), by XLA's memory analysis of the compiled program of one packed run, traced with
    abstract inputs only."""
    layout = layout_of(config)
    n, c = config.data.resolution, channels.num_channels(layout)
    f = len(channels.field_channels(layout))
    model = from_config(config)
    dummy = jax.ShapeDtypeStruct((1, n, n, c), jnp.float32)
    params = jax.eval_shape(lambda k: model.init(k, jnp.zeros(dummy.shape, dummy.dtype))["params"], jax.random.key(0))
    optimizer = optimizer_from_config(config, params, num_steps=1, steps_per_decay=1)  # its state, not its schedule
    state = {"params": params, "opt_state": jax.eval_shape(optimizer.init, params), "step": jnp.int32(0)}
    stacked = lambda x: jax.ShapeDtypeStruct((1, *np.shape(x)), jnp.result_type(x))
    state = jax.tree_util.tree_map(stacked, state)
    b, num = config.train.batch_size, config.data.num_train
    batch = {
        "source": jax.ShapeDtypeStruct((1, b, n, n), jnp.float32),
        "coeffs": jax.ShapeDtypeStruct((1, b, c - 1 - f), jnp.float32),
        "solution": jax.ShapeDtypeStruct((1, b, n, n), jnp.float32),
    }
    if f:
        batch["fields"] = jax.ShapeDtypeStruct((1, b, n, n, f), jnp.float32)
    norm = jax.tree_util.tree_map(stacked, ScaleArrays(np.float32(1), np.ones(c - 1, np.float32)))
    one = functools.partial(steps.train_step, model=model, optimizer=optimizer, length=1.0)
    compiled = jax.jit(jax.vmap(one), donate_argnums=(0,)).lower(state, batch, norm).compile()
    memory = compiled.memory_analysis()
    data = num * ((2 + f) * n * n + c - 1 - f) * 4 if config.data.source != "stream" else 0
    total = memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
    return int(total - memory.alias_size_in_bytes + data)
