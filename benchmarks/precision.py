"""Accuracy of mixed precision: the same run trained in float32 and in bfloat16, test errors compared.

    python -m benchmarks.precision [--config experiments/configs/pretrain.py] [--config-arg poisson,runlocal] \
        [--steps N] [--workdir DIR]

Both runs are `fno_jax.train.train_and_evaluate` on one config that differs only in ``train.dtype`` (same seed, same
data, same init, same batch order), each in its own workdir (a temporary folder unless ``--workdir``). The target: the
bfloat16 run's test relative L2 error stays within 10% of the float32 run's, ``ratio = bf16 / f32 <= 1.1``.
Progress goes to stderr; the last line printed is one JSON object with both errors, their ratio, the wall time of
each run, the device and the command.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from typing import Any

import jax
import ml_collections

from fno_jax import train

__all__ = ["DTYPES", "TOLERANCE", "compare", "load_config", "main"]

DTYPES = ("float32", "bfloat16")
# The bfloat16 test error may exceed the float32 one by at most this fraction.
TOLERANCE = 0.10


def load_config(path: str, arg: str | None) -> ml_collections.ConfigDict:
    """`get_config(arg)` of the config file at `path` (as `experiments.main --config=PATH:ARG` would load it)."""
    if not os.path.isfile(path):
        raise ValueError(
            f"--config={path!r} is not a file; pass a config file such as experiments/configs/pretrain.py."
        )
    spec = importlib.util.spec_from_file_location("_precision_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"--config={path!r} defines no get_config(arg); point it at an experiments config file.")
    return module.get_config(arg) if arg else module.get_config()


def _with_steps(config: ml_collections.ConfigDict, steps: int | None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(config.to_dict())
    if steps is None:
        return config
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1 (the number of training steps of each run).")
    t = config.train
    t.num_steps = steps
    # Evaluate (and keep a best checkpoint) about four times per run, whatever the step count.
    t.eval_every = max(1, min(t.eval_every, steps // 4 or 1))
    t.checkpoint_every = min(t.checkpoint_every, steps)
    t.log_every = min(t.log_every, t.eval_every)
    return config


def compare(config: ml_collections.ConfigDict, workdir: str, *, steps: int | None = None) -> dict[str, Any]:
    """Train `config` once per dtype in `workdir/<dtype>`; returns both test errors, their ratio and timings."""
    base = _with_steps(config, steps)
    result: dict[str, Any] = {}
    for dtype in DTYPES:
        run = ml_collections.ConfigDict(base.to_dict())
        run.train.dtype = dtype
        t0 = time.perf_counter()
        summary = train.train_and_evaluate(run, os.path.join(workdir, dtype))
        result[dtype] = {
            "test_rel_l2": summary["test_rel_l2"],
            "val_rel_l2": summary["val_rel_l2"],
            "best_step": summary["best_step"],
            "wall_s": round(time.perf_counter() - t0, 2),
        }
    ratio = result["bfloat16"]["test_rel_l2"] / result["float32"]["test_rel_l2"]
    device = jax.devices()[0]
    result.update(
        ratio=ratio,
        within_tolerance=bool(ratio <= 1.0 + TOLERANCE),
        tolerance=TOLERANCE,
        task=base.task,
        resolution=int(base.data.resolution),
        model={k: int(base.model[k]) for k in ("width", "modes", "depth", "fc_dim")},
        num_train=int(base.data.num_train),
        num_test=int(base.data.num_test),
        steps=int(base.train.num_steps),
        device=f"{device.platform}:{device.device_kind}",
        num_devices=jax.device_count(),
        jax_version=jax.__version__,
    )
    return result


def _load_average() -> list[float] | None:
    # 1, 5 and 15 minute load: CPU timings and even convergence speed per second depend on what else runs.
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.precision", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/configs/pretrain.py", help="config file with get_config")
    parser.add_argument("--config-arg", default="poisson,runlocal", help="ARG passed to get_config")
    parser.add_argument("--steps", type=int, default=None, help="training steps of each run (default: the config's)")
    parser.add_argument("--workdir", default=None, help="keep the two runs here (default: a temporary folder)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.steps is not None and args.steps < 1:
        build_parser().error(f"--steps={args.steps} must be >= 1.")
    config = load_config(args.config, args.config_arg)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_start = _load_average()
    if args.workdir:
        result = compare(config, args.workdir, steps=args.steps)
    else:
        with tempfile.TemporaryDirectory(prefix="precision_") as workdir:
            result = compare(config, workdir, steps=args.steps)
    result.update(
        command="python -m benchmarks.precision " + " ".join(sys.argv[1:] if argv is None else argv),
        date=started,
        load_average_start=load_start,
        load_average_end=_load_average(),
    )
    for dtype in DTYPES:
        print(f"{dtype}: test rel L2 {result[dtype]['test_rel_l2']:.4g} ({result[dtype]['wall_s']} s)", file=sys.stderr)
    print(f"ratio bfloat16/float32: {result['ratio']:.4f} (target <= {1 + TOLERANCE})", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
