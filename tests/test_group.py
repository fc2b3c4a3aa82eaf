"""One training path for a group of K >= 1 runs (`fno_jax.training.trainer`, `fno_jax.training.packing`): K runs as
one program equal K runs one at a time, one restore policy (a killed group resumes bitwise, a damaged newest
checkpoint falls back to the previous common step), every mode a lone run has (zero-shot, stored data, host-fed
batches), a group of one is the lone run bit for bit, and a group too big for the memory limit is trained in parts.

Tolerance: a vmapped matmul may sum in another order than the unbatched one, ~1e-7 relative per step; Adam turns a
rounding-level change of a near-zero gradient component into up to one learning rate per step, so after 10 steps of
lr 1e-3 the params may move by ~1e-5 of their size. 1e-4 relative is a loose bound that a run trained on the wrong
batch, with another run's rate or from another init exceeds by orders of magnitude (two seeds differ by ~1).
"""

import json
import logging
import os
import shutil

import ml_collections
import numpy as np
import pytest
from conftest import params_equal, relative_difference, tiny_config
from multihost_worker import corrupt_step
from test_train import crash_after

from fno_jax import checkpoint, train
from fno_jax.config import ConfigError
from fno_jax.data import generate_dataset
from fno_jax.runtime.cli_errors import is_expected, one_line
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
def group(tmp_path_factory):
    """An uninterrupted group of two runs (seeds 0, 1; rates 1e-3, 2e-3), steps 5 and 10 checkpointed."""
    root = tmp_path_factory.mktemp("group")
    paths = [str(root / str(k)) for k in range(2)]
    return train.train_and_evaluate_packed(group_configs(), paths), paths


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


def test_a_damaged_newest_checkpoint_of_one_run_falls_back_to_the_previous_common_step(group, tmp_path, caplog):
    summaries, reference = group
    paths = [str(tmp_path / str(k)) for k in range(2)]
    for source, target in zip(reference, paths, strict=True):
        shutil.copytree(source, target)
        os.remove(os.path.join(target, "summary.json"))
    corrupt_step(os.path.join(paths[1], "checkpoints", "10"))
    with caplog.at_level(logging.WARNING):
        resumed = train.train_and_evaluate_packed(group_configs(), paths)
    assert any("checkpoint" in r.getMessage() and "10 could not be restored" in r.getMessage() for r in caplog.records)
    assert os.listdir(os.path.join(paths[1], "broken_checkpoints")) == ["10"]  # set aside, not deleted
    assert not os.path.exists(os.path.join(paths[0], "broken_checkpoints"))
    for k in range(2):  # resumed from step 5: the same steps again, the same bits
        assert params_equal(checkpoint.load_params(paths[k]), checkpoint.load_params(reference[k]))
        assert [r["step"] for r in records(paths[k])] == [5, 10]
        assert resumed[k]["test_rel_l2"] == summaries[k]["test_rel_l2"]


def test_packed_runs_equal_runs_one_at_a_time(sequential, group):
    (seq, seq_root), (pk, pk_paths) = sequential, group
    for k in range(2):
        a, b = checkpoint.load_params(seq_root / str(k)), checkpoint.load_params(pk_paths[k])
        assert relative_difference(b, a) < RTOL
        assert pk[k]["best_step"] == seq[k]["best_step"] and pk[k]["seed"] == k
        assert pk[k]["learning_rate"] == RATES[k] and pk[k]["packed_runs"] == 2
        np.testing.assert_allclose(pk[k]["test_rel_l2"], seq[k]["test_rel_l2"], rtol=RTOL)
        # Every file a run leaves is there, with the same records (values to rounding).
        assert workdir_files(pk_paths[k]) == workdir_files(seq_root / str(k))
        assert set(pk[k]) == set(seq[k]) and seq[k]["packed_runs"] == 1
        ra, rb = records(seq_root / str(k)), records(pk_paths[k])
        assert [sorted(r) for r in ra] == [sorted(r) for r in rb]
        for x, y in zip(ra, rb, strict=True):
            np.testing.assert_allclose([y[key] for key in sorted(y)], [x[key] for key in sorted(x)], rtol=RTOL)
    # The two runs really differ (own seed, own rate): the comparison above can fail.
    assert relative_difference(checkpoint.load_params(pk_paths[0]), checkpoint.load_params(pk_paths[1])) > 0.1


def test_a_killed_group_resumes_bitwise(group, tmp_path, monkeypatch):
    _, reference = group
    paths = [str(tmp_path / str(k)) for k in range(2)]
    with monkeypatch.context() as patch:
        crash_after(5, patch)  # dies as the first run logs step 5: the second has not saved step 5 yet
        with pytest.raises(KeyboardInterrupt):
            train.train_and_evaluate_packed(group_configs(), paths)
    assert checkpoint.Checkpointer(paths[0], read_only=True).steps() == [5]
    assert not checkpoint.Checkpointer(paths[1], read_only=True).steps()
    with monkeypatch.context() as patch:
        crash_after(10, patch)  # no step common to both: starts over, and dies at step 10 with step 5 saved by both
        with pytest.raises(KeyboardInterrupt):
            train.train_and_evaluate_packed(group_configs(), paths)
    assert checkpoint.Checkpointer(paths[1], read_only=True).steps() == [5]
    train.train_and_evaluate_packed(group_configs(), paths)  # resumes both from step 5
    for k in range(2):
        assert params_equal(checkpoint.load_params(paths[k]), checkpoint.load_params(reference[k]))
        assert [r["step"] for r in records(paths[k])] == [5, 10]


def test_a_group_over_the_memory_limit_is_trained_in_parts(tmp_path):
    configs = group_configs() + [tiny_config(seed=2, **{"data.seed": 0})]
    per_run = packed_step_bytes(configs[0])
    assert plan_parts(configs, None) == [[0, 1, 2]]
    assert plan_parts(configs, int(2.1 * per_run / 0.8)) == [[0, 1], [2]]
    assert plan_parts(configs, 1) == [[0], [1], [2]]
    paths = [str(tmp_path / str(k)) for k in range(3)]
    summaries = train.train_and_evaluate_packed(configs, paths, memory_limit_bytes=1)
    assert [s["packed_runs"] for s in summaries] == [1, 1, 1] and [s["seed"] for s in summaries] == [0, 1, 2]


def test_pack_keys_and_refusals(tmp_path):
    a, b = group_configs()
    assert pack_key(a) == pack_key(b)
    other_n = tiny_config(**{"data.seed": 0, "data.num_train": 16})
    own_pool = tiny_config(seed=1)  # data.seed = -1: its pool follows its seed
    assert group_by_pack_key([a, other_n, b, own_pool]) == [[0, 2], [1], [3]]
    with pytest.raises(ConfigError, match="must differ only in seed, train.learning_rate and data.pool_seed"):
        train.train_and_evaluate_packed([a, other_n], [str(tmp_path / "x"), str(tmp_path / "y")])
    assert not os.path.exists(tmp_path / "x")


def test_a_group_resumed_with_another_width_stops_with_one_line_and_its_metrics_untouched(group, tmp_path):
    _, reference = group
    paths = [str(tmp_path / str(k)) for k in range(2)]
    for source, target in zip(reference, paths, strict=True):
        shutil.copytree(source, target)
    before = [open(os.path.join(p, "metrics.jsonl")).read() for p in paths]
    with pytest.raises(ConfigError, match=r"different config\.model .*use a new --workdir") as info:
        train.train_and_evaluate_packed(group_configs(**{"model.width": 12}), paths)
    assert is_expected(info.value) and "\n" not in one_line(info.value)
    assert [open(os.path.join(p, "metrics.jsonl")).read() for p in paths] == before
    assert checkpoint.Checkpointer(paths[1], read_only=True).steps() == [5, 10]


def test_a_group_of_one_is_the_lone_run_bit_for_bit(sequential, tmp_path):
    (alone, *_), root = sequential  # seed 0 of one pool, rate 1e-3, trained alone
    config = group_configs()[0]
    (grouped,) = train.train_and_evaluate_packed([config], [str(tmp_path / "grouped")])
    assert params_equal(checkpoint.load_params(root / "0"), checkpoint.load_params(tmp_path / "grouped"))
    timing = ("wall_s", "compile_s")
    assert {k: v for k, v in grouped.items() if k not in timing} == {k: v for k, v in alone.items() if k not in timing}


def test_zero_shot_as_a_group_of_three(tiny_run, tmp_path):
    pretrained, _ = tiny_run
    configs = [tiny_config(seed=s, init_from=pretrained, **{"data.seed": 1, "train.num_steps": 0}) for s in range(3)]
    alone = train.train_and_evaluate(configs[0], str(tmp_path / "alone"))
    grouped = train.train_and_evaluate_packed(configs, [str(tmp_path / str(k)) for k in range(3)])
    assert [s["mode"] for s in grouped] == ["zeroshot"] * 3 and [s["seed"] for s in grouped] == [0, 1, 2]
    for summary in grouped:  # nothing trains, so every run is the pretrained model on the same test set
        np.testing.assert_allclose(summary["test_rel_l2"], alone["test_rel_l2"], rtol=1e-6)
        np.testing.assert_allclose(summary["val_rel_l2"], alone["val_rel_l2"], rtol=1e-6)
        assert summary["num_train"] == 0 and summary["best_step"] == 0


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    config = tiny_config(**{"data.seed": 0})
    with config.unlocked():
        config.dataset = ml_collections.ConfigDict({"chunk": 8})
    return generate_dataset(config, str(tmp_path_factory.mktemp("stored") / "poisson")).path


@pytest.mark.parametrize("loader", ["device", "host"])
def test_stored_data_as_a_group_of_three(stored, tmp_path, loader):
    common = {"data.source": stored, "data.seed": 0, "data.num_train": 16, "data.loader": loader}
    configs = [tiny_config(seed=s, **common) for s in range(3)]
    grouped = train.train_and_evaluate_packed(configs, [str(tmp_path / str(k)) for k in range(3)])
    alone = train.train_and_evaluate(configs[2], str(tmp_path / "alone"))
    assert [s["seed"] for s in grouped] == [0, 1, 2] and grouped[2]["packed_runs"] == 3
    a, b = checkpoint.load_params(tmp_path / "2"), checkpoint.load_params(tmp_path / "alone")
    assert relative_difference(a, b) < RTOL  # a vmapped step sums in another order (module docstring)
    np.testing.assert_allclose(grouped[2]["test_rel_l2"], alone["test_rel_l2"], rtol=RTOL)
    assert grouped[2]["best_step"] == alone["best_step"]


def test_host_fed_and_device_resident_groups_train_alike(stored, tmp_path):
    def run(loader):
        common = {"data.source": stored, "data.seed": 0, "data.num_train": 16, "data.loader": loader}
        paths = [str(tmp_path / loader / str(k)) for k in range(2)]
        train.train_and_evaluate_packed([tiny_config(seed=s, **common) for s in range(2)], paths)
        return [checkpoint.load_params(p) for p in paths]

    # The same batches in the same order: the host feed reads on the host what the device feed gathers in the step.
    # The two feeds compile to different programs, which XLA may round differently (bitwise equal under its default
    # CPU flags, 7e-8 apart under the suite's fast-compile flags); a batch out of place moves the params by ~1e-2.
    for host, device in zip(run("host"), run("device"), strict=True):
        assert relative_difference(host, device) < 1e-6


def test_the_summaries_say_how_many_runs_trained_together(group):
    summaries, paths = group
    assert [s["packed_runs"] for s in summaries] == [2, 2]
    saved = [json.load(open(os.path.join(p, "summary.json"))) for p in paths]
    assert [s["seed"] for s in saved] == [0, 1]


def test_runs_with_their_own_pools_train_as_one_group(tmp_path):
    # One data seed (validation and test sets), three training pools: each run normalizes with its own pool's
    # statistics, as it does trained alone.
    configs = [tiny_config(seed=s, **{"data.seed": 0, "data.pool_seed": 10 + s}) for s in range(3)]
    grouped = train.train_and_evaluate_packed(configs, [str(tmp_path / str(k)) for k in range(3)])
    alone = train.train_and_evaluate(configs[1], str(tmp_path / "alone"))
    stats = [checkpoint.load_meta(tmp_path / str(k))[1].norm_stats for k in range(3)]
    assert len({s.source_scale for s in stats}) == 3  # three pools, three statistics
    assert stats[1] == checkpoint.load_meta(tmp_path / "alone")[1].norm_stats
    a, b = checkpoint.load_params(tmp_path / "1"), checkpoint.load_params(tmp_path / "alone")
    assert relative_difference(a, b) < RTOL
    np.testing.assert_allclose(grouped[1]["test_rel_l2"], alone["test_rel_l2"], rtol=RTOL)
    with pytest.raises(ConfigError, match="data.pool_seed=3 draws a generated training pool"):
        train.train_and_evaluate(tiny_config(**{"data.pool_seed": 3, "data.source": "stream"}), str(tmp_path / "s"))
