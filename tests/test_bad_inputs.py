"""Bad inputs across the product, each refused before any work with a message that says what to change.

Config mistakes are checked by `validate_config`; run-level mistakes (datasets, checkpoints, init_from, workdirs) by
`train_and_evaluate`, which must fail before generating data or training. Checkpoints are written directly with
`Checkpointer` (a fresh init), so no test here trains.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorstore as ts
from conftest import main_cli, run_python, tiny_config

from experiments.configs.finetune import get_config as finetune_config
from fno_jax import checkpoint
from fno_jax.config import ConfigError, model_size, validate_config
from fno_jax.data import (
    DatasetFormatError,
    DatasetNotFoundError,
    IncompatibleDatasetError,
    IncompleteDatasetError,
    write_dataset,
)
from fno_jax.model import FNO, channels
from fno_jax.model.normalization import NormStats
from fno_jax.storage.workdir import RunMeta
from fno_jax.train import train_and_evaluate
from fno_jax.training.finetune import TransferError
from solvers.families import make_task


def _set(path, value):
    """Set a value, replacing the field so that a value of another type gets through (as from a JSON config)."""

    def mutate(c):
        *parents, leaf = path.split(".")
        node = c
        for p in parents:
            node = node[p]
        node.unlock()
        if leaf in node:
            del node[leaf]
        node[leaf] = value

    return mutate


_add_key = _set


def _delete_key(path):
    def mutate(c):
        *parents, leaf = path.split(".")
        node = c
        for p in parents:
            node = node[p]
        node.unlock()
        del node[leaf]

    return mutate


# (mutation of a valid tiny config, the informative part of the message)
BAD_CONFIGS = {
    "typo_key": (_add_key("train.lerning_rate", 1e-3), r"unknown config key config\.train\.lerning_rate\. "
                 r"Did you mean config\.train\.learning_rate\?"),
    "missing_key": (_delete_key("model.fc_dim"), r"config\.model\.fc_dim is missing; start configs from "
                    r"fno_jax\.config\.default_config\(\)"),
    "nan_learning_rate": (_set("train.learning_rate", float("nan")), r"config\.train\.learning_rate=nan is not a "
                          r"finite number"),
    "infinite_length": (_set("data.length", float("inf")), r"config\.data\.length=inf is not a finite number"),
    "unknown_task": (_set("task", "poison"), r"config\.task='poison' is not one of \('poisson'"),
    "unknown_layout": (_set("data.layout", "heat"), r"config\.data\.layout='heat' must be empty"),
    "odd_resolution": (_set("data.resolution", 15), r"config\.data\.resolution=15 must be an even number >= 8"),
    "too_many_modes": (_set("model.modes", 9), r"config\.model\.modes=9 exceeds \(resolution \+ padding\) / 2 = 8"),
    "zero_width": (_set("model.width", 0), r"config\.model\.width=0 must be >= 1"),
    "negative_padding": (_set("model.padding", -2), r"config\.model\.padding=-2 must be >= 0"),
    "darcy_bc": (
        lambda c: (_set("task", "darcy")(c), _set("task_options.bc", "neumann")(c)),
        r"config\.task='darcy' with config\.task_ranges/task_options: bc must be one of",
    ),
    "batch_over_data": (_set("train.batch_size", 64), r"config\.train\.batch_size=64 is larger than the training "
                        r"data \(config\.data\.num_train=32\); use batch_size <= 32"),
    "pool_under_train": (_set("data.num_train_pool", 16), r"config\.data\.num_train=32 exceeds "
                         r"config\.data\.num_train_pool=16"),
    "negative_lr": (_set("train.learning_rate", -1e-3), r"config\.train\.learning_rate=-0\.001 must be positive"),
    "zero_steps_scratch": (_set("train.num_steps", 0), r"num_steps=0 evaluates a pretrained model \(zero-shot\) "
                           r"and needs config\.init_from"),
    "inverted_range": (_set("task_ranges.eigenvalue_range", (5.0, 1.0)), r"eigenvalue_range=\(5\.0, 1\.0\) is "
                       r"inverted"),
    "non_integer_omega": (_set("task_ranges.omega_range", (1.5, 10)), r"omega_range=\(1\.5, 10\) must hold "
                          r"integers"),
    "range_not_pair": (_set("task_ranges.ratio_range", (0.2, 0.5, 1.0)), r"ratio_range=\(0\.2, 0\.5, 1\.0\) must "
                       r"be a pair"),
    "bad_dtype": (_set("train.dtype", "float16"), r"config\.train\.dtype='float16' is not one of \('float32', "
                  r"'bfloat16'\)"),
    "bad_parallel": (_set("train.parallel", "fsdp"), r"config\.train\.parallel='fsdp' is not one of"),
    "bad_norm_stats": (_set("finetune.norm_stats", "mine"), r"config\.finetune\.norm_stats='mine' is not one of"),
    "negative_checkpoint_every": (_set("train.checkpoint_every", -1), r"config\.train\.checkpoint_every=-1 must be "
                                  r">= 0"),
    "epochs_without_length": (_set("train.num_epochs", 0), r"num_epochs=0 must be >= 1 when "
                              r"config\.train\.num_steps=-1", {"train.num_steps": -1}),
    "bad_select_by": (_set("train.select_by", "test_loss"), r"config\.train\.select_by='test_loss' is not one of"),
    "bad_precision": (_set("train.matmul_precision", "tf32"), r"config\.train\.matmul_precision='tf32' is not one"),
    "freeze_without_init": (_set("finetune.freeze", ("lift",)), r"config\.finetune\.freeze is set but "
                            r"config\.init_from is empty"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_config_is_rejected_with_its_reason(name):
    mutate, message, *base = BAD_CONFIGS[name]
    config = tiny_config(**(base[0] if base else {}))
    validate_config(config)  # the unmutated config is good
    mutate(config)
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_bad_config_fails_before_touching_the_workdir(tmp_path):
    config = tiny_config(**{"model.modes": 9})
    with pytest.raises(ConfigError, match=r"exceeds \(resolution \+ padding\) / 2"):
        train_and_evaluate(config, str(tmp_path / "never"))
    assert not os.path.exists(tmp_path / "never")


def test_finetune_config_without_init_from():
    config = finetune_config()
    with pytest.raises(ConfigError, match=r"fine-tuning config: set --config\.init_from=PRETRAINED_WORKDIR"):
        validate_config(config)


@pytest.mark.parametrize(("key", "value"), [("model.width", "8"), ("train.num_steps", 10.5), ("seed", "0")])
def test_a_value_of_the_wrong_type_is_refused_by_the_config(key, value):
    # ml_collections checks types on assignment (the command line assigns too): no second check in validate_config.
    with pytest.raises(TypeError, match="Could not override field"):
        tiny_config(**{key: value})


def test_mistyped_key_on_the_command_line(tmp_path):
    result = run_python(main_cli(tmp_path / "w", "--config.train.lerning_rate=0.1"), check=False)
    assert result.returncode != 0 and "lerning_rate" in result.stderr
    assert not os.path.exists(tmp_path / "w")


# ---- checkpoints and init_from ----------------------------------------------------------------------------------
def write_checkpoint(workdir, *, layout="poisson", step=5, **model):
    """A checkpoint as a run would write it (fresh init, Adam state, meta), without training."""
    sizes = {**model_size(tiny_config()), **model}
    net = FNO(out_dim=1, **sizes)
    dummy = jnp.zeros((1, 16, 16, channels.num_channels(layout)))
    params = net.init(jax.random.PRNGKey(0), dummy)["params"]
    opt_state = optax.adam(1e-3).init(params)
    stats = NormStats(1.0, (1.0,) * (channels.num_channels(layout) - 1))
    meta = RunMeta(model=sizes, layout=layout, norm_stats=stats, task_spec={}, config={}, provenance={})
    ckpt = checkpoint.Checkpointer(workdir)
    ckpt.save(step, {"params": params, "opt_state": opt_state}, meta)
    ckpt.close()
    return str(workdir)


def test_init_from_missing_directory(tmp_path):
    config = tiny_config(init_from=str(tmp_path / "nope"))
    with pytest.raises(TransferError, match=r"config\.init_from='.*nope' is not a directory; point it at the "
                       r"workdir of a finished pretraining run"):  # fmt: skip
        train_and_evaluate(config, str(tmp_path / "run"))


def test_init_from_without_checkpoints(tmp_path):
    (tmp_path / "empty").mkdir()
    config = tiny_config(init_from=str(tmp_path / "empty"))
    with pytest.raises(TransferError, match=r"no checkpoint under .*empty/checkpoints; train a model there first"):
        train_and_evaluate(config, str(tmp_path / "run"))


def test_init_from_another_architecture(tmp_path):
    pretrained = write_checkpoint(tmp_path / "pre", width=12)
    config = tiny_config(init_from=pretrained)
    with pytest.raises(TransferError, match=r"is another architecture \(width: pretrained 12 vs config 8\)"):
        train_and_evaluate(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_init_from_layout_that_cannot_be_mapped(tmp_path):
    pretrained = write_checkpoint(tmp_path / "pre", layout="helmholtz")
    config = tiny_config(init_from=pretrained)
    with pytest.raises(TransferError, match=r"channel K11 of layout 'poisson' cannot be mapped from the pretrained "
                       r"layout 'helmholtz'.*data\.layout='mixed'"):  # fmt: skip
        train_and_evaluate(config, str(tmp_path / "run"))


def test_resume_with_another_architecture(tmp_path):
    workdir = write_checkpoint(tmp_path / "run", width=12)
    with pytest.raises(ConfigError, match=r"holds checkpoints of another architecture .*use a new --workdir"):
        train_and_evaluate(tiny_config(), workdir)


def test_resume_with_another_identity(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    stored = json.loads(tiny_config(seed=7).to_json())
    (workdir / "config.json").write_text(json.dumps(stored))
    with pytest.raises(ConfigError, match=r"holds a run with a different config\.seed \(7 there, 0 now\)"):
        train_and_evaluate(tiny_config(), str(workdir))


def test_load_params_without_checkpoint_and_unknown_step(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint under"):
        checkpoint.load_params(tmp_path / "empty")
    workdir = write_checkpoint(tmp_path / "run", step=5)
    with pytest.raises(checkpoint.CheckpointError, match=r"no checkpoint for step 7 .*available steps: \[5\]"):
        checkpoint.load_params(workdir, 7)


# ---- datasets -----------------------------------------------------------------------------------------------------
def write_tiny_dataset(path, *, name="poisson", resolution=16, counts=None):
    """A stored dataset of random arrays (its contents do not matter to these checks)."""
    counts = counts or {"train": 8, "val": 4, "test": 4}
    rng = np.random.default_rng(0)

    def make_batch(split, start, count):
        del split, start
        return {
            "source": rng.normal(size=(count, resolution, resolution)).astype(np.float32),
            "solution": rng.normal(size=(count, resolution, resolution)).astype(np.float32),
            "diffusion": np.tile(np.eye(2, dtype=np.float32) * 0.01, (count, 1, 1)),
            "velocity": np.zeros((count, 2), np.float32),
            "omega": np.zeros(count, np.float32),
            "pde": np.zeros(count, np.int32),
            "volume_fraction": np.full(count, 0.4, np.float32),
        }

    # The spec of the tiny config's task, so that only the defect under test differs.
    spec = make_task(name, tiny_config(name).task_ranges).spec()
    write_dataset(path, make_batch, spec=spec, resolution=resolution, counts=counts, seed=0)
    return str(path)


def _dataset_config(path, **overrides):
    return tiny_config(**{"data.source": str(path), "data.num_train": 8, "data.num_val": 4, "data.num_test": 4,
                          "train.batch_size": 4, **overrides})  # fmt: skip


def test_dataset_path_missing(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"no dataset at .*nowhere: the directory does not exist"):
        train_and_evaluate(_dataset_config(tmp_path / "nowhere"), str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")  # refused before the workdir is made


def test_dataset_incomplete(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(IncompleteDatasetError, match=r"is incomplete \(no metadata\.json\): its write did not"):
        train_and_evaluate(_dataset_config(tmp_path / "half"), str(tmp_path / "run"))


def test_dataset_metadata_not_json_and_wrong_version(tmp_path):
    path = write_tiny_dataset(tmp_path / "ds")
    meta_path = os.path.join(path, "metadata.json")
    meta = json.load(open(meta_path))
    json.dump({**meta, "version": 99}, open(meta_path, "w"))
    with pytest.raises(DatasetFormatError, match=r"has format version 99, but this fno-jax .* reads version 1"):
        train_and_evaluate(_dataset_config(path), str(tmp_path / "run"))
    with open(meta_path, "w") as f:
        f.write("{not json")
    with pytest.raises(DatasetFormatError, match=r"metadata\.json is not valid JSON"):
        train_and_evaluate(_dataset_config(path), str(tmp_path / "run"))


def test_dataset_of_another_resolution_or_task(tmp_path):
    path = write_tiny_dataset(tmp_path / "ds8", resolution=8)
    with pytest.raises(IncompatibleDatasetError, match=r"has resolution 8 but the model expects 16"):
        train_and_evaluate(_dataset_config(path), str(tmp_path / "run"))
    path = write_tiny_dataset(tmp_path / "helm", name="helmholtz")
    with pytest.raises(IncompatibleDatasetError, match=r"holds task 'helmholtz' but the model's channel layout is "
                       r"'poisson'"):  # fmt: skip
        train_and_evaluate(_dataset_config(path), str(tmp_path / "run2"))


def test_dataset_too_small_for_the_config(tmp_path):
    path = write_tiny_dataset(tmp_path / "ds")
    with pytest.raises(ConfigError, match=r"config\.data\.num_val=6 exceeds the 4 samples of split 'val'"):
        train_and_evaluate(_dataset_config(path, **{"data.num_val": 6}), str(tmp_path / "run"))


def test_dataset_with_a_nan_source_is_refused_before_training(tmp_path):
    path = write_tiny_dataset(tmp_path / "nan")
    source = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": os.path.join(path, "train", "source")}})
    source = source.result()
    source[:, 0, 0] = np.full(source.shape[0], np.nan, np.float32)
    with pytest.raises(ValueError, match=r"median source norm is nan.*Check the data"):
        train_and_evaluate(_dataset_config(path), str(tmp_path / "run"))
    assert not os.listdir(tmp_path / "run" / "checkpoints")  # nothing trained, nothing saved
