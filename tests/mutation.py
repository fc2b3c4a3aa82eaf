"""Does the test suite catch realistic wiring bugs?  `make mutation` (or `python tests/mutation.py`).

Copies the repository to a temporary directory, runs the tests every mutation names once on the unmodified copy (they
must pass), then for each mutation in MUTATIONS replaces one exact snippet of one file by a small bug, runs those
tests on the copy (PYTHONPATH pointing at it) and restores the file. Prints one table row per mutation: caught or
not, and by which tests. Exits 1 if any mutation survives, 2 if the table does not fit the code (a snippet not found
exactly once, a test that does not exist) or the unmodified copy fails its tests.

Keeping the table up to date: each entry names its file and an exact snippet that occurs once in it. When code moves
or is reworded, the script stops before running anything and says which entries no longer apply; move the entry
with the code (same bug, new file or words). `tests` lists the test files, or test ids (`file::name`) where a whole
file would be slow, that are expected to catch the bug.

    python tests/mutation.py                       # every mutation
    python tests/mutation.py --only best-step-is-latest lr-decay-every-step
    python tests/mutation.py --list                # the table, nothing run
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Not copied: environments, caches, run outputs.
IGNORED = (".git", ".venv", ".pytest_cache", ".hypothesis", ".ruff_cache", "__pycache__", "*.egg-info", "runs",
           "build", "dist", ".whl")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Mutation:
    """Properties:
    name: short id (--only).
    description: the bug, in words.
    file: path from the repository root.
    old: an exact snippet of `file`, occurring once.
    new: what it becomes.
    tests: test files or ids expected to catch it.
    """

    name: str
    description: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


WIRING = "tests/test_wiring.py"
SUMMARY = "tests/test_train.py::test_summary_and_metrics"

MUTATIONS = (
    # ---- the four wiring bugs of the 2026-12 mutation audit ---------------------------------------------------
    Mutation(
        "normalization-skipped",
        "the train/eval step feeds the model raw inputs (no per-instance normalization)",
        "fno_jax/model/inference.py",
        'source, coeffs = normalization.normalize(batch["source"], batch["coeffs"], norm, length=length)',
        'source, coeffs = batch["source"], batch["coeffs"]',
        (WIRING, SUMMARY),
    ),
    Mutation(
        "lr-decay-every-step",
        "the cosine decay advances every step instead of once per epoch (steps_per_decay = 1)",
        "fno_jax/training/cadence.py",
        'return self.steps_per_epoch if config.train.lr_decay == "epoch" else 1',
        "return 1",
        (WIRING,),
    ),
    Mutation(
        "best-step-is-latest",
        "Checkpointer.best_step() returns the latest step, not the lowest validation loss",
        "fno_jax/checkpoint.py",
        "best = self.manager.best_step()",
        "best = self.manager.latest_step()",
        (WIRING,),
    ),
    Mutation(
        "packed-best-step-of-run-0",
        "the packed final evaluation tests every run with run 0's best step",
        "fno_jax/training/trainer.py",
        "best_steps = [int(ckpt.best_step()) for ckpt in group.ckpts]",
        "best_steps = [int(group.ckpts[0].best_step()) for ckpt in group.ckpts]",
        (WIRING,),
    ),
    # ---- the protocol ------------------------------------------------------------------------------------------
    Mutation(
        "epoch-counts-partial-batch",
        "an epoch is ceil(N / batch) steps: the last partial batch is not dropped",
        "fno_jax/training/cadence.py",
        "per_epoch = max(epoch_size(config) // int(t.batch_size), 1)",
        "per_epoch = max(-(-epoch_size(config) // int(t.batch_size)), 1)",
        (WIRING,),
    ),
    Mutation(
        "final-test-of-last-params",
        "a run's final test evaluates its last params instead of its best-validation checkpoint",
        "fno_jax/training/trainer.py",
        "params = axis.stack([ckpt.restore_params(s, abstract) for ckpt, s in zip(group.ckpts, best_steps, "
        "strict=True)])",
        'params = state["params"]',
        (WIRING,),
    ),
    Mutation(
        "lr-grid-picked-by-test",
        "the report keeps the learning rate with the lowest test error instead of validation error",
        "experiments/report_data.py",
        'best = dict(min(group, key=lambda r: (_finite(r["val_rel_l2"])',
        'best = dict(min(group, key=lambda r: (_finite(r["test_rel_l2"])',
        ("tests/test_report.py",),
    ),
    Mutation(
        "lr-grid-worst-validation",
        "the report keeps the learning rate with the highest validation error",
        "experiments/report_data.py",
        'best = dict(min(group, key=lambda r: (_finite(r["val_rel_l2"])',
        'best = dict(max(group, key=lambda r: (_finite(r["val_rel_l2"])',
        ("tests/test_report.py",),
    ),
    Mutation(
        "zeroshot-with-pretrain-stats",
        "studies evaluate zero-shot (and fine-tune) with the pretraining statistics, not the downstream ones",
        "experiments/study.py",
        'base.finetune.norm_stats = "downstream"',
        'base.finetune.norm_stats = "pretrained"',
        ("tests/test_protocol.py",),
    ),
    Mutation(
        "norm-stats-rule-inverted",
        'a run with finetune.norm_stats="downstream" normalizes with the pretrained statistics and vice versa',
        "fno_jax/training/trainer.py",
        'if c0.finetune.norm_stats == "pretrained":',
        'if c0.finetune.norm_stats == "downstream":',
        (WIRING,),
    ),
    Mutation(
        "stats-of-the-subset",
        "the normalization statistics come from the N training samples, not the whole pool",
        "fno_jax/data/training_set.py",
        "stats = shared_stats(lambda source=source: input_stats([source], layout, d.length), layout)",
        "stats = shared_stats(lambda source=source: input_stats([{k: v[: d.num_train] for k, v in "
        "source.items()}], layout, d.length), layout)",
        ("tests/test_train.py::test_runs_on_one_pool_normalize_alike",),
    ),
    Mutation(
        "packed-runs-share-init",
        "every run of a packed group starts from the first run's seed (same init)",
        "fno_jax/training/trainer.py",
        "jax.random.fold_in(jax.random.PRNGKey(c.seed), 3000) for c in group.configs",
        "jax.random.fold_in(jax.random.PRNGKey(c0.seed), 3000) for c in group.configs",
        ("tests/test_group.py", WIRING),
    ),
    Mutation(
        "packed-runs-share-order",
        "every run of a packed group visits its samples in the first run's order",
        "fno_jax/data/loader.py",
        "    seeds = [int(c.seed) for c in configs]",
        "    seeds = [int(configs[0].seed) for c in configs]",
        ("tests/test_group.py", WIRING),
    ),
    Mutation(
        "readme-claims-another-number",
        "a README example's comment claims a number its code does not print",
        "README.md",
        "print(params)  # ~[3.0, 0.4]",
        "print(params)  # ~[3.0, 0.5]",
        ("tests/test_readme.py",),
    ),
)


def check_table(mutations) -> list[str]:
    """Problems that stop the run: a snippet not found exactly once, a missing file, a duplicate name."""
    problems = []
    names = [m.name for m in mutations]
    problems += [f"duplicate mutation name {n!r}" for n in sorted({n for n in names if names.count(n) > 1})]
    for m in mutations:
        path = os.path.join(REPO, m.file)
        if not os.path.isfile(path):
            problems.append(f"{m.name}: no file {m.file}")
            continue
        count = open(path).read().count(m.old)
        if count != 1:
            problems.append(f"{m.name}: the snippet occurs {count} times in {m.file} (must be exactly once): {m.old!r}")
        if m.old == m.new:
            problems.append(f"{m.name}: the mutation changes nothing")
        for test in m.tests:
            if not os.path.isfile(os.path.join(REPO, test.split("::")[0])):
                problems.append(f"{m.name}: no test file {test.split('::')[0]}")
    return problems


def copy_repo(destination: str) -> str:
    root = os.path.join(destination, "repo")
    shutil.copytree(REPO, root, ignore=shutil.ignore_patterns(*IGNORED), symlinks=True)
    return root


def environment(copy: str, cache: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=copy, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=cache, FNO_HYPOTHESIS_PROFILE="ci")
    return env


def run_tests(copy: str, env: dict[str, str], tests, jobs: int) -> tuple[int, list[str], str, float]:
    """pytest on `tests` in the copy: (exit status, failed test ids, output, seconds)."""
    parallel = ["-n", str(jobs), "--dist", "loadfile"] if jobs > 1 else ["-p", "no:xdist"]
    command = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *parallel, *tests]
    t0 = time.perf_counter()
    result = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True)
    output = result.stdout + result.stderr
    failed = [m.group(2) for m in re.finditer(r"^(FAILED|ERROR) (\S+)", output, flags=re.M)]
    return result.returncode, list(dict.fromkeys(failed)), output, time.perf_counter() - t0


def check_imports_from(copy: str, env: dict[str, str]) -> None:
    """The copy's packages, not an installed checkout, are the ones the tests import."""
    code = "import experiments, fno_jax, solvers; print(fno_jax.__file__, experiments.__file__, solvers.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=copy, env=env, capture_output=True, text=True, check=True)
    paths = out.stdout.split()
    if not all(os.path.realpath(p).startswith(os.path.realpath(copy)) for p in paths):
        sys.exit(f"mutation: the copy imports packages from elsewhere ({paths}); is fno-jax installed non-editable?")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutations")
    parser.add_argument("--list", action="store_true", help="print the table and exit")
    parser.add_argument("--jobs", type=int, default=1, help="pytest-xdist workers per run (default 1: none)")
    parser.add_argument(
        "--skip-baseline", action="store_true", help="do not first run the tests on the unmodified copy"
    )
    args = parser.parse_args(argv)

    mutations = [m for m in MUTATIONS if not args.only or m.name in args.only]
    unknown = set(args.only or ()) - {m.name for m in MUTATIONS}
    problems = check_table(MUTATIONS) + [f"--only: no mutation named {n!r}" for n in sorted(unknown)]
    if problems:
        print("mutation: the table no longer fits the code; fix these entries in tests/mutation.py:", file=sys.stderr)
        print("\n".join(f"  {p}" for p in problems), file=sys.stderr)
        return 2
    if args.list:
        for m in mutations:
            print(f"{m.name}: {m.description}\n    {m.file}: {m.old!r} -> {m.new!r}\n    tests: {', '.join(m.tests)}")
        return 0

    t_start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fno-mutation-") as tmp:
        copy = copy_repo(tmp)
        cache = os.path.join(tmp, "jax_cache")  # seeded from the suite's cache; mutated programs stay in tmp
        cached = os.path.join(REPO, ".pytest_cache", "jax")
        shutil.copytree(cached, cache) if os.path.isdir(cached) else os.makedirs(cache)
        env = environment(copy, cache)
        check_imports_from(copy, env)
        all_tests = list(dict.fromkeys(t for m in mutations for t in m.tests))
        if not args.skip_baseline:
            print(f"baseline: {len(all_tests)} test selections on the unmodified copy ...", flush=True)
            status, failed, output, seconds = run_tests(copy, env, all_tests, args.jobs)
            if status != 0:
                print(output[-6000:], file=sys.stderr)
                print(f"mutation: the unmodified code fails {failed or 'its tests'} (exit {status}); fix that first.",
                      file=sys.stderr)  # fmt: skip
                return 2
            print(f"baseline: passed in {seconds:.0f} s", flush=True)
        for m in mutations:
            path = os.path.join(copy, m.file)
            original = open(path).read()
            with open(path, "w") as f:
                f.write(original.replace(m.old, m.new, 1))
            try:
                status, failed, output, seconds = run_tests(copy, env, m.tests, args.jobs)
            finally:
                with open(path, "w") as f:
                    f.write(original)
            if status in (4, 5):  # usage error or nothing collected: the table is wrong, not the code
                print(output[-4000:], file=sys.stderr)
                print(f"mutation: {m.name}: pytest could not run {list(m.tests)} (exit {status}).", file=sys.stderr)
                return 2
            caught = status != 0
            by = ", ".join(failed) if failed else (f"pytest exit {status}" if caught else "-")
            rows.append((m, caught, by, seconds))
            print(f"{m.name}: {'caught' if caught else 'NOT CAUGHT'} in {seconds:.0f} s by {by}", flush=True)

    print("\n| mutation | the bug | caught | failing tests |\n| --- | --- | --- | --- |")
    for m, caught, by, _ in rows:
        print(f"| {m.name} | {m.description} | {'yes' if caught else '**no**'} | {by} |")
    survived = [m.name for m, caught, _, _ in rows if not caught]
    total = time.perf_counter() - t_start
    print(f"\n{len(rows) - len(survived)} of {len(rows)} mutations caught in {total:.0f} s.")
    if survived:
        print(f"Not caught: {', '.join(survived)}: add a test that fails for each.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
