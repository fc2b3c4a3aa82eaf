"""experiments.pretrain_sensitivity picks each seed's chosen fine-tuned run of the asked sizes (never a length-check
run) and refuses, naming the path and what to run, when the doubled pre-training has not finished."""

import json
import os

import pytest

from experiments import pretrain_sensitivity as ps
from fno_jax.runtime.cli_errors import UserError, is_expected


def _run(mode, n, seed, *, length_check=False, width=16):
    return {
        "mode": mode, "num_train": n, "seed": seed, "length_check": length_check, "name": f"{mode}-{n}-{seed}-w{width}",
        "task": "poisson", "shift": "e5-10", "pretrain": "poisson", "model": {"width": width, "modes": 8},
        "finetune_mode": "full", "loss": "data", "variant": "",
    }  # fmt: skip


def test_chosen_runs_are_the_fine_tuned_ones_of_the_asked_sizes_by_point_in_seed_order():
    report = {
        "runs": [
            _run("finetune", 2, 1),
            _run("finetune", 2, 0),
            _run("finetune", 2, 0, width=8),
            _run("finetune", 2, 0, length_check=True),
            _run("scratch", 2, 0),
            _run("finetune", 8, 0),
        ]
    }
    chosen = ps.chosen_runs(report, [2])
    assert {key: [r["name"] for r in runs] for key, runs in chosen.items()} == {
        ("poisson e5-10 from poisson w16m8 full data", 2): ["finetune-2-0-w16", "finetune-2-1-w16"],
        ("poisson e5-10 from poisson w8m8 full data", 2): ["finetune-2-0-w8"],
    }
    with pytest.raises(UserError, match=r"no fine-tuned runs at N = \[32\]"):
        ps.chosen_runs(report, [2, 32])


def test_an_unfinished_doubled_pretraining_is_refused_with_what_to_run(tmp_path):
    pretrained = tmp_path / "pretrain-poisson-s0"
    os.makedirs(f"{pretrained}-x2")
    with pytest.raises(UserError, match="has not finished; run the study's sweep with its length check") as info:
        ps.doubled(str(pretrained))
    assert is_expected(info.value) and f"{pretrained}-x2" in str(info.value)
    with open(f"{pretrained}-x2/summary.json", "w") as f:
        json.dump({"test_rel_l2": 0.01}, f)
    assert ps.doubled(str(pretrained) + "/") == f"{pretrained}-x2"
