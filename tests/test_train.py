"""End-to-end behaviour of one run: workdir files, resume, checkpoints, learning, and errors before work."""

import json
import os

import jax
import numpy as np
import pytest
from conftest import generated_split, main_cli, params_equal, poisson_pool_stats, run_python, tiny_config

from fno_jax import checkpoint, train
from fno_jax.config import ConfigError
from fno_jax.model import FNO, from_config
from fno_jax.storage.workdir import MetricsLog


@pytest.fixture(scope="module")
def finished(tiny_run):
    """One uninterrupted tiny run, shared by the tests that only read it (conftest's, shared with other files)."""
    return tiny_run


def test_cli_run_writes_every_workdir_file(tmp_path):
    workdir = tmp_path / "cli"
    run_python(main_cli(workdir, "--config.train.num_steps=4", "--config.train.checkpoint_every=2"))
    files = sorted(f for f in os.listdir(workdir) if not f.startswith("."))  # .lock: held while running
    events = [f for f in files if f.startswith("events.out.tfevents.")]  # TensorBoard's, beside metrics.jsonl
    assert len(events) == 1
    assert [f for f in files if f not in events] == ["checkpoints", "config.json", "metrics.jsonl", "summary.json"]
    assert sorted(int(s) for s in os.listdir(workdir / "checkpoints")) == [2, 4]
    summary = json.loads((workdir / "summary.json").read_text())
    for key in ("task", "mode", "num_train", "model", "test_rel_l2", "val_rel_l2", "best_step", "num_params"):
        assert key in summary
    assert summary["mode"] == "scratch" and summary["num_train"] == 32
    assert json.loads((workdir / "config.json").read_text())["model"]["width"] == 8
    steps = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 4


def rel_l2_by_hand(workdir, step: int, config) -> float:
    """Mean over the run's test split of ||u_pred - u|| / ||u||, u_pred from the params and statistics saved at `step`
    with the inputs normalized here, in float64 (Poisson: f, K11, K22, K12, each divided by r = s(f) / source_scale,
    each coefficient then by its scale)."""
    params, (_, meta) = checkpoint.load_params(workdir, step), checkpoint.load_meta(workdir, step)
    test = generated_split(config, "test")
    f, k, u = (np.asarray(test[key], np.float64) for key in ("source", "diffusion", "solution"))
    n = f.shape[-1]
    r = np.sqrt(np.sum(f**2, axis=(1, 2))) / n**2 / meta.norm_stats.source_scale
    coeffs = np.stack([k[:, 0, 0], k[:, 1, 1], k[:, 0, 1]], axis=-1) / r[:, None] / meta.norm_stats.coeff_scale
    inputs = np.concatenate(
        [(f / r[:, None, None])[..., None], np.broadcast_to(coeffs[:, None, None], (*f.shape, 3))], -1
    )
    prediction = jax.jit(FNO(**meta.model).apply)({"params": params}, inputs.astype(np.float32))[..., 0]
    prediction = np.asarray(prediction, np.float64)
    return float(np.mean(np.linalg.norm(prediction - u, axis=(1, 2)) / np.linalg.norm(u, axis=(1, 2))))


def test_summary_and_metrics(finished):
    workdir, summary = finished
    assert summary["steps"] == 10
    assert summary["num_params"] == sum(np.size(x) for x in jax.tree_util.tree_leaves(checkpoint.load_params(workdir)))
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    vals = [r for r in records if "val_rel_l2" in r]
    assert [r["step"] for r in vals] == [5, 10]
    # Runs select their checkpoint by validation loss (the paper's rule): the summary reports that step's metrics.
    best = min(vals, key=lambda r: r["val_loss"])
    assert summary["best_step"] == best["step"] and summary["select_by"] == "val_loss"
    assert summary["val_loss"] == best["val_loss"] and summary["val_rel_l2"] == best["val_rel_l2"]
    # The test error of that step's saved params, computed here from scratch: float32 model outputs of inputs
    # normalized in float64 here and in float32 by the run differ by a few float32 roundings, ~1e-6 of the error.
    expected = rel_l2_by_hand(workdir, best["step"], tiny_config())
    np.testing.assert_allclose(summary["test_rel_l2"], expected, rtol=1e-5)


def test_load_params_round_trip(finished):
    workdir, summary = finished
    latest = checkpoint.load_params(workdir)
    assert params_equal(latest, checkpoint.load_params(workdir, step=10))
    best = checkpoint.load_params(workdir, step="best")
    assert params_equal(best, checkpoint.load_params(workdir, step=summary["best_step"]))
    # The structure is exactly the model's own.
    model = from_config(tiny_config())
    fresh = model.init(jax.random.PRNGKey(0), np.zeros((1, 16, 16, 4), np.float32))["params"]
    assert jax.tree_util.tree_structure(fresh) == jax.tree_util.tree_structure(latest)
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint for step 7"):
        checkpoint.load_params(workdir, step=7)


def test_metadata_carries_the_normalization_statistics(finished):
    workdir, _ = finished
    step, meta = checkpoint.load_meta(workdir)
    assert step == 10 and meta.layout == "poisson" and meta.model["width"] == 8
    # The statistics of the run's pool of 32 samples, recomputed here from the regenerated pool.
    expected = poisson_pool_stats(tiny_config())
    np.testing.assert_allclose([meta.norm_stats.source_scale, *meta.norm_stats.coeff_scale],
                               [expected.source_scale, *expected.coeff_scale], rtol=1e-12)  # fmt: skip
    assert meta.config["seed"] == 0 and meta.task_spec["name"] == "poisson"


def crash_after(step: int, monkeypatch):
    """Make the run die (KeyboardInterrupt) right after it logged `step`."""
    real_append = MetricsLog.append

    def append_then_crash(self, record):
        real_append(self, record)
        if record["step"] >= step:
            raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(MetricsLog, "append", append_then_crash)


def test_resume_after_interruption_is_bitwise_equal(finished, tmp_path, monkeypatch):
    reference, _ = finished
    workdir = str(tmp_path / "interrupted")
    with monkeypatch.context() as patch:
        crash_after(5, patch)
        with pytest.raises(KeyboardInterrupt):
            train.train_and_evaluate(tiny_config(), workdir)
    assert checkpoint.Checkpointer(workdir, read_only=True).steps() == [5]
    train.train_and_evaluate(tiny_config(), workdir)
    assert params_equal(checkpoint.load_params(workdir), checkpoint.load_params(reference))
    steps = [json.loads(line)["step"] for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert steps == [5, 10]  # no duplicated lines from the interrupted run


def test_loss_goes_down(tmp_path):
    overrides = {"train.num_steps": 40, "train.eval_every": 40, "train.log_every": 10, "train.learning_rate": 1e-2}
    summary = train.train_and_evaluate(tiny_config(**overrides), str(tmp_path))
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    # Mean loss over steps 31-40 against steps 1-10: the model learns, not just drifts.
    assert records[-1]["train_loss"] < 0.6 * records[0]["train_loss"]
    assert summary["test_rel_l2"] < 0.8


def test_run_length_in_epochs(tmp_path):
    # num_steps=-1: 3 epochs of floor(32 / 8) = 4 steps; evaluation and checkpoints once per epoch (0).
    overrides = {"train.num_steps": -1, "train.num_epochs": 3, "train.eval_every": 0, "train.checkpoint_every": 0}
    summary = train.train_and_evaluate(tiny_config(**overrides), str(tmp_path))
    assert summary["steps"] == 12
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in records if "val_loss" in r] == [4, 8, 12]


def test_other_architecture_in_workdir_is_refused(finished):
    workdir, _ = finished
    with pytest.raises(ConfigError, match="holds a run with a different config.model .*use a new --workdir"):
        train.train_and_evaluate(tiny_config(**{"model.width": 12}), workdir)


@pytest.mark.parametrize("parallel", ["shard_map", "pmap"])
def test_host_fed_batches_train_like_device_resident_ones(finished, tmp_path, parallel):
    # The same batches (seed, step) whether the training set lives on the device or is read and prefetched on the host.
    reference, summary = finished
    workdir = str(tmp_path / parallel)
    host = train.train_and_evaluate(tiny_config(**{"data.loader": "host", "train.parallel": parallel}), workdir)
    assert params_equal(checkpoint.load_params(workdir), checkpoint.load_params(reference))
    assert host["best_step"] == summary["best_step"]


def test_host_fed_batches_from_a_stored_dataset(finished, tmp_path):
    # Each step reads only its batch's samples from the zarr store, and training ends where the in-memory run does.
    from fno_jax.data.build import generate_dataset

    dataset = str(tmp_path / "dataset")
    generate_dataset(tiny_config(), dataset)
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(tiny_config(**{"data.source": dataset, "data.loader": "host"}), workdir)
    assert params_equal(checkpoint.load_params(workdir), checkpoint.load_params(finished[0]))


def test_remat_trains_the_same_model(finished, tmp_path):
    # Recomputing the Fourier layers in the backward pass changes memory, not the gradients (equal in float64:
    # tests/test_spectral_impl.py). In float32 the recomputation rounds differently, and Adam turns a rounding-level
    # change of a near-zero gradient into up to one learning rate (1e-3) per step: 10 steps bound the drift by 1e-2;
    # we ask for 1e-4.
    workdir = str(tmp_path / "remat")
    summary = train.train_and_evaluate(tiny_config(**{"model.remat": True}), workdir)
    for a, b in zip(
        jax.tree_util.tree_leaves(checkpoint.load_params(workdir)),
        jax.tree_util.tree_leaves(checkpoint.load_params(finished[0])),
    ):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)
    np.testing.assert_allclose(summary["test_rel_l2"], finished[1]["test_rel_l2"], rtol=1e-3)


def test_samples_the_task_could_not_make_are_an_error_not_nan_data():
    # Under jit a sampler cannot raise: a Helmholtz sample whose rejection sampling found nothing comes back as NaN,
    # and generation must refuse it rather than hand NaN data to training.
    import solvers
    from fno_jax.data import generate

    impossible = solvers.tasks.Helmholtz(omega_range=(1, 10), max_amplitude=1e-6)
    with pytest.raises(ValueError, match="4 of 4 generated 'train' samples .* are not finite .* Choose another"):
        generate.generate_split(impossible, 0, "train", 4, 16, chunk=4)


def test_runs_on_one_pool_normalize_alike(tmp_path):
    # The statistics are those of the pool's inputs, whatever subset N of it a run trains on (the paper's rule): two
    # runs that differ only in data.num_train store the same norm_stats, and they are not those of their subsets.
    from fno_jax.config import task_of
    from fno_jax.data import load_splits

    stats = []
    for n in (8, 32):
        config = tiny_config(**{"data.num_train": n, "data.num_train_pool": 32, "train.num_steps": 1})
        train.train_and_evaluate(config, str(tmp_path / str(n)))
        stats.append(checkpoint.load_meta(tmp_path / str(n))[1].norm_stats)
    assert stats[0] == stats[1]
    small = tiny_config(**{"data.num_train": 8})  # a pool of its own 8 samples
    assert load_splits(small, task_of(small), "poisson").stats != stats[0]


def test_a_workdir_of_an_earlier_version_resumes_with_new_keys_at_their_defaults(tmp_path):
    # config.json written before a key existed (here data.num_unlabelled and finetune.mode): the key ran at what is
    # now its default, so the same run today is the same identity; a key that really differs is still refused.
    from fno_jax.storage.workdir import Workdir

    config = tiny_config()
    old = json.loads(config.to_json())
    del old["data"]["num_unlabelled"], old["finetune"]["mode"]
    os.makedirs(tmp_path, exist_ok=True)
    with open(tmp_path / "config.json", "w") as f:
        json.dump(old, f)
    with Workdir(str(tmp_path), config):
        pass
    with open(tmp_path / "config.json", "w") as f:
        json.dump({**old, "data": {**old["data"], "num_train": 16}}, f)
    with pytest.raises(ConfigError, match="different config.data"), Workdir(str(tmp_path), config):
        pass
