"""Throughput benchmarks behind one command line: data generation, training and inference.

    python -m benchmarks.throughput generate --pde poisson --resolution 128 --batch 1024 [--json]
    python -m benchmarks.throughput train --resolution 128 --batch 32 --width 16 --modes 8 \
        [--steps N] [--dtype float32|bfloat16] [--spectral-impl fft|dft] [--json]
    python -m benchmarks.throughput infer ...same flags as train...
    python -m benchmarks.throughput pack --runs K --num-train N --steps S --resolution R --width W --modes M [--json]

Every subcommand also takes ``--baseline REPO --baseline-python PY [--rounds 3]``: the paper's released
code at REPO (its model for train/infer, its generator script for generate) timed in separate processes,
alternating with this benchmark run as a fresh process, with the load average; see `benchmarks.baseline`.

Each subcommand is a module with ``add_arguments(parser)`` and ``run(args) -> dict``
(`benchmarks.generate`, `benchmarks.train_throughput`, `benchmarks.model_throughput`, `benchmarks.pack`). The result is
printed as ``key: value`` lines; with ``--json`` the last line printed is the whole result as one
JSON object (at least ``samples_per_s``, ``step_ms_median``, ``compile_s``, ``device``,
``peak_bytes``; ``peak_bytes`` is null where the backend keeps no allocator statistics).
Timings exclude compilation and end each step on ``block_until_ready``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any

from benchmarks import baseline

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

# Subcommand -> module; modules are imported only when their subcommand runs (or for --help).
SUBCOMMANDS = {
    "generate": "benchmarks.generate",
    "train": "benchmarks.train_throughput",
    "infer": "benchmarks.model_throughput",
    "pack": "benchmarks.pack",
}
_REQUIRED_KEYS = ("samples_per_s", "step_ms_median", "compile_s", "device", "peak_bytes")


def build_parser(command: str) -> argparse.ArgumentParser:
    """The argument parser of one subcommand, with the module's own flags and ``--json``."""
    if command not in SUBCOMMANDS:
        raise ValueError(f"unknown benchmark {command!r}; choose one of {sorted(SUBCOMMANDS)}.")
    module = importlib.import_module(SUBCOMMANDS[command])
    parser = argparse.ArgumentParser(
        prog=f"python -m benchmarks.throughput {command}",
        description=(module.__doc__ or command).strip().splitlines()[0],
        allow_abbrev=False,  # the --baseline flags are stripped by name before our side runs
    )
    module.add_arguments(parser)
    baseline.add_arguments(parser)
    if "--json" not in parser._option_string_actions:
        parser.add_argument("--json", action="store_true", help="print one JSON line at the end")
    return parser


def _jsonable(value: Any) -> Any:
    # numpy / jax scalars from a module's result become plain Python numbers.
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    return value


def _quiet_libraries() -> None:
    """The project's logging set-up (libraries' chatter hidden) without absl's app: runs inside a benchmark log
    like runs of `experiments.main`."""
    from absl import flags, logging

    from fno_jax.runtime.log_setup import configure_logging

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # absl's defaults; this command line is argparse's
    logging.use_absl_handler()
    configure_logging()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        print(__doc__, file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"error: unknown benchmark {argv[0]!r}; choose one of {sorted(SUBCOMMANDS)}.", file=sys.stderr)
            return 2
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    parser = build_parser(command)
    args = parser.parse_args(rest)
    _quiet_libraries()
    if args.baseline:
        result = baseline.compare(command, args, baseline.strip_baseline_flags(rest))
    else:
        result = importlib.import_module(SUBCOMMANDS[command]).run(args)
    result = {key: _jsonable(value) for key, value in result.items()}
    result.setdefault("benchmark", command)
    for key in _REQUIRED_KEYS:
        result.setdefault(key, None)
    for key, value in result.items():
        if key not in ("runs", "baseline_result"):
            print(f"{key:>24}: {value}")
    if args.json:
        print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
