"""One training path for a group of K >= 1 runs (`fno_jax.training.trainer`): one restore policy, every mode a lone
run has (zero-shot, stored data, host-fed batches), and a group of one is the lone run bit for bit."""

import json
import logging
import os
import shutil

import ml_collections
import numpy as np
import pytest
from conftest import params_equal, relative_difference, tiny_config
from multihost_worker import corrupt_step
from test_packed import RTOL, group_configs, records

from fno_jax import checkpoint, train
from fno_jax.config import ConfigError
from fno_jax.data import generate_dataset
from fno_jax.runtime.cli_errors import is_expected, one_line


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    """An uninterrupted group of two runs (seeds 0, 1; rates 1e-3, 2e-3), steps 5 and 10 checkpointed."""
    root = tmp_path_factory.mktemp("group")
    paths = [str(root / str(k)) for k in range(2)]
    return train.train_and_evaluate_packed(group_configs(), paths), paths


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


def test_a_group_of_one_is_the_lone_run_bit_for_bit(tmp_path):
    config = tiny_config(**{"data.seed": 0})
    alone = train.train_and_evaluate(config, str(tmp_path / "alone"))
    (grouped,) = train.train_and_evaluate_packed([config], [str(tmp_path / "grouped")])
    assert params_equal(checkpoint.load_params(tmp_path / "alone"), checkpoint.load_params(tmp_path / "grouped"))
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
    assert relative_difference(a, b) < RTOL  # a vmapped step sums in another order (tests/test_packed.py)
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
