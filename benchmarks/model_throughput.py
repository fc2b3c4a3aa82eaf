"""Inference throughput of the FNO forward pass (and, optionally, of the paper's PyTorch model in its own process).

    python -m benchmarks.model_throughput --resolution 128 --batch 32 --width 16 --modes 8 \
        [--depth 4] [--fc-dim 128] [--channels 4] [--dtype float32|bfloat16] [--steps 20] \
        [--baseline REPO --baseline-python PY] [--json]

(also reached as ``python -m benchmarks.throughput infer ...``). The forward pass is jitted; the
first call (trace + compile + one run) is reported as ``compile_s`` and excluded from the timing.
Each timed step ends in ``block_until_ready``; ``step_ms_median`` is the median over ``--steps``.
With ``--baseline REPO`` the paper's own PyTorch model (forward under ``torch.no_grad``) is timed in
separate processes, alternating with this benchmark: `benchmarks.baseline`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.model_flags import DTYPES, add_model_arguments, model_impl, peak_bytes, run_main, time_calls
from fno_jax.model import FNO

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the inference-benchmark flags to ``parser`` (flags it already has are kept)."""
    add_model_arguments(parser, per="forward pass")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Time the jitted FNO forward pass; return the measurements as a JSON-serialisable dict."""
    for name in ("resolution", "batch", "width", "modes", "depth", "fc_dim", "channels", "steps"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}.")
    if args.modes > args.resolution // 2:
        raise ValueError(
            f"--modes {args.modes} is too many for --resolution {args.resolution}; "
            f"use --modes <= {args.resolution // 2}."
        )
    dtype = DTYPES[args.dtype]
    model = FNO(
        width=args.width,
        modes=args.modes,
        depth=args.depth,
        fc_dim=args.fc_dim,
        dtype=dtype,
        spectral_impl=args.spectral_impl,
        **model_impl(args),
    )
    rng = np.random.default_rng(args.seed)
    x_host = rng.normal(size=(args.batch, args.resolution, args.resolution, args.channels))
    x_host = x_host.astype(np.float32)
    device = jax.devices()[0]
    x = jax.device_put(jnp.asarray(x_host), device)
    variables = jax.jit(model.init)(jax.random.key(args.seed), x)
    forward = jax.jit(model.apply)

    start = time.perf_counter()
    forward(variables, x).block_until_ready()
    compile_s = time.perf_counter() - start

    times = time_calls(lambda: forward(variables, x).block_until_ready(), args.steps, args.warmup)
    step_s = statistics.median(times)
    num_params = sum(leaf.size for leaf in jax.tree.leaves(variables))
    result: dict[str, Any] = {
        "benchmark": "infer",
        "resolution": args.resolution,
        "batch": args.batch,
        "width": args.width,
        "modes": args.modes,
        "depth": args.depth,
        "fc_dim": args.fc_dim,
        "channels": args.channels,
        "dtype": args.dtype,
        "spectral_impl": args.spectral_impl,
        **model_impl(args),
        "num_params": int(num_params),
        "steps": args.steps,
        "compile_s": compile_s,
        "step_ms_median": 1e3 * step_s,
        "step_ms_min": 1e3 * min(times),
        "samples_per_s": args.batch / step_s,
        "device": f"{device.platform}:{device.device_kind}",
        "num_devices": jax.device_count(),
        "jax_version": jax.__version__,
        "peak_bytes": peak_bytes(device),
    }
    return result


def main(argv: list[str] | None = None) -> int:
    return run_main("infer", argv)


if __name__ == "__main__":
    main()
