"""Throughput of on-device data generation (`solvers.tasks.<Task>.sample`).

    python -m benchmarks.generate --pde poisson --resolution 128 --batch 1024 \
        [--baseline REPO --baseline-python PY [--baseline-samples 256]] [--json]

(also reachable as `python -m benchmarks.throughput generate ...`).  Timing excludes compilation
(ahead-of-time `lower().compile()`), synchronises with `block_until_ready`, and reports the median
over repeats, each with a fresh key.  `--baseline REPO` runs the paper's own generator script for
the same PDE and resolution in separate processes, alternating with this benchmark
(`benchmarks.baseline`); `--baseline-samples` is how many samples each of its runs makes.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import jax

from benchmarks.model_flags import run_main
from solvers import tasks
from solvers.families import FAMILIES, MIXED, MIXTURE, TASK_NAMES


def _task(name: str):
    """The task `name` with its sampler's default (the paper's pretraining) ranges."""
    if name == MIXED:
        return tasks.Mixed(tuple(FAMILIES[family].sampler() for family in MIXTURE))
    return FAMILIES[name].sampler()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the `generate` benchmark."""
    parser.add_argument("--pde", choices=TASK_NAMES, default="poisson")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=10, help="timed batches (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline-samples", type=int, default=256, help="samples per run of the paper's generator")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")


def time_sampling(task, batch: int, resolution: int, seed: int, repeats: int) -> tuple[float, float]:
    """(compile seconds, median seconds per batch) of `task.sample` for `batch` problems at `resolution`, compiled
    once, warmed up on another key, then timed over `repeats` keys."""
    sample = jax.jit(lambda key: task.sample(key, batch, resolution))
    key = jax.random.key(seed)
    start = time.perf_counter()
    compiled = sample.lower(key).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(jax.random.fold_in(key, 10**6)))  # warm-up
    times = []
    for i in range(repeats):
        k = jax.random.fold_in(key, i)
        start = time.perf_counter()
        jax.block_until_ready(compiled(k))
        times.append(time.perf_counter() - start)
    return compile_s, statistics.median(times)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Time generation; returns samples_per_s, step_ms_median, compile_s, device, ...."""
    compile_s, step = time_sampling(_task(args.pde), args.batch, args.resolution, args.seed, args.repeats)
    device = jax.devices()[0]
    result: dict[str, Any] = {
        "benchmark": "generate",
        "pde": args.pde,
        "resolution": args.resolution,
        "batch": args.batch,
        "samples_per_s": args.batch / step,
        "step_ms_median": step * 1e3,
        "compile_s": compile_s,
        "device": f"{device.platform}:{device.device_kind}",
        "num_devices": jax.device_count(),
    }
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        result["peak_bytes"] = int(stats["peak_bytes_in_use"])
    return result


def main(argv: list[str] | None = None) -> int:
    return run_main("generate", argv)


if __name__ == "__main__":
    main()
