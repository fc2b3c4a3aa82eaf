"""Wiring, end to end through the public entry points: what a run logs, selects, tests and saves.

Each test here reads only what a user sees (metrics.jsonl, summary.json, `fno_jax.checkpoint.load_params` /
`load_meta`, a prediction with the saved params), so it holds whatever the trainer's internals look like, and it
fails for a bug that leaves every unit test green: a step fed raw (unnormalized) inputs, the cosine decay stepped
every step instead of once per epoch, an epoch that counts the last partial batch, a "best" checkpoint that is the
latest one, a packed run tested with another run's best step. `python tests/mutation.py` (`make mutation`) plants
those bugs and checks that these tests catch them.

The runs: N = 5 training samples at batch 2 (two whole batches an epoch, the fifth sample left over), 30 epochs at a
learning rate of 1e-2 or 2e-2. On 5 samples the model overfits: the validation loss falls, reaches its lowest
value in the middle of the run and rises again, so "the best step is the lowest validation loss" is not "the
best step is the last one" (each test asserts that precondition, so it cannot pass vacuously).
"""

import functools
import json
import math
import os

import jax
import numpy as np
import pytest
from conftest import generated_split, params_equal, poisson_pool_stats, relative_difference, tiny_config
from test_group import RTOL as PACKED_RTOL

import fno_jax
from fno_jax import checkpoint, train
from fno_jax.config import default_config
from fno_jax.model import predict as model_predict
from fno_jax.train import train_and_evaluate_packed

NUM_TRAIN, BATCH, EPOCHS = 5, 2, 30
RATES = (1e-2, 2e-2)
OVERFIT = {
    "data.num_train": NUM_TRAIN,
    "data.seed": 0,  # the two seeds share their pool, validation and test sets: they can train as one program
    "train.batch_size": BATCH,
    "train.num_steps": -1,  # the length in epochs, as the studies give it
    "train.num_epochs": EPOCHS,
    "train.eval_every": 4,
    "train.log_every": 1,  # every step's learning rate in metrics.jsonl
    "train.checkpoint_every": 1000,  # only the best-so-far steps and the last one are saved
    "logging.images": 0,
    "logging.tensorboard": False,
}


def overfit_config(k: int, **overrides):
    """Run k (0 or 1) of the overfitting pair: seed k, learning rate RATES[k]; train.lr_decay left at its default."""
    return tiny_config(seed=k, **{**OVERFIT, "train.learning_rate": RATES[k], **overrides})


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """The two runs, each trained alone: [(workdir, summary)]."""
    root = tmp_path_factory.mktemp("alone")
    return [(str(root / str(k)), train.train_and_evaluate(overfit_config(k), str(root / str(k)))) for k in range(2)]


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """The same two runs trained as one packed group: [(workdir, summary)]."""
    root = tmp_path_factory.mktemp("packed")
    workdirs = [str(root / str(k)) for k in range(2)]
    return list(zip(workdirs, train_and_evaluate_packed([overfit_config(k) for k in range(2)], workdirs), strict=True))


def records(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def validation_losses(workdir) -> dict[int, float]:
    """{step: validation loss} of every evaluation a run logged."""
    return {r["step"]: r["val_loss"] for r in records(workdir) if "val_loss" in r}


def lowest(losses: dict[int, float]) -> int:
    """The step of the lowest validation loss, checked to be neither the last step nor a near tie (so runs that
    differ by float32 rounding, packed and alone, pick the same step)."""
    best = min(losses, key=losses.get)
    last = max(losses)
    assert best != last and losses[last] > 1.05 * losses[best], f"validation loss does not rise at the end: {losses}"
    runner_up = min(v for step, v in losses.items() if step != best)
    assert runner_up > 1.01 * losses[best], f"two steps tie for the lowest validation loss: {losses}"
    return best


def test_the_default_schedule_steps_the_cosine_once_per_epoch(alone):
    # The paper's CosineAnnealingLR is stepped once per epoch: epoch e of E runs at lr (1 + cos(pi e / E)) / 2, the
    # cosine's value at the epoch's first step, held for the whole epoch. metrics.jsonl logs the rate of each step.
    assert default_config().train.lr_decay == "epoch"
    per_epoch = NUM_TRAIN // BATCH
    for k, (workdir, _) in enumerate(alone):
        logged = {r["step"]: r["learning_rate"] for r in records(workdir)}
        assert sorted(logged) == list(range(1, EPOCHS * per_epoch + 1))
        expected = [RATES[k] * (1 + math.cos(math.pi * ((s - 1) // per_epoch) / EPOCHS)) / 2 for s in sorted(logged)]
        # float32 rates: a few ulps of the peak rate. A cosine advanced every step differs from the staircase at each
        # epoch's second step, by 6.8e-4 of the peak rate (epoch 0) to 2.6e-2 of it.
        np.testing.assert_allclose([logged[s] for s in sorted(logged)], expected, rtol=0, atol=1e-6 * RATES[k])


def test_an_epoch_is_the_whole_batches_of_the_training_set(alone):
    # Drop-last (the paper's loader): 5 samples at batch 2 are 2 steps an epoch, not 3.
    for workdir, summary in alone:
        assert summary["steps"] == EPOCHS * (NUM_TRAIN // BATCH) == 60
        assert records(workdir)[-1]["step"] == 60


def test_the_best_step_is_the_lowest_logged_validation_loss_and_is_the_one_tested(alone, tmp_path):
    workdir, summary = alone[0]
    losses = validation_losses(workdir)
    best = lowest(losses)
    assert summary["best_step"] == best and summary["val_loss"] == losses[best]
    assert checkpoint.load_meta(workdir, "best")[0] == best
    params = checkpoint.load_params(workdir, "best")
    assert params_equal(params, checkpoint.load_params(workdir, best))
    assert relative_difference(checkpoint.load_params(workdir), params) > 1e-2  # the last params are others
    # The summary's test metrics are those of the best step's params: a zero-shot evaluation of exactly that step
    # with the statistics saved with it (`finetune.norm_stats="pretrained"`; its own pool of 2 samples has others)
    # on the same test split gives them again.
    zeroshot = overfit_config(0, init_from=workdir, init_step=best, **{"data.num_train": 2, "train.num_steps": 0})
    zeroshot.finetune.norm_stats = "pretrained"
    assert poisson_pool_stats(zeroshot) != checkpoint.load_meta(workdir, best)[1].norm_stats
    again = train.train_and_evaluate(zeroshot, str(tmp_path))
    for key in ("test_rel_l2", "test_rel_h1", "test_rel_linf", "test_rel_residual", "test_loss"):
        np.testing.assert_allclose(again[key], summary[key], rtol=1e-6, err_msg=key)


def test_packed_runs_with_different_best_steps_each_report_their_own(alone, packed):
    best = [lowest(validation_losses(workdir)) for workdir, _ in packed]
    assert best[0] != best[1]  # the group's runs select different steps
    for k, ((workdir, summary), (alone_dir, alone_summary)) in enumerate(zip(packed, alone, strict=True)):
        assert summary["best_step"] == best[k] == alone_summary["best_step"]
        assert checkpoint.load_meta(workdir, "best")[0] == best[k]
        # The same run trained alone, to the packed-vs-single tolerance of tests/test_group.py.
        assert (
            relative_difference(checkpoint.load_params(workdir, "best"), checkpoint.load_params(alone_dir, "best"))
            < PACKED_RTOL
        )
        for key in ("val_loss", "test_rel_l2", "test_rel_h1", "test_rel_linf", "test_loss"):
            np.testing.assert_allclose(summary[key], alone_summary[key], rtol=PACKED_RTOL, err_msg=f"run {k}: {key}")


def test_a_prediction_is_invariant_to_scaling_the_source_and_every_coefficient(alone):
    # -div(cK grad u) = c f has the solution of -div(K grad u) = f: per-instance normalization gives the model the
    # same inputs for both, so the trained model predicts the same u. A model fed raw inputs does not.
    workdir, _ = alone[0]
    params = checkpoint.load_params(workdir, "best")
    _, meta = checkpoint.load_meta(workdir, "best")
    model = fno_jax.FNO(**meta.model)
    predict = jax.jit(functools.partial(model_predict, model=model, norm=meta.norm_stats, length=1.0))
    problems = generated_split(overfit_config(0), "test")  # 16 Poisson problems (the run's test split)
    source, coeffs = problems["source"], np.asarray(fno_jax.model.channels.coefficients(problems, meta.layout))
    u = np.asarray(predict(params, {"source": source, "coeffs": coeffs}))
    for c in (0.25, 8.0):
        # A power of two scales every floating-point rounding exactly: the normalized inputs are bitwise equal.
        np.testing.assert_array_equal(predict(params, {"source": c * source, "coeffs": c * coeffs}), u, err_msg=c)
    # Another c: the normalized inputs differ by a few float32 roundings (~1e-7 of their size), the outputs by as
    # little, far below 1e-5 of the prediction's size.
    scaled = predict(params, {"source": 3.7 * source, "coeffs": 3.7 * coeffs})
    np.testing.assert_allclose(scaled, u, rtol=0, atol=1e-5 * np.abs(u).max())


def test_finetuning_normalizes_with_the_downstream_statistics_by_default(alone, tmp_path):
    # The paper's rule, zero-shot included (`finetune.norm_stats="downstream"`, the default): a model fine-tuned on
    # a pool of 2 samples normalizes with that pool's statistics, not those of its pretraining pool of 5 (the
    # other rule, "pretrained", is the zero-shot evaluation above).
    pretrained_dir, _ = alone[0]
    config = overfit_config(0, init_from=pretrained_dir, **{"data.num_train": 2, "train.num_steps": 1})
    assert config.finetune.norm_stats == default_config().finetune.norm_stats == "downstream"
    expected = poisson_pool_stats(config)
    assert expected != checkpoint.load_meta(pretrained_dir, "best")[1].norm_stats  # the two pools differ
    train.train_and_evaluate(config, str(tmp_path))
    saved = checkpoint.load_meta(str(tmp_path))[1].norm_stats
    np.testing.assert_allclose([saved.source_scale, *saved.coeff_scale],
                               [expected.source_scale, *expected.coeff_scale], rtol=1e-12)  # fmt: skip
