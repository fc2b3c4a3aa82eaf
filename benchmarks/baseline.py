"""Our benchmark beside the paper's released code, each in its own process, alternating.

    python -m benchmarks.throughput train --resolution 128 --batch 32 --width 16 --modes 8 \
        --baseline /path/to/neuraloperators-TL-scaling --baseline-python /path/to/venv/bin/python [--rounds 3]
    python -m benchmarks.throughput generate --pde poisson --resolution 128 --batch 1024 \
        --baseline /path/to/neuraloperators-TL-scaling --baseline-python /path/to/venv/bin/python

The baseline is the paper's public repository (ShashankSubramanian/neuraloperators-TL-scaling), checked
out anywhere outside this project and run with an interpreter that has its dependencies (torch, numpy,
scipy, h5py, matplotlib). Nothing of it is imported here:

- ``train`` / ``infer``: `benchmarks/paper_model.py` runs the paper's ``models/fno.py`` under
  ``--baseline-python``;
- ``generate``: the paper's generator script itself (``utils/gen_data_poisson.py``,
  ``gen_data_advdiff.py``, ``gen_data_helmholtz.py``) with ``--ntrain N --nval 0 --ntest 0`` at the same
  resolution, from the repository root as its ``run_gen_data.sh`` runs it; its own ``time = ...`` line
  (the sample loop, without imports and without writing the HDF5 files) gives samples/s.

Ours runs as ``python -m benchmarks.throughput <command> ... --json`` in a fresh process. Each round
runs both, ours first in even rounds and the baseline first in odd ones, so a drift of the machine's
load falls on both sides; the load average (``/proc/loadavg``) is read before and after every run.
On a machine shared with other jobs, ``--quiet-load L`` starts each run only once the 1-minute load
average is below L (waiting at most ``--quiet-wait`` seconds; a run started after that wait is marked
``"waited_out": true``): other jobs' load slows a multi-threaded PyTorch step far more than ours, so
runs started under load overstate our advantage.
Reported: the medians over rounds of both sides and their ratio (``speedup``), every run, and the load.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["BASELINE_FLAGS", "alternate", "compare", "load_average", "strip_baseline_flags", "wait_for_quiet"]

ROOT = Path(__file__).resolve().parents[1]

# Flags of the comparison itself (value-taking): never passed on to our child process.
BASELINE_FLAGS = (
    "--baseline",
    "--baseline-python",
    "--rounds",
    "--baseline-samples",
    "--child-timeout",
    "--quiet-load",
    "--quiet-wait",
)

# The paper's generator scripts and their pre-training ranges (its run_gen_data.sh).
_PAPER_GENERATORS = {
    "poisson": ("utils/gen_data_poisson.py", ["--e1", "1", "--e2", "5"]),
    "advection_diffusion": ("utils/gen_data_advdiff.py", ["--adr1", "0.2", "--adr2", "1"]),
    "helmholtz": ("utils/gen_data_helmholtz.py", ["--o1", "1", "--o2", "10"]),
}
_TIME_LINE = re.compile(r"^time = ([0-9.eE+-]+)\s*$", re.MULTILINE)


def add_arguments(parser: Any) -> None:
    """The comparison's flags, shared by every subcommand."""
    parser.add_argument(
        "--baseline",
        metavar="REPO",
        default=None,
        help="checkout of the paper's released code: time it in its own process, alternating with ours",
    )
    parser.add_argument(
        "--baseline-python",
        default=os.environ.get("FNO_BASELINE_PYTHON", sys.executable),
        help="interpreter with the paper's dependencies (default: $FNO_BASELINE_PYTHON, else this one)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side (median); at least 3 to report")
    parser.add_argument("--child-timeout", type=float, default=1800.0, help="seconds allowed to one run")
    parser.add_argument(
        "--quiet-load", type=float, default=0.0, help="start each run once the 1-minute load is below this (0: at once)"
    )
    parser.add_argument("--quiet-wait", type=float, default=3600.0, help="longest wait for --quiet-load, seconds")


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or None where /proc/loadavg is absent."""
    try:
        with open("/proc/loadavg") as f:
            return [float(v) for v in f.read().split()[:3]]
    except (OSError, ValueError):
        return None


def strip_baseline_flags(argv: list[str]) -> list[str]:
    """``argv`` without the comparison's own flags (``--flag VALUE`` and ``--flag=VALUE``) and ``--json``."""
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
            continue
        name = token.split("=", 1)[0]
        if name in BASELINE_FLAGS:
            skip = "=" not in token
            continue
        if token != "--json":
            out.append(token)
    return out


def _run(cmd: list[str], *, cwd: Path | str, timeout: float) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
        raise RuntimeError(f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc.stdout


def _last_json(stdout: str, cmd: list[str]) -> dict[str, Any]:
    lines = stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError) as exc:
        raise RuntimeError(f"no JSON object on the last line of: {' '.join(cmd)}") from exc
    if not isinstance(result, dict) or not isinstance(result.get("samples_per_s"), int | float):
        raise RuntimeError(f"the last line of {' '.join(cmd)} has no samples_per_s: {lines[-1][:200]}")
    return result


def wait_for_quiet(threshold: float, max_wait_s: float, poll_s: float = 15.0) -> bool:
    """Sleep until the 1-minute load average is below ``threshold``; False if ``max_wait_s`` ran out first."""
    deadline = time.monotonic() + max_wait_s
    while True:
        load = load_average()
        if load is None or load[0] < threshold:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


def alternate(
    ours: Callable[[], dict[str, Any]],
    baseline: Callable[[], dict[str, Any]],
    rounds: int,
    wait: Callable[[], bool] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Run both ``rounds`` times, ours first in even rounds; returns (ours' results, baseline's, the log).

    ``wait`` (if given) is called before every run and returns False when it gave up waiting.
    Each log entry: ``round``, ``side``, ``samples_per_s``, ``wall_s``, ``load_before``, ``load_after``
    (and ``waited_out`` when ``wait`` gave up).
    """
    if rounds < 1:
        raise ValueError(f"--rounds must be >= 1, got {rounds}.")
    results: dict[str, list[dict[str, Any]]] = {"ours": [], "baseline": []}
    log = []
    for i in range(rounds):
        order = ("ours", "baseline") if i % 2 == 0 else ("baseline", "ours")
        for side in order:
            quiet = wait() if wait is not None else True
            before, start = load_average(), time.perf_counter()
            result = (ours if side == "ours" else baseline)()
            wall = time.perf_counter() - start
            results[side].append(result)
            log.append(
                {
                    "round": i,
                    "side": side,
                    "samples_per_s": result["samples_per_s"],
                    "wall_s": wall,
                    "load_before": before,
                    "load_after": load_average(),
                    **({} if quiet else {"waited_out": True}),
                }
            )
    return results["ours"], results["baseline"], log


def _git_commit(repo: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _paper_model_cmd(command: str, args: Any) -> list[str]:
    cmd = [args.baseline_python, str(ROOT / "benchmarks" / "paper_model.py"), "--repo", str(args.baseline), command]
    for name in ("resolution", "batch", "width", "modes", "depth", "fc_dim", "channels", "steps", "warmup", "seed"):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if command == "train":
        cmd += ["--learning-rate", str(args.learning_rate)]
    return cmd


def _paper_generator(args: Any) -> tuple[list[str], Callable[[], dict[str, Any]]]:
    if args.pde not in _PAPER_GENERATORS:
        raise ValueError(f"the paper has no generator for --pde {args.pde}; choose one of {sorted(_PAPER_GENERATORS)}.")
    script, ranges = _PAPER_GENERATORS[args.pde]
    samples = args.baseline_samples
    cmd = [args.baseline_python, script, "--ntrain", str(samples), "--nval", "0", "--ntest", "0"]
    cmd += ["--ng", "144", "--sparse", "--n", str(args.resolution), *ranges]

    def run() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="paper_gen_") as out:
            full = [*cmd, "--datapath", out]
            stdout = _run(full, cwd=args.baseline, timeout=args.child_timeout)
        match = _TIME_LINE.search(stdout)
        if not match:
            raise RuntimeError(f"no 'time = ...' line in the output of {' '.join(full)}")
        seconds = float(match.group(1))
        return {"samples_per_s": samples / seconds, "loop_s": seconds, "samples": samples}

    return [*cmd, "--datapath", "TMPDIR"], run


def compare(command: str, args: Any, child_argv: list[str]) -> dict[str, Any]:
    """Ours (``python -m benchmarks.throughput command *child_argv``) against the paper's code, alternating."""
    repo = Path(args.baseline)
    if not repo.is_dir():
        raise ValueError(f"--baseline {repo} is not a directory; pass a checkout of the paper's released code.")
    ours_cmd = [sys.executable, "-m", "benchmarks.throughput", command, *child_argv, "--json"]
    if command == "generate":
        baseline_cmd, run_baseline = _paper_generator(args)
    else:
        if not (repo / "models" / "fno.py").is_file():
            raise ValueError(f"--baseline {repo} has no models/fno.py; pass a checkout of the paper's released code.")
        baseline_cmd = _paper_model_cmd(command, args)

        def run_baseline() -> dict[str, Any]:
            return _last_json(_run(baseline_cmd, cwd=ROOT, timeout=args.child_timeout), baseline_cmd)

    def run_ours() -> dict[str, Any]:
        return _last_json(_run(ours_cmd, cwd=ROOT, timeout=args.child_timeout), ours_cmd)

    wait = None
    if args.quiet_load > 0:

        def wait() -> bool:
            return wait_for_quiet(args.quiet_load, args.quiet_wait)

    load_start = load_average()
    ours, theirs, log = alternate(run_ours, run_baseline, args.rounds, wait)
    ours_rate = statistics.median(r["samples_per_s"] for r in ours)
    theirs_rate = statistics.median(r["samples_per_s"] for r in theirs)
    result = dict(ours[0])
    for key in ("step_ms_median", "compile_s"):
        if all(isinstance(r.get(key), int | float) for r in ours):
            result[key] = statistics.median(r[key] for r in ours)
    result.update(
        {
            "samples_per_s": ours_rate,
            "baseline_samples_per_s": theirs_rate,
            "speedup": ours_rate / theirs_rate,
            "rounds": args.rounds,
            "quiet_load": args.quiet_load or None,
            "runs": log,
            "load_avg_start": load_start,
            "load_avg_end": load_average(),
            "ours_command": " ".join(["python", *ours_cmd[1:]]),
            "baseline_command": " ".join(baseline_cmd),
            "baseline_repo": str(repo.resolve()),
            "baseline_commit": _git_commit(repo),
            "baseline_result": theirs[0],
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    if "step_ms_median" in theirs[0]:
        result["baseline_step_ms_median"] = statistics.median(r["step_ms_median"] for r in theirs)
    return result
