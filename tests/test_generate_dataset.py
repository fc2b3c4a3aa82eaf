"""The generate job: stored splits equal the in-memory generated ones, on any device count and any zarr chunking;
training from the stored dataset equals training from `generate`; interrupted writes are detected and finished;
bad configs and mismatched datasets fail with errors that name the key or path and the fix."""

import os

import ml_collections
import numpy as np
import pytest
from conftest import params_equal, tiny_config

from experiments.configs import generate as generate_configs
from experiments.configs import pretrain
from fno_jax import checkpoint, train
from fno_jax.config import ConfigError
from fno_jax.data import (
    SPLITS,
    DatasetNotFoundError,
    IncompatibleDatasetError,
    IncompleteDatasetError,
    build,
    generate_dataset,
)
from fno_jax.data.generate import generate_split
from fno_jax.model import channels
from fno_jax.model.normalization import NormStats, source_norms, stats_from_norms
from solvers.families import TASK_NAMES, make_task


def _override(config, overrides):
    config.update_from_flattened_dict(overrides)
    return config


def gen_config(**overrides):
    """The tiny run's data (16x16, 32/16/16 samples, generate_chunk 16) stored in zarr chunks of 8 samples."""
    config = tiny_config()
    with config.unlocked():
        config.dataset = ml_collections.ConfigDict({"chunk": 8})
    return _override(config, overrides)


def tiny_run(**overrides):
    return tiny_config(**{"train.num_steps": 3, "train.eval_every": 3, "train.checkpoint_every": 3, **overrides})


def assert_same_arrays(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("gen") / "poisson")
    return generate_dataset(gen_config(), path)


# ---- the configs -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASK_NAMES)
def test_config_files_make_valid_generate_jobs(task):
    for variant in ("", ",runlocal", ",tiny"):
        config = generate_configs.get_config(task + variant)
        assert config.job == "generate" and config.task == task
        build.validate_generate_config(config)
    # Each variant stores exactly the data its pretrain.py variant generates: the keys the values depend on agree.
    for variant in ("", ",runlocal", ",tiny"):
        gen, run = generate_configs.get_config(task + variant), pretrain.get_config(task + variant)
        assert gen.seed == run.seed and gen.task_ranges.to_dict() == run.task_ranges.to_dict()
        for key in ("resolution", "length", "num_train", "num_val", "num_test", "generate_chunk"):
            assert gen.data[key] == run.data[key], (variant, key)


def test_config_file_rejects_unknown_arguments():
    with pytest.raises(ValueError, match="must be one of"):
        generate_configs.get_config("heat")
    with pytest.raises(ValueError, match="unknown variant 'huge'"):
        generate_configs.get_config("poisson,huge")


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"task": "heat"}, "config.task"),
        ({"data.resolution": 15}, "config.data.resolution"),
        ({"data.num_val": 0}, "config.data.num_val"),
        ({"data.generate_chunk": 0}, "config.data.generate_chunk"),
        ({"data.length": -1.0}, "config.data.length"),
        ({"dataset.chunk": 0}, "config.dataset.chunk"),
        ({"seed": -1}, "config.seed"),
        ({"task_ranges.eigenvalue_range": (5.0, 1.0)}, "config.task_ranges"),
    ],
)
def test_bad_generate_config_names_key(tmp_path, overrides, key):
    config = gen_config()
    with config.unlocked():
        _override(config, overrides)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        generate_dataset(config, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()  # nothing written before the config is known good


def test_missing_config_key_is_named(tmp_path):
    config = gen_config()
    del config.data["length"]
    with pytest.raises(ConfigError, match=r"config\.data\.length is missing"):
        generate_dataset(config, tmp_path / "ds")


# ---- the stored values ------------------------------------------------------------------------------------------
def test_stored_splits_are_the_generated_splits(stored):
    c = gen_config()
    task = make_task(c.task, c.task_ranges, c.data.length)
    assert stored.task == task.spec() and stored.resolution == 16
    for split, num in (("train", 32), ("val", 16), ("test", 16)):
        assert stored.num(split) == num
        expected = generate_split(task, c.seed, split, num, 16, chunk=c.data.generate_chunk)
        assert_same_arrays(stored.read(split, slice(None)), expected)


def test_zarr_chunk_does_not_change_values(stored, tmp_path):
    # 12 straddles the 16-sample generate blocks; 32 holds two of them.
    for chunk in (12, 32):
        other = generate_dataset(gen_config(**{"dataset.chunk": chunk}), tmp_path / f"c{chunk}")
        assert other.metadata["chunk"] == chunk
        for split in SPLITS:
            assert_same_arrays(other.read(split, slice(None)), stored.read(split, slice(None)))


def test_normalization_stats_are_the_train_splits(stored):
    train_split = stored.read("train", slice(None))
    coeffs = channels.coefficients(train_split, "poisson")
    expected = stats_from_norms(source_norms(train_split["source"]), coeffs)
    got = NormStats.from_dict(stored.normalization)
    # Chunked and whole-split norms may sum the 16*16 squares in another order: float32 rounding <= n^2 eps.
    rtol = 256 * np.finfo(np.float32).eps
    np.testing.assert_allclose(got.source_scale, expected.source_scale, rtol=rtol, atol=0)
    np.testing.assert_allclose(got.coeff_scale, expected.coeff_scale, rtol=rtol, atol=0)


# ---- resuming ---------------------------------------------------------------------------------------------------
def recording(calls: list, fail_on: int | None = None):
    """generate_split that records (split, start) of each call and raises on call number `fail_on`."""

    def wrapped(*args, **kwargs):
        calls.append((args[2], kwargs["start"]))
        if len(calls) == fail_on:
            raise KeyboardInterrupt  # as if the job were killed here
        return generate_split(*args, **kwargs)

    return wrapped


def test_interrupted_generate_is_detected_then_finished(stored, tmp_path, monkeypatch):
    path = str(tmp_path / "cut")
    calls = []
    # Blocks of 16 samples, stored chunks of 8: killed while making train samples [16, 32), after [0, 16) is stored.
    monkeypatch.setattr(build, "generate_split", recording(calls, fail_on=2))
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(gen_config(), path)
    assert not os.path.exists(os.path.join(path, "metadata.json"))

    with pytest.raises(IncompleteDatasetError, match=f"{path}.*Re-run the generate command"):
        train.train_and_evaluate(tiny_run(**{"data.source": path}), str(tmp_path / "run"))

    calls.clear()
    monkeypatch.setattr(build, "generate_split", recording(calls))
    resumed = generate_dataset(gen_config(), path)
    assert calls == [("train", 16), ("val", 0), ("test", 0)]  # only what was missing
    for split in SPLITS:
        assert_same_arrays(resumed.read(split, slice(None)), stored.read(split, slice(None)))
    assert resumed.normalization == stored.normalization

    # Done: a rerun makes nothing; a rerun with another generate_chunk (other values) is refused.
    calls.clear()
    generate_dataset(gen_config(), path)
    assert calls == []
    with pytest.raises(ConfigError, match=r"generate_chunk=16"):
        generate_dataset(gen_config(**{"data.generate_chunk": 8}), path)


def test_unfinished_dataset_with_other_generate_chunk_is_not_resumed(tmp_path, monkeypatch):
    path = str(tmp_path / "cut")
    monkeypatch.setattr(build, "generate_split", recording([], fail_on=1))
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(gen_config(), path)
    with pytest.raises(ConfigError, match=r"generate_chunk"):
        generate_dataset(gen_config(**{"data.generate_chunk": 8}), path)


# ---- training from the stored dataset ---------------------------------------------------------------------------
def test_training_from_stored_equals_training_from_generate(stored, tmp_path):
    from_generate = tmp_path / "generate"
    from_stored = tmp_path / "stored"
    train.train_and_evaluate(tiny_run(), str(from_generate))
    train.train_and_evaluate(tiny_run(**{"data.source": stored.path}), str(from_stored))
    # Same input bits, same program: the params agree exactly.
    assert params_equal(checkpoint.load_params(from_generate), checkpoint.load_params(from_stored))


@pytest.mark.parametrize(
    "overrides, error, pattern",
    [
        ({"data.resolution": 32}, IncompatibleDatasetError, r"resolution 16 .*data\.resolution=16"),
        ({"data.num_train": 64, "train.batch_size": 8}, ConfigError, r"num_train=64 exceeds .*{path}"),
        ({"data.num_val": 32}, ConfigError, r"num_val=32 exceeds .*{path}"),
        ({"task": "helmholtz"}, IncompatibleDatasetError, r"{path} holds task 'poisson'"),
    ],
)
def test_training_on_a_mismatched_dataset_fails_clearly(stored, tmp_path, overrides, error, pattern):
    config = tiny_run(**{"data.source": stored.path, **overrides})
    with pytest.raises(error, match=pattern.format(path=stored.path)):
        train.train_and_evaluate(config, str(tmp_path / "run"))


def test_training_on_a_missing_dataset_names_the_path(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match=f"no dataset at {missing}"):
        train.train_and_evaluate(tiny_run(**{"data.source": missing}), str(tmp_path / "run"))


@pytest.mark.parametrize("overrides", [{"task_ranges.eigenvalue_range": (5.0, 10.0)}, {"data.length": 2.0}])
def test_training_on_a_dataset_of_other_ranges_or_length_fails(stored, tmp_path, overrides):
    config = tiny_run(**{"data.source": stored.path, **overrides})
    with pytest.raises(ValueError, match=stored.path):
        train.train_and_evaluate(config, str(tmp_path / "run"))
