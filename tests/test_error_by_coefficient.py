"""experiments.error_by_coefficient: a run's per-value errors, weighted by their test sample counts, give back the test
error the trainer reported; a coefficient that is not a per-sample scalar, or a task or shift the sweep lacks, is
refused."""

import json

import numpy as np
import pytest

from experiments import error_by_coefficient as ebc
from fno_jax import train
from fno_jax.runtime.cli_errors import UserError, is_expected
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A sweep directory holding one tiny Helmholtz run, reported as a scratch point and as a pre-training."""
    root = tmp_path_factory.mktemp("sweep")
    config = tiny_config("helmholtz", **{"data.num_test": 48, "task_ranges.omega_range": (1, 4)})
    summary = train.train_and_evaluate(config, str(root / "runs" / "h-s0"))
    run = {
        "name": "h-s0", "task": "helmholtz", "shift": "w1-4", "model": {"width": 8, "modes": 4}, "mode": "scratch",
        "pretrain": "", "variant": "", "num_train": 32, "seed": 0, "length_check": False,
    }  # fmt: skip
    # A Poisson pre-training (no run directory: evaluating it would fail) is no model the Helmholtz points can use.
    other = {**run, "name": "p-s0", "task": "poisson"}
    report = {"runs": [run], "pretrain": [{**run, "kind": "pretrain"}, {**other, "kind": "pretrain"}]}
    (root / "report.json").write_text(json.dumps(report))
    return str(root), summary


def test_per_value_errors_weighted_by_their_counts_give_the_reported_test_error(sweep):
    root, summary = sweep
    out = ebc.by_coefficient(root, "helmholtz", "omega")
    assert out["shift"] == "w1-4" and ebc.by_coefficient(root, "helmholtz", "omega", shift="w1-4") == out
    counts = out["test_samples"]
    assert sum(counts.values()) == 48 and set(counts) <= {"1", "2", "3", "4"} and len(counts) > 1
    scratch, zeroshot = out["rows"]
    assert scratch["point"] == "w1-4 scratch, N = 32" and zeroshot["point"].startswith("zero-shot from h-s0")
    weighted = sum(scratch["median"][v] * c for v, c in counts.items()) / 48
    np.testing.assert_allclose(weighted, summary["test_rel_l2"], rtol=1e-4)
    # The pre-training here is the same run on the same test set: the same numbers.
    np.testing.assert_allclose(list(zeroshot["median"].values()), list(scratch["median"].values()), rtol=1e-5)
    with open(f"{root}/error_by_omega.json") as f:
        assert json.load(f) == out


def test_a_coefficient_that_is_no_per_sample_scalar_or_a_missing_task_is_refused(sweep):
    root, _ = sweep
    with pytest.raises(UserError, match=r"--by 'diffusion' is not a scalar coefficient.*'omega'") as info:
        ebc.by_coefficient(root, "helmholtz", "diffusion")
    assert is_expected(info.value)
    with pytest.raises(UserError, match=r"no runs of task 'poisson'; its tasks: \['helmholtz'\]"):
        ebc.by_coefficient(root, "poisson", "omega")
    with pytest.raises(UserError, match=r"has the shifts \['w1-4'\]; name one with --shift \(got 'w5-15'\)"):
        ebc.by_coefficient(root, "helmholtz", "omega", shift="w5-15")
