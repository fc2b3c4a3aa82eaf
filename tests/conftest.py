"""Shared test set-up and helpers: CPU only, a persistent compilation cache, float64 on demand, the tiny run config,
params comparisons, and subprocess runs (the CLI, forced host devices).

The compilation cache lives in `.pytest_cache/jax` and is shared by both xdist workers and every subprocess (the
environment variables below are inherited), so a program the suite compiles once (the tiny run's train step, say)
is loaded from disk by every later process that needs it.
"""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CACHE = os.path.join(REPO, ".pytest_cache", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ["PYTHONPATH"] = REPO + os.pathsep + os.environ.get("PYTHONPATH", "")


def _fast_compile_flags() -> str:
    """XLA flags for the suite's small programs, which run a few steps: no CPU backend optimizations, and the CPU
    backend's older loop emitters (its fusion emitters take about 3x longer to compile the train step: 1.6 s against
    0.4 s; the whole suite on a clean clone 437 s against 337 s on the 2-core VM, 2026-12-06).

    Every test process and subprocess compiles the same way: one program gives the same bits in every process (two
    programs that compute the same thing may still round differently, under any flags). The emitter flag is checked
    once, in a throwaway interpreter, because a jaxlib that no longer knows a flag stops at start-up; the answer is
    kept in the environment, so pytest-xdist workers and the tests' subprocesses inherit it."""
    known = os.environ.get("FNO_TEST_XLA_FLAGS")
    if known is not None:
        return known
    flags = "--xla_backend_optimization_level=0"
    emitters = f"{flags} --xla_cpu_use_fusion_emitters=false"
    probe = subprocess.run(
        [sys.executable, "-c", "import jax; jax.devices()"],
        env=dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=emitters),
        capture_output=True,
    )
    if probe.returncode == 0:
        flags = emitters
    os.environ["FNO_TEST_XLA_FLAGS"] = flags
    return flags


FAST_COMPILE = _fast_compile_flags()
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# Property tests (hypothesis) draw their examples from a seed fixed per test in CI ("ci", the default): every run
# meets the same examples, so a red CI run is a regression, never a new draw. "random" draws new examples each run
# and keeps the failing ones in .hypothesis/ to replay: `make test-random`, or `pytest --hypothesis-profile=random`
# (or FNO_HYPOTHESIS_PROFILE=random). Each test's own @settings (example counts, deadlines) apply in both.
settings.register_profile("ci", derandomize=True)
settings.register_profile("random", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("FNO_HYPOTHESIS_PROFILE", "ci"))

# The tiny run every end-to-end test shares: seconds on a CPU, and it still checkpoints, evaluates and resumes.
TINY = {
    "data.resolution": 16,
    "data.num_train": 32,
    "data.num_val": 16,
    "data.num_test": 16,
    "data.generate_chunk": 16,
    "model.width": 8,
    "model.modes": 4,
    "model.depth": 2,
    "model.fc_dim": 16,
    "train.batch_size": 8,
    "train.eval_batch_size": 16,
    "train.num_steps": 10,
    "train.eval_every": 5,
    "train.checkpoint_every": 5,
    "train.log_every": 5,
}


def tiny_config(task: str = "poisson", **overrides):
    """The tiny run config of `task` with dotted-key overrides, e.g. tiny_config(**{"train.num_steps": 4})."""
    from fno_jax.config import default_config

    config = default_config()
    config.task = task
    config.update_from_flattened_dict({**TINY, **overrides})
    return config


def generated_split(config, split: str) -> dict[str, np.ndarray]:
    """The `split` ("train": the whole pool) a run of `config` generates, made again (`fno_jax.data.generate`)."""
    from fno_jax.config import task_of
    from fno_jax.data.generate import data_seed, generate_split, pool_seed

    d = config.data
    num = {"train": d.num_train_pool or d.num_train, "val": d.num_val, "test": d.num_test}[split]
    seed = pool_seed(config) if split == "train" else data_seed(config)
    return generate_split(task_of(config), seed, split, num, d.resolution, chunk=d.generate_chunk)


def poisson_pool_stats(config):
    """The normalization statistics of a Poisson run's training pool, recomputed here from the regenerated pool:
    the median over the pool of s(f) = ||f||_2 dx dy, and of |K11|, |K22|, |K12| (ARCHITECTURE.md), in float64."""
    from fno_jax.model.normalization import NormStats

    assert config.task == "poisson" and not config.data.layout, "the channels below are Poisson's: f, K11, K22, K12"
    pool = generated_split(config, "train")
    source = np.asarray(pool["source"], np.float64)
    cell = (config.data.length / config.data.resolution) ** 2
    diffusion = np.asarray(pool["diffusion"], np.float64)
    coefficients = (diffusion[:, 0, 0], diffusion[:, 1, 1], diffusion[:, 0, 1])
    return NormStats(
        source_scale=float(np.median(np.sqrt(np.sum(source**2, axis=(1, 2))) * cell)),
        coeff_scale=tuple(float(np.median(np.abs(k))) for k in coefficients),
    )


def tiny_flags(**overrides) -> list[str]:
    """The tiny run as command-line overrides of experiments/configs/base.py."""
    values = {**TINY, **overrides}
    return [f"--config.{k}={v}" for k, v in values.items()]


def params_equal(a, b) -> bool:
    """Same tree structure and bitwise-equal leaves."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    same_tree = jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    return same_tree and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=True))


def relative_difference(a, b) -> float:
    """||a - b|| / ||b|| over all leaves of two trees of the same structure (float64 sums)."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    num = sum(float(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2)) for x, y in zip(la, lb))
    den = sum(float(np.sum(np.asarray(y, np.float64) ** 2)) for y in lb)
    return (num / den) ** 0.5


def run_python(args: list[str], *, devices: int | None = None, timeout: float = 600, check: bool = True, **kwargs):
    """`python ARGS` in the repository root (optionally with `devices` forced host devices); returns the result."""
    env = dict(os.environ, **kwargs.pop("env", {}))
    if devices is not None:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}"
    result = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, **kwargs
    )
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def last_json_lines(procs, *, timeout: float = 600) -> list[dict]:
    """Wait for each process (killing every one still running if one fails) and return the JSON object each printed
    last; a process that exits non-zero fails the test with the end of its stderr."""
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, err[-4000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return results


def main_cli(workdir, *flags: str, config: str = "experiments/configs/base.py") -> list[str]:
    """Arguments of `python -m experiments.main` for the tiny run in `workdir` with extra flags."""
    return ["-m", "experiments.main", f"--config={config}", f"--workdir={workdir}", *tiny_flags(), *flags]


@pytest.fixture
def x64():
    """Run the test body with 64-bit JAX types enabled, restoring the previous setting after."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One finished tiny run, (workdir, summary), for tests that only read it (one per pytest worker)."""
    from fno_jax import train

    workdir = str(tmp_path_factory.mktemp("tiny_run"))
    return workdir, train.train_and_evaluate(tiny_config(), workdir)


# Scheduling only: `make test` hands whole files to two workers (--dist loadfile) in collection order, so a heavy
# file collected last leaves one worker idle while the other finishes it. These files, the heaviest on a clean clone
# (2026-12-06, 15-45 s each), are collected first; the rest keep their order. Any order gives the same results.
HEAVY_FIRST = (
    "test_group.py",
    "test_reliability.py",
    "test_tuning.py",
    "test_four_devices.py",
    "test_training_modes.py",
    "test_distributed.py",
    "test_gcs.py",
    "test_operator.py",
    "test_train.py",
    "test_sweep.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(HEAVY_FIRST)))


# The local GCS emulator (tests/gcs_emulator.py): `gcs_emulator` (session) and `gcs_root` (a gs:// prefix per test).
from gcs_emulator import gcs_emulator, gcs_root  # noqa: E402, F401
