"""Packed runs (`fno_jax.training.packing`): K runs as one program equal K runs one at a time, resume bitwise after a
kill, and a group too big for the memory limit is trained in parts.

Tolerance: a vmapped matmul may sum in another order than the unbatched one, ~1e-7 relative per step; Adam turns a
rounding-level change of a near-zero gradient component into up to one learning rate per step, so after 10 steps of
lr 1e-3 the params may move by ~1e-5 of their size. 1e-4 relative is a loose bound that a run trained on the wrong
batch, with another run's rate or from another init exceeds by orders of magnitude (two seeds differ by ~1).
"""

import json
import os

import numpy as np
import pytest
from conftest import params_equal, relative_difference, tiny_config
from test_train import crash_after

from fno_jax import checkpoint, train
from fno_jax.config import ConfigError
from fno_jax.train import train_and_evaluate_packed
from fno_jax.training.packing import group_by_pack_key, pack_key, packed_step_bytes, plan_parts

RTOL = 1e-4
RATES = (1e-3, 2e-3)


def group_configs(**overrides):
    """Two runs of one pool: seeds 0 and 1, rates 1e-3 and 2e-3."""
    return [tiny_config(seed=k, **{"data.seed": 0, "train.learning_rate": RATES[k], **overrides}) for k in range(2)]


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    root = tmp_path_factory.mktemp("sequential")
    return [train.train_and_evaluate(c, str(root / str(k))) for k, c in enumerate(group_configs())], root


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("packed")
    return train_and_evaluate_packed(group_configs(), [str(root / str(k)) for k in range(2)]), root


def workdir_files(path) -> list[str]:
    """The files of a workdir, TensorBoard's named without the time and host they were opened on."""
    names = ["events.out.tfevents" if f.startswith("events.out.tfevents.") else f for f in os.listdir(path)]
    return sorted(names)


def records(path):
    """metrics.jsonl without wall-clock values, nested values (the L2 bands) flattened to one key each."""
    lines = [json.loads(line) for line in open(os.path.join(path, "metrics.jsonl"))]
    out = []
    for r in lines:
        flat = {k: v for k, v in r.items() if k != "steps_per_s" and not isinstance(v, dict)}
        flat.update({f"{k}_{part}": x for k, v in r.items() if isinstance(v, dict) for part, x in v.items()})
        out.append(flat)
    return out


def test_packed_runs_equal_runs_one_at_a_time(sequential, packed):
    (seq, seq_root), (pk, pk_root) = sequential, packed
    for k in range(2):
        a, b = checkpoint.load_params(seq_root / str(k)), checkpoint.load_params(pk_root / str(k))
        assert relative_difference(b, a) < RTOL
        assert pk[k]["best_step"] == seq[k]["best_step"] and pk[k]["seed"] == k
        assert pk[k]["learning_rate"] == RATES[k] and pk[k]["packed_runs"] == 2
        np.testing.assert_allclose(pk[k]["test_rel_l2"], seq[k]["test_rel_l2"], rtol=RTOL)
        # Every file a run leaves is there, with the same records (values to rounding).
        assert workdir_files(pk_root / str(k)) == workdir_files(seq_root / str(k))
        assert set(pk[k]) == set(seq[k]) and seq[k]["packed_runs"] == 1
        ra, rb = records(seq_root / str(k)), records(pk_root / str(k))
        assert [sorted(r) for r in ra] == [sorted(r) for r in rb]
        for x, y in zip(ra, rb, strict=True):
            np.testing.assert_allclose([y[key] for key in sorted(y)], [x[key] for key in sorted(x)], rtol=RTOL)
    # The two runs really differ (own seed, own rate): the comparison above can fail.
    assert relative_difference(checkpoint.load_params(pk_root / "0"), checkpoint.load_params(pk_root / "1")) > 0.1


def test_a_killed_group_resumes_bitwise(packed, tmp_path, monkeypatch):
    _, reference = packed
    paths = [str(tmp_path / str(k)) for k in range(2)]
    with monkeypatch.context() as patch:
        crash_after(5, patch)  # dies as the first run logs step 5: the second has not saved step 5 yet
        with pytest.raises(KeyboardInterrupt):
            train_and_evaluate_packed(group_configs(), paths)
    assert checkpoint.Checkpointer(paths[0], read_only=True).steps() == [5]
    assert not checkpoint.Checkpointer(paths[1], read_only=True).steps()
    with monkeypatch.context() as patch:
        crash_after(10, patch)  # no step common to both: starts over, and dies at step 10 with step 5 saved by both
        with pytest.raises(KeyboardInterrupt):
            train_and_evaluate_packed(group_configs(), paths)
    assert checkpoint.Checkpointer(paths[1], read_only=True).steps() == [5]
    train_and_evaluate_packed(group_configs(), paths)  # resumes both from step 5
    for k in range(2):
        assert params_equal(checkpoint.load_params(paths[k]), checkpoint.load_params(reference / str(k)))
        assert [r["step"] for r in records(paths[k])] == [5, 10]


def test_a_group_over_the_memory_limit_is_trained_in_parts(tmp_path):
    configs = group_configs() + [tiny_config(seed=2, **{"data.seed": 0})]
    per_run = packed_step_bytes(configs[0])
    assert plan_parts(configs, None) == [[0, 1, 2]]
    assert plan_parts(configs, int(2.1 * per_run / 0.8)) == [[0, 1], [2]]
    assert plan_parts(configs, 1) == [[0], [1], [2]]
    summaries = train_and_evaluate_packed(configs, [str(tmp_path / str(k)) for k in range(3)], memory_limit_bytes=1)
    assert [s["packed_runs"] for s in summaries] == [1, 1, 1] and [s["seed"] for s in summaries] == [0, 1, 2]


def test_pack_keys_and_refusals(tmp_path):
    a, b = group_configs()
    assert pack_key(a) == pack_key(b)
    other_n = tiny_config(**{"data.seed": 0, "data.num_train": 16})
    own_pool = tiny_config(seed=1)  # data.seed = -1: its pool follows its seed
    assert group_by_pack_key([a, other_n, b, own_pool]) == [[0, 2], [1], [3]]
    with pytest.raises(ConfigError, match="must differ only in seed, train.learning_rate and data.pool_seed"):
        train_and_evaluate_packed([a, other_n], [str(tmp_path / "x"), str(tmp_path / "y")])
    assert not os.path.exists(tmp_path / "x")
