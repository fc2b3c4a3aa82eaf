"""Fine-tuning modes (`fno_jax.training.tuning`: head, lora, band_adapter) and losses (`train.loss`: residual,
hybrid; label-free and test-time training): the pretrained function at step 0, frozen weights untouched, the residual
loss exact on solver solutions, label-free training that beats zero-shot, adapter bundles, packed mixed losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import params_equal, relative_difference, tiny_config
from flax import linen as nn

from fno_jax import checkpoint, export, pretrained, train
from fno_jax.config import ConfigError
from fno_jax.model import FNO
from fno_jax.model.normalization import NormStats, scale_arrays
from fno_jax.training import steps
from fno_jax.training.tuning import Tuning, band_masks
from solvers import tasks

SHIFT = {"task_ranges.eigenvalue_range": (5.0, 10.0), "data.seed": 1}


def finetune_config(pretrained_dir, **overrides):
    return tiny_config(init_from=str(pretrained_dir), **{**SHIFT, **overrides})


@pytest.mark.parametrize("mode", ["lora", "band_adapter"])
def test_adapters_start_as_the_pretrained_function(mode):
    model = FNO(width=8, modes=4, depth=2, fc_dim=16)
    x = jax.random.normal(jax.random.key(0), (3, 16, 16, 4))
    base = model.init(jax.random.key(1), x)["params"]
    tuning = Tuning(mode, rank=2)
    params = tuning.init(jax.random.key(2), base)
    np.testing.assert_allclose(
        model.apply({"params": tuning.model_params(params)}, x), model.apply({"params": base}, x), rtol=0, atol=1e-6
    )
    # The adapters can move the function: B is zero, not the update as a whole.
    moved = jax.tree_util.tree_map(lambda p: p + 0.01, params["adapters"])
    assert float(jnp.max(jnp.abs(model.apply({"params": tuning.model_params({**params, "adapters": moved})}, x)
                                 - model.apply({"params": base}, x)))) > 1e-4  # fmt: skip


def test_trainable_fractions_and_bands():
    model = FNO(width=16, modes=8, depth=4, fc_dim=32)
    base = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 4)))["params"]
    total = sum(np.size(x) for x in jax.tree_util.tree_leaves(base))
    assert Tuning("full").trainable_count(base) == total
    assert Tuning("head").trainable_count(base) == (16 + 1) * 32 + (32 + 1) * 1
    for rank in (4, 8):  # the ranks of the study: under 5% of the weights
        lora = Tuning("lora", rank)
        assert lora.trainable_count(lora.init(jax.random.key(1), base)) / total <= 0.05
    # r (in + out + 2 m^2) per spectral weight, r (in + out) per dense kernel (fc2's rank capped at 1).
    lora = Tuning("lora", 4)
    expected = 8 * 4 * (16 + 16 + 2 * 64) + 4 * 4 * (16 + 16) + 4 * (16 + 32) + 1 * (32 + 1)
    assert lora.trainable_count(lora.init(jax.random.key(1), base)) == expected
    masks = band_masks((16, 16, 8, 8, 2), "weights1")
    assert masks.sum() == 64 and np.all(masks.sum(axis=0) == 1)  # every mode in exactly one band
    assert masks[0, 0, 0] and masks[2, 7, 7]  # the mean is low, the corner high


@pytest.fixture(scope="module")
def lora_run(tiny_run, tmp_path_factory):
    pretrained_dir, _ = tiny_run
    workdir = str(tmp_path_factory.mktemp("lora"))
    config = finetune_config(pretrained_dir, **{"finetune.mode": "lora", "finetune.rank": 2})
    return workdir, train.train_and_evaluate(config, workdir)


def test_frozen_weights_stay_bitwise_the_pretrained_ones(tiny_run, lora_run, tmp_path):
    pretrained_dir, _ = tiny_run
    base = checkpoint.load_params(pretrained_dir, "best")
    workdir, summary = lora_run
    trained = checkpoint.load_params(workdir)
    assert params_equal(trained["base"], base)  # the base never moved
    assert any(np.any(np.asarray(b) != 0) for b in jax.tree_util.tree_leaves(trained["adapters"]))  # adapters did
    assert summary["finetune_mode"] == "lora" and 0 < summary["trainable_params"] < summary["num_params"]
    head = train.train_and_evaluate(finetune_config(pretrained_dir, **{"finetune.mode": "head"}), str(tmp_path))
    trained = checkpoint.load_params(tmp_path)
    for name in base:
        same = params_equal(trained[name], base[name])
        assert same == (name not in ("fc1", "fc2")), name
    assert head["trainable_params"] == (8 + 1) * 16 + (16 + 1)


def test_an_adapter_bundle_loads_on_its_base_and_gives_the_runs_test_error(tiny_run, lora_run, tmp_path):
    pretrained_dir, _ = tiny_run
    workdir, summary = lora_run
    with pytest.raises(pretrained.BundleError, match="pass --base BASE"):
        export.export_bundle(workdir, tmp_path / "nobase")
    export.export_bundle(pretrained_dir, tmp_path / "base")
    card = export.export_bundle(workdir, tmp_path / "adapter", base=str(tmp_path / "base"))
    assert card["adapter"]["base"]["sha256"] == pretrained.read_card(tmp_path / "base")["weights"]["sha256"]
    assert card["num_params"] == summary["trainable_params"]  # only the adapters are in the file
    model, params, _ = pretrained.load(tmp_path / "adapter")
    assert model.width == 8 and set(params) == set(checkpoint.load_params(pretrained_dir))
    # Loaded on its base, the adapter model is the run's model: the zero-shot evaluation of the bundle on the
    # run's test set gives the run's test error.
    zeroshot = finetune_config(tmp_path / "adapter", **{"train.num_steps": 0})
    again = train.train_and_evaluate(zeroshot, str(tmp_path / "again"))
    np.testing.assert_allclose(again["test_rel_l2"], summary["test_rel_l2"], rtol=1e-5)
    # Another pretrained model in the base's place is refused, by the sha256 the adapter card holds.
    export.export_bundle(pretrained_dir, tmp_path / "other", step=5)
    (tmp_path / "base").rename(tmp_path / "moved")
    (tmp_path / "other").rename(tmp_path / "base")
    with pytest.raises(pretrained.BundleError, match="holds other weights .* than the adapters were trained on"):
        pretrained.load(tmp_path / "adapter")


class Field(nn.Module):
    """A "model" whose output is its parameter u [B, n, n, 1], whatever its input."""

    shape: tuple

    @nn.compact
    def __call__(self, x):
        del x
        return self.param("u", nn.initializers.zeros, self.shape)


@pytest.mark.parametrize("task", [tasks.Poisson(), tasks.AdvectionDiffusion(), tasks.Helmholtz()])
def test_the_residual_loss_vanishes_on_solutions_and_its_gradient_is_the_derivative(x64, task):
    from fno_jax.model import channels

    layout = task.name
    batch = task.sample(jax.random.key(3), 2, 16, dtype=jnp.float64)
    inputs = {"source": batch["source"], "coeffs": channels.coefficients(batch, layout)}
    model = Field((2, 16, 16, 1))
    norm = scale_arrays(NormStats(1.0, (1.0,) * inputs["coeffs"].shape[1]))
    loss = lambda u: steps.residual_loss({"u": u}, inputs, model=model, norm=norm, length=1.0, layout=layout)
    assert float(loss(batch["solution"][..., None])) < 1e-12
    u = batch["solution"][..., None] + 0.1 * jax.random.normal(jax.random.key(4), (2, 16, 16, 1), jnp.float64)
    direction = jax.random.normal(jax.random.key(5), u.shape, jnp.float64)
    eps = 1e-6
    numeric = (loss(u + eps * direction) - loss(u - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(jnp.vdot(jax.grad(loss)(u), direction), numeric, rtol=1e-6)


LABEL_FREE = {
    "data.num_train": 0,
    "data.num_unlabelled": 32,
    "train.loss": "residual",
    "train.select_by": "val_rel_residual",
    "train.num_steps": 60,
    "train.eval_every": 10,
    "train.checkpoint_every": 30,
    "train.learning_rate": 3e-3,
}


def test_label_free_training_lowers_the_test_error_below_zero_shot(tiny_run, tmp_path):
    pretrained_dir, _ = tiny_run
    zeroshot = train.train_and_evaluate(finetune_config(pretrained_dir, **{"train.num_steps": 0}), str(tmp_path / "z"))
    label_free = train.train_and_evaluate(finetune_config(pretrained_dir, **LABEL_FREE), str(tmp_path / "free"))
    assert label_free["num_train"] == 0 and label_free["loss"] == "residual"
    assert label_free["test_rel_residual"] < zeroshot["test_rel_residual"]
    assert label_free["test_rel_l2"] < zeroshot["test_rel_l2"]


def test_test_time_adaptation_reports_before_and_after(tiny_run, tmp_path):
    pretrained_dir, _ = tiny_run
    config = finetune_config(pretrained_dir, **{**LABEL_FREE, "data.num_unlabelled": 0, "train.test_time": True})
    summary = train.train_and_evaluate(config, str(tmp_path))
    zeroshot = train.train_and_evaluate(finetune_config(pretrained_dir, **{"train.num_steps": 0}), str(tmp_path / "z"))
    # "Before" is the pretrained model on the test set, normalized with the statistics of the test inputs it adapts
    # on (it has no training pool): the zero-shot error, up to that choice of statistics (same distribution).
    np.testing.assert_allclose(summary["before"]["test_rel_l2"], zeroshot["test_rel_l2"], rtol=1e-2)
    assert summary["test_rel_residual"] < summary["before"]["test_rel_residual"]


def test_a_packed_group_of_mixed_losses_trains_each_run_as_alone(tiny_run, tmp_path):
    pretrained_dir, _ = tiny_run
    common = {"data.num_unlabelled": 16, "train.num_steps": 10}
    configs = [
        finetune_config(pretrained_dir, seed=0, **common, **{"train.loss": "data"}),
        finetune_config(pretrained_dir, seed=1, **common, **{"train.loss": "hybrid", "train.residual_weight": 5.0}),
    ]
    grouped = train.train_and_evaluate_packed(configs, [str(tmp_path / str(k)) for k in range(2)])
    assert [s["loss"] for s in grouped] == ["data", "hybrid"] and grouped[1]["packed_runs"] == 2
    alone = train.train_and_evaluate(configs[1], str(tmp_path / "alone"))
    together, apart = checkpoint.load_params(tmp_path / "1"), checkpoint.load_params(tmp_path / "alone")
    assert relative_difference(together, apart) < 1e-4  # a vmapped step sums in another order (tests/test_group.py)
    np.testing.assert_allclose(grouped[1]["test_rel_l2"], alone["test_rel_l2"], rtol=1e-4)


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        ({"finetune.mode": "lora"}, "adapts a pretrained model"),
        ({"train.loss": "residual", "train.select_by": "val_rel_residual"}, "num_unlabelled=0"),
        ({"data.num_train": 0}, "leaves no labelled solutions"),
        ({"train.loss": "residual", "data.num_unlabelled": 8}, "select_by='val_rel_residual'"),
        ({"train.test_time": True}, "adapts a pretrained model"),
        ({"finetune.lora_targets": ("spectral", "lift")}, "subset of"),
    ],
)
def test_modes_and_losses_that_cannot_work_are_refused(overrides, pattern, tmp_path):
    with pytest.raises(ConfigError, match=pattern):
        train.train_and_evaluate(tiny_config(**overrides), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
