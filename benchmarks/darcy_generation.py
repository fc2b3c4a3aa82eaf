"""Darcy data generation on the CPU: `solvers.tasks.Darcy` (threshold) against a per-sample scipy direct solve.

    python -m benchmarks.darcy_generation [--resolution 128] [--batch 256] [--repeats 5] \
        [--baseline-samples 64] [--rounds 3] [--quiet-load 1.5] [--json]

Both sides make the same problems: Li et al.'s threshold permeability (a = 12 / 3 from the Gaussian random field of
`solvers.permeability`, f = 1) with u = 0 on the boundary, on the n x n interior nodes, discretised by the same
5-point finite-volume system (harmonic-mean faces, `solvers.finite_volume`).
  * ours: `tasks.Darcy().sample(key, batch, n)` jitted (PCG, float32, the sampler's defaults), compiled ahead of
    time, median over `--repeats` batches with fresh keys;
  * baseline: per sample with numpy and scipy, the field's KL coefficients drawn with numpy, the field evaluated
    (`random_fields.kl_basis_values`), thresholded, the sparse matrix assembled (CSC) and solved by
    `scipy.sparse.linalg.spsolve` (SuperLU, float64), timed over `--baseline-samples` samples.
Each side runs in its own process (`--side ours|scipy`, one JSON line), alternating, ours first in even rounds
(`benchmarks.baseline.alternate`); the 1-minute load average is read before and after each run and, with
`--quiet-load L`, each run waits until it is below L.  Reported: both medians, their ratio, every run.
The scipy side also solves its first problem with `solvers.darcy` (float64) after timing and reports the largest
difference, relative to max|u|, as `agreement` (the two build the same system).  Needs scipy (`pip install
.[bench]`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.baseline import alternate, wait_for_quiet

ROOT = Path(__file__).resolve().parents[1]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.darcy_generation", description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=128, help="interior nodes per side")
    parser.add_argument("--batch", type=int, default=256, help="samples per timed batch (ours)")
    parser.add_argument("--repeats", type=int, default=5, help="timed batches (ours; median)")
    parser.add_argument("--baseline-samples", type=int, default=64, help="samples per run (scipy)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side (median)")
    parser.add_argument("--quiet-load", type=float, default=0.0, help="start each run once the 1-minute load is below")
    parser.add_argument("--quiet-wait", type=float, default=1800.0, help="longest wait for --quiet-load, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--side", choices=("ours", "scipy"), default=None, help="run one side only (a child run)")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    return parser


def run_ours(args: argparse.Namespace) -> dict[str, Any]:
    import jax

    from benchmarks.generate import time_sampling
    from solvers import tasks

    compile_s, step = time_sampling(tasks.Darcy(), args.batch, args.resolution, args.seed, args.repeats)
    device = jax.devices()[0]
    return {
        "side": "ours",
        "samples_per_s": args.batch / step,
        "step_ms_median": step * 1e3,
        "compile_s": compile_s,
        "batch": args.batch,
        "dtype": "float32",
        "device": f"{device.platform}:{device.device_kind}",
    }


def _five_point_matrix(a, h: float):
    """The 5-point finite-volume matrix of `solvers.finite_volume` (Dirichlet) as scipy CSC, row-major unknowns."""
    import numpy as np
    import scipy.sparse as sp

    n = a.shape[0]
    harmonic = lambda p, q: 2 * p * q / (p + q)
    a_x = np.concatenate([a[:, :1], harmonic(a[:, :-1], a[:, 1:]), a[:, -1:]], axis=1)  # [n, n + 1]
    a_y = np.concatenate([a[:1], harmonic(a[:-1], a[1:]), a[-1:]], axis=0)  # [n + 1, n]
    index = np.arange(n * n).reshape(n, n)
    diagonal = (a_x[:, :-1] + a_x[:, 1:] + a_y[:-1] + a_y[1:]).ravel()
    east, north = -a_x[:, 1:-1].ravel(), -a_y[1:-1].ravel()
    rows = np.concatenate([index.ravel(), index[:, :-1].ravel(), index[:, 1:].ravel(), index[:-1].ravel(),
                           index[1:].ravel()])  # fmt: skip
    cols = np.concatenate([index.ravel(), index[:, 1:].ravel(), index[:, :-1].ravel(), index[1:].ravel(),
                           index[:-1].ravel()])  # fmt: skip
    values = np.concatenate([diagonal, east, east, north, north]) / h**2
    return sp.csc_matrix((values, (rows, cols)), shape=(n * n, n * n))


def run_scipy(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import scipy
    import scipy.sparse.linalg as spl

    from solvers import permeability, random_fields

    n = args.resolution
    tau, alpha = permeability.GRF_PARAMETERS["threshold"]
    low, high = permeability.THRESHOLD_VALUES
    scales = random_fields.kl_scales("dirichlet", 1.0, tau, alpha)
    basis = random_fields.kl_basis_values(n, "dirichlet")
    rng = np.random.default_rng(args.seed)
    h = 1.0 / (n + 1)
    f = np.ones(n * n)
    first = None
    start = time.perf_counter()
    for i in range(args.baseline_samples):
        xi = rng.standard_normal(scales.shape)
        g = basis @ (scales * xi) @ basis.T
        a = np.where(g >= 0, high, low)
        u = spl.spsolve(_five_point_matrix(a, h), f).reshape(n, n)
        if i == 0:
            first = a, u
    loop_s = time.perf_counter() - start
    return {
        "side": "scipy",
        "samples_per_s": args.baseline_samples / loop_s,
        "loop_s": loop_s,
        "samples": args.baseline_samples,
        "dtype": "float64",
        "scipy": scipy.__version__,
        "agreement": _agreement(*first),
    }


def _agreement(a, u) -> float:
    """max |u_scipy - u_ours| / max |u| for one problem, ours in float64 to tol 1e-12."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    import solvers

    ours = np.asarray(solvers.darcy(a, np.ones_like(a), tol=1e-12))
    return float(np.abs(ours - u).max() / np.abs(u).max())


def _child(args: argparse.Namespace, side: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.darcy_generation", "--side", side, "--json"]
    for name in ("resolution", "batch", "repeats", "baseline_samples", "seed"):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """Both sides in their own processes, alternating; medians and their ratio."""
    wait = None
    if args.quiet_load > 0:

        def wait() -> bool:
            return wait_for_quiet(args.quiet_load, args.quiet_wait)

    ours, theirs, log = alternate(lambda: _child(args, "ours"), lambda: _child(args, "scipy"), args.rounds, wait)
    ours_rate = statistics.median(r["samples_per_s"] for r in ours)
    theirs_rate = statistics.median(r["samples_per_s"] for r in theirs)
    return {
        "benchmark": "darcy_generation",
        "resolution": args.resolution,
        "samples_per_s": ours_rate,
        "baseline_samples_per_s": theirs_rate,
        "speedup": ours_rate / theirs_rate,
        "step_ms_median": statistics.median(r["step_ms_median"] for r in ours),
        "compile_s": statistics.median(r["compile_s"] for r in ours),
        "device": ours[0]["device"],
        "agreement": max(r["agreement"] for r in theirs),
        "rounds": args.rounds,
        "quiet_load": args.quiet_load or None,
        "runs": log,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.side is not None:
        result = run_ours(args) if args.side == "ours" else run_scipy(args)
    else:
        result = compare(args)
        for entry in result["runs"]:
            side = "ours" if entry["side"] == "ours" else "scipy"
            print(
                f"round {entry['round']} {side:>5}: {entry['samples_per_s']:9.1f} samples/s "
                f"(load {entry['load_before']} -> {entry['load_after']})"
            )
        ours, theirs = result["samples_per_s"], result["baseline_samples_per_s"]
        print(
            f"median: ours {ours:.1f} samples/s, scipy spsolve {theirs:.1f} samples/s, ratio {result['speedup']:.1f}x "
            f"(agreement {result['agreement']:.1e})"
        )
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
