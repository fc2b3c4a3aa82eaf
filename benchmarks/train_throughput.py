"""Training throughput of the real FNO train step (and, optionally, of the paper's PyTorch model in its own process).

    python -m benchmarks.train_throughput --resolution 128 --batch 32 --width 16 --modes 8 \
        [--depth 4] [--fc-dim 128] [--channels 4] [--dtype float32|bfloat16] [--spectral-impl dft|fft] \
        [--remat] [--layer-impl auto|fused|autodiff] [--head-tile N] [--steps 20] [--compile-only] \
        [--baseline REPO --baseline-python PY] [--json]

(also reached as ``python -m benchmarks.throughput train ...``). The step timed is
`fno_jax.training.steps.train_step` (normalization, channel assembly, forward, sum-of-squares loss, backward,
Adam, the finite-update guard) under ``jax.jit(..., donate_argnums=0)``, on a fixed random batch
already on the device. The first call (trace + compile + one step) is ``compile_s``; each timed step
ends in ``block_until_ready`` on the new state and metrics; ``step_ms_median`` is the median.

XLA's compiled memory analysis of the step goes into the result where the backend reports it:
``compiled_temp_bytes`` (scratch of one step, the activations kept for the backward pass included),
``compiled_argument_bytes``, ``compiled_output_bytes`` and ``compiled_alias_bytes`` (the donated
state, counted in arguments and outputs alike). ``--compile-only`` lowers and compiles the step on
an abstract state without running it, so the memory of the paper config can be read on a machine
too small to run it; that result has no timings.

With ``--baseline REPO`` the paper's own PyTorch model (its released code at REPO) is timed the same
way in separate processes, alternating with this benchmark: `benchmarks.baseline`.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.model_flags import DTYPES, add_flag, add_model_arguments, model_impl, peak_bytes, run_main, time_calls
from fno_jax.model import FNO
from fno_jax.model.normalization import NormStats
from fno_jax.training import steps
from fno_jax.training.optim import make_optimizer

__all__ = ["add_arguments", "run"]

_SIZES = ("resolution", "batch", "width", "modes", "depth", "fc_dim", "channels", "steps")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the training-benchmark flags to ``parser`` (flags it already has are kept)."""
    add_model_arguments(parser, per="train step")
    add_flag(parser, "--remat", action="store_true", help="recompute layer intermediates in the backward pass")
    add_flag(parser, "--compile-only", action="store_true", help="compile, report memory, run no step")
    add_flag(parser, "--learning-rate", type=float, default=1e-3)


def compiled_memory(compiled: Any) -> dict[str, int]:
    """``compiled_*_bytes`` from XLA's memory analysis of a compiled step; empty if the backend has none."""
    try:
        stats = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return {}
    out = {}
    for key in ("temp", "argument", "output", "alias", "generated_code"):
        value = getattr(stats, f"{key}_size_in_bytes", None)
        if isinstance(value, int):
            out[f"compiled_{key}_bytes"] = value
    return out


def check_args(args: argparse.Namespace) -> None:
    """Raise ValueError naming the flag for sizes that cannot be benchmarked."""
    for name in _SIZES:
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}.")
    if args.channels < 2:
        raise ValueError(f"--channels must be >= 2 (source plus coefficients), got {args.channels}.")
    if args.modes > args.resolution // 2:
        raise ValueError(
            f"--modes {args.modes} is too many for --resolution {args.resolution}; "
            f"use --modes <= {args.resolution // 2}."
        )


def _random_batch(args: argparse.Namespace) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(args.seed)
    n = args.resolution
    return {
        "source": rng.normal(size=(args.batch, n, n)).astype(np.float32),
        "coeffs": rng.uniform(0.5, 1.5, size=(args.batch, args.channels - 1)).astype(np.float32),
        "solution": rng.normal(size=(args.batch, n, n)).astype(np.float32),
    }


def _init_state(model: FNO, optimizer: optax.GradientTransformation, dummy: jax.Array, key: jax.Array) -> dict:
    params = model.init(key, dummy)["params"]
    return {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Time the jitted, donating FNO train step; return the measurements as a JSON-serialisable dict."""
    check_args(args)
    dtype = DTYPES[args.dtype]
    model = FNO(
        width=args.width,
        modes=args.modes,
        depth=args.depth,
        fc_dim=args.fc_dim,
        dtype=dtype,
        spectral_impl=args.spectral_impl,
        **model_impl(args),
        remat=args.remat,
    )
    norm = NormStats(source_scale=1.0, coeff_scale=(1.0,) * (args.channels - 1))
    # The run's own optimizer (Adam, cosine schedule, non-finite updates skipped), as the train step expects it.
    optimizer = make_optimizer(args.learning_rate, max(args.steps, 1))
    device = jax.devices()[0]
    host = _random_batch(args)
    batch = jax.device_put({k: jnp.asarray(v) for k, v in host.items()}, device)
    dummy = jnp.zeros((1, args.resolution, args.resolution, args.channels), jnp.float32)
    init_state = functools.partial(_init_state, model, optimizer, dummy)
    key = jax.random.key(args.seed)
    step_fn = jax.jit(
        functools.partial(steps.train_step, model=model, optimizer=optimizer, norm=norm, length=1.0),
        donate_argnums=(0,),
    )
    result: dict[str, Any] = {
        "benchmark": "train",
        **{name: getattr(args, name) for name in _SIZES},
        "dtype": args.dtype,
        "spectral_impl": args.spectral_impl,
        **model_impl(args),
        "remat": args.remat,
        "device": f"{device.platform}:{device.device_kind}",
        "num_devices": jax.device_count(),
        "jax_version": jax.__version__,
    }
    if args.compile_only:
        # Abstract state: lowering and compiling allocate nothing for the step itself.
        abstract_state = jax.eval_shape(init_state, key)
        start = time.perf_counter()
        compiled = step_fn.lower(abstract_state, batch).compile()
        result["compile_only_s"] = time.perf_counter() - start
        result["num_params"] = int(sum(leaf.size for leaf in jax.tree.leaves(abstract_state["params"])))
        return {**result, **compiled_memory(compiled)}

    state = jax.jit(init_state)(key)
    result["num_params"] = int(sum(leaf.size for leaf in jax.tree.leaves(state["params"])))
    start = time.perf_counter()
    compiled = step_fn.lower(state, batch).compile()
    holder = {"state": state}
    del state  # donated by the first step: no other reference may remain

    def one_step() -> None:
        holder["state"], metrics = compiled(holder["state"], batch)
        jax.block_until_ready((holder["state"], metrics))

    one_step()
    compile_s = time.perf_counter() - start
    cpu_times: list[float] = []
    times = time_calls(one_step, args.steps, args.warmup, cpu_times)
    _, metrics = compiled(holder["state"], batch)
    step_s = statistics.median(times)
    result.update(
        {
            "compile_s": compile_s,
            "step_ms_median": 1e3 * step_s,
            "step_ms_min": 1e3 * min(times),
            "cpu_ms_median": 1e3 * statistics.median(cpu_times),
            "samples_per_s": args.batch / step_s,
            "final_loss": float(metrics["loss"]),
            "peak_bytes": peak_bytes(device),
            **compiled_memory(compiled),
        }
    )
    return result


def main(argv: list[str] | None = None) -> int:
    return run_main("train", argv)


if __name__ == "__main__":
    main()
