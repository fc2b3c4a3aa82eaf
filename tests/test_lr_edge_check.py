"""experiments.lr_edge_check: which seeds of a point marked "(LR edge)" are trained beyond the grid, at which rate,
and what the point's median becomes when a seed prefers that rate."""

import json

import pytest

from experiments import lr_edge_check as lec
from fno_jax.runtime.cli_errors import UserError, is_expected

GRID = (1e-4, 1e-3, 1e-2)


@pytest.mark.parametrize(
    "grid, end, rate",
    [
        ((1e-3, 3e-3, 1e-2, 3e-2), "top", 1e-1),
        ((1e-3, 3e-3, 1e-2, 3e-2), "bottom", 3e-4),
        ((1e-4, 3e-4, 1e-3, 3e-3), "top", 1e-2),
        ((1e-4, 3e-4, 1e-3, 3e-3), "bottom", 3e-5),
        (GRID, "top", 1e-1),
        (GRID, "bottom", 1e-5),
        ((3e-2, 1e-4, 1e-2, 1e-3), "top", 1e-1),  # unsorted; an uneven top step (3x) continues on the series
    ],
)
def test_the_rate_beyond_continues_the_grid_on_the_1_3_10_series(grid, end, rate):
    assert lec.beyond(grid, end) == rate


def _chosen(n, seed, lr, val, test):
    """A report run: seed's chosen rate `lr` of GRID, with the report's edge fields."""
    end = "top" if lr == GRID[-1] else "bottom" if lr == GRID[0] else None
    return {
        "name": f"finetune-n{n}-lr{lr:g}-s{seed}", "mode": "finetune", "num_train": n, "seed": seed, "task": "poisson",
        "shift": "e5-10", "pretrain": "poisson", "model": {"width": 16, "modes": 8, "depth": 4, "fc_dim": 32},
        "learning_rate": lr, "val_rel_l2": val, "test_rel_l2": test, "lr_at_edge": end is not None, "lr_edge": end,
        "lr_grid": [{"learning_rate": r} for r in GRID], "length_check": False,
    }  # fmt: skip


def test_seeds_at_an_end_train_beyond_it_and_a_seed_that_prefers_it_moves_the_median(tmp_path, monkeypatch):
    runs = [
        _chosen(2, 0, 1e-2, 0.5, 0.50),  # N = 2: three of four seeds at the top -> marked
        _chosen(2, 1, 1e-2, 0.4, 0.40),
        _chosen(2, 2, 1e-2, 0.3, 0.30),
        _chosen(2, 3, 1e-3, 0.2, 0.20),
        _chosen(8, 0, 1e-3, 0.1, 0.10),  # N = 8: one of three at an end -> not marked, never rerun
        _chosen(8, 1, 1e-3, 0.1, 0.10),
        _chosen(8, 2, 1e-4, 0.1, 0.10),
    ]
    (tmp_path / "report.json").write_text(json.dumps({"runs": runs}))
    beyond_val = {0: 0.6, 1: 0.2, 2: 0.35}  # seed 1 prefers the rate beyond (0.2 < 0.4), test error then 0.05
    calls = []

    def fake_rerun(sweep, name, workdir, edit):
        class Config:
            class train:  # noqa: N801 - stands in for config.train
                learning_rate = None

        edit(Config)
        seed = int(name.rsplit("-s", 1)[1])
        calls.append((name, Config.train.learning_rate, workdir))
        return {"val_rel_l2": beyond_val[seed], "test_rel_l2": 0.05 if seed == 1 else 0.9}

    monkeypatch.setattr(lec, "rerun", fake_rerun)
    rows = lec.check(str(tmp_path))
    assert [(name, rate) for name, rate, _ in calls] == [(f"finetune-n2-lr0.01-s{s}", 0.1) for s in (0, 1, 2)]
    assert all(w == str(tmp_path / "lr_edge_check" / f"{name}-beyond0.1") for name, _, w in calls)
    [row] = rows
    assert row["point"] == "poisson e5-10 w16m8 finetune (poisson), N = 2" and row["side"] == "top"
    assert [s["moves"] for s in row["seeds"]] == [False, True, False] and row["moved"] == 1
    assert row["median_reported"] == pytest.approx(0.35) and row["range_reported"] == [0.2, 0.5]
    assert row["median_after"] == pytest.approx((0.2 + 0.3) / 2) and row["range_after"] == [0.05, 0.5]
    assert json.loads((tmp_path / "lr_edge_check" / "results.json").read_text()) == rows
    assert lec.check(str(tmp_path), num_train=[8]) == []  # no marked point at N = 8
    assert lec.check(str(tmp_path), only="e10-20") == [] and len(lec.check(str(tmp_path), only="e5-10")) == 1


def test_a_sweep_without_its_report_is_refused_with_the_command_that_writes_it(tmp_path):
    with pytest.raises(UserError, match=r"report.json does not exist: run `python -m experiments.report") as info:
        lec.check(str(tmp_path))
    assert is_expected(info.value)
