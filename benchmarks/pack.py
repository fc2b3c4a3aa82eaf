"""K small runs one after another and the same K packed into one program (`fno_jax.training.packing`), in one process.

    python -m benchmarks.throughput pack --runs 6 --num-train 8 --steps 50 --resolution 32 --width 16 --modes 8 --json

Each run is a full `train_and_evaluate` on generated Poisson data (data, init, training, evaluation, checkpoints,
summary), from scratch; the runs differ in seed (init, data order, subset of one shared pool) and alternate between
two learning rates. Both ways run in this process, sequential first, each into its own temporary workdirs; the
compilation cache is off so neither reuses the other's programs. Reported: `sequential_s`, `packed_s`, their ratio,
and `max_rel_diff`, the largest over runs of ||p_packed - p_sequential|| / ||p_sequential|| of the final params.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import jax
import numpy as np

from fno_jax import checkpoint, default_config
from fno_jax.train import train_and_evaluate, train_and_evaluate_packed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=6, help="runs K")
    parser.add_argument("--num-train", type=int, default=8, help="training samples N of each run")
    parser.add_argument("--steps", type=int, default=50, help="training steps of each run")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--modes", type=int, default=8)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=0, help="batch size (0: min(N, 32))")
    parser.add_argument("--dir", default=None, help="where the workdirs go (default: a temporary directory)")


def configs(args: argparse.Namespace) -> list:
    """The K run configs: a shared data seed, seeds 0..K-1, learning rates alternating 1e-3 and 5e-4."""
    out = []
    for k in range(args.runs):
        c = default_config()
        c.seed, c.data.seed = k, 0
        c.data.resolution, c.data.num_train, c.data.num_val, c.data.num_test = args.resolution, args.num_train, 64, 64
        c.data.num_train_pool = 4 * args.num_train
        c.model.width, c.model.modes, c.model.depth, c.model.fc_dim = args.width, args.modes, args.depth, 2 * args.width
        c.train.batch_size = args.batch or min(args.num_train, 32)
        c.train.eval_batch_size = 64
        c.train.num_steps = args.steps
        c.train.learning_rate = (1e-3, 5e-4)[k % 2]
        c.train.eval_every = c.train.checkpoint_every = c.train.log_every = max(args.steps // 5, 1)
        out.append(c)
    return out


def _relative_difference(a, b) -> float:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    num = sum(float(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2)) for x, y in zip(la, lb))
    return (num / sum(float(np.sum(np.asarray(y, np.float64) ** 2)) for y in lb)) ** 0.5


def run(args: argparse.Namespace) -> dict[str, Any]:
    jax.config.update("jax_enable_compilation_cache", False)
    runs = configs(args)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        t0 = time.perf_counter()
        for k, c in enumerate(runs):
            train_and_evaluate(c, f"{tmp}/sequential/{k}")
        sequential_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        train_and_evaluate_packed(runs, [f"{tmp}/packed/{k}" for k in range(len(runs))])
        packed_s = time.perf_counter() - t0
        diffs = [
            _relative_difference(
                checkpoint.load_params(f"{tmp}/packed/{k}"), checkpoint.load_params(f"{tmp}/sequential/{k}")
            )
            for k in range(len(runs))
        ]
    steps_total = args.runs * args.steps
    return {
        "runs": args.runs,
        "sequential_s": sequential_s,
        "packed_s": packed_s,
        "packed_over_sequential": packed_s / sequential_s,
        "max_rel_diff": max(diffs),
        "samples_per_s": steps_total * runs[0].train.batch_size / packed_s,
        "step_ms_median": None,
        "compile_s": None,
        "device": jax.devices()[0].device_kind,
    }
