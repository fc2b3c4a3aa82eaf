"""What the model benchmarks share: their model/size flags, the timing loop and the allocator's peak."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from fno_jax.model import LAYER_IMPLS, default_layer_impl
from fno_jax.model.head import default_head_tile
from fno_jax.model.spectral_conv import SPECTRAL_IMPLS

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def add_flag(parser: argparse.ArgumentParser, flag: str, **kwargs: Any) -> None:
    """Add `flag` unless the parser has it: the throughput front end shares flags between its subcommands."""
    if flag not in parser._option_string_actions:
        parser.add_argument(flag, **kwargs)


def add_model_arguments(parser: argparse.ArgumentParser, *, per: str) -> None:
    """Grid, FNO size, precision and repetition flags; `per` names what one timed step does."""
    add_flag(parser, "--resolution", type=int, default=128, help="grid points per side")
    add_flag(parser, "--batch", type=int, default=32, help=f"samples per {per}")
    add_flag(parser, "--width", type=int, default=16)
    add_flag(parser, "--modes", type=int, default=8)
    add_flag(parser, "--depth", type=int, default=4)
    add_flag(parser, "--fc-dim", type=int, default=128)
    add_flag(parser, "--channels", type=int, default=4, help="input channels (4 = poisson)")
    add_flag(parser, "--dtype", choices=sorted(DTYPES), default="float32", help="compute dtype")
    add_flag(parser, "--spectral-impl", choices=SPECTRAL_IMPLS, default="dft", help="spectral conv algorithm")
    add_flag(
        parser,
        "--layer-impl",
        choices=("auto", *LAYER_IMPLS),
        default="auto",
        help="Fourier layers: fused (channels-first, hand-written gradient) or autodiff; auto: the model's default",
    )
    add_flag(parser, "--head-tile", type=int, default=-1, help="grid points per head tile (0: untiled; -1: auto)")
    add_flag(parser, "--steps", type=int, default=20, help=f"timed repetitions (one {per} each)")
    add_flag(parser, "--warmup", type=int, default=2, help="untimed repetitions after compiling")
    add_flag(parser, "--seed", type=int, default=0)
    add_flag(parser, "--json", action="store_true", help="print one JSON line at the end")


def model_impl(args: argparse.Namespace) -> dict[str, Any]:
    """``layer_impl`` and ``head_tile`` for the FNO from the flags, resolved the way the model resolves them."""
    layer_impl = default_layer_impl(args.spectral_impl) if args.layer_impl == "auto" else args.layer_impl
    head_tile = default_head_tile() if args.head_tile < 0 else args.head_tile
    return {"layer_impl": layer_impl, "head_tile": head_tile}


def time_calls(fn: Callable[[], Any], steps: int, warmup: int, cpu_times: list[float] | None = None) -> list[float]:
    """Wall seconds of `steps` calls of `fn` (which must block until its work is done) after `warmup` calls.

    With `cpu_times` given, the process's CPU seconds (all threads, user + system) of each call are appended to
    it: on a shared machine the CPU time moves less with other jobs' load than the wall time does.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        if cpu_times is not None:
            cpu_times.append(time.process_time() - cpu_start)
    return times


def peak_bytes(device: Any) -> int | None:
    """The allocator's peak bytes in use, where the backend reports it (not on the CPU)."""
    try:
        stats = device.memory_stats()
    except Exception:  # backends without allocator stats raise or return None
        return None
    return stats.get("peak_bytes_in_use") if stats else None


def run_main(command: str, argv: list[str] | None = None) -> int:
    """A benchmark module's own command line: the same as ``python -m benchmarks.throughput command ...``."""
    from benchmarks import throughput

    return throughput.main([command, *(sys.argv[1:] if argv is None else argv)])
