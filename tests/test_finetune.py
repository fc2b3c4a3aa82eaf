"""Fine-tuning and zero-shot: pretrained params swapped into fresh states, channel adaptation, freezing."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from fno_jax import checkpoint, train
from fno_jax.model import FNO, channels
from fno_jax.training import finetune


def downstream(pretrained_dir, task="poisson", **overrides):
    steps = {"train.num_steps": 6, "train.eval_every": 3, "train.checkpoint_every": 3}
    return tiny_config(task, init_from=pretrained_dir, require_init_from=True, **{**steps, **overrides})


@pytest.fixture(scope="module")
def pretrained(tiny_run):
    return tiny_run[0]  # the tiny run (conftest), shared with other files


def test_zero_shot_equals_the_pretrained_model(pretrained, tmp_path):
    # Same task, same data, pretrained stats: evaluation without training reproduces the pretrained test error.
    config = downstream(pretrained, **{"train.num_steps": 0, "finetune.norm_stats": "pretrained", "data.num_train": 32})
    summary = train.train_and_evaluate(config, str(tmp_path))
    saved = json.loads(open(os.path.join(pretrained, "summary.json")).read())
    assert summary["mode"] == "zeroshot" and summary["num_train"] == 0
    np.testing.assert_allclose(summary["test_rel_l2"], saved["test_rel_l2"], rtol=1e-6)
    assert json.loads((tmp_path / "summary.json").read_text())["test_rel_l2"] == summary["test_rel_l2"]


def test_swapped_params_equal_pretrained_before_any_step(pretrained):
    params = checkpoint.load_params(pretrained, "best")
    model = FNO(width=8, modes=4, depth=2, fc_dim=16)
    fresh = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 16, 16, 4)))["params"]
    swapped = finetune.transfer_params(params, fresh, "poisson", "poisson")
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 16, 16, 4))
    np.testing.assert_array_equal(model.apply({"params": swapped}, x), model.apply({"params": params}, x))


@pytest.mark.parametrize(("layout", "new"), [("advection_diffusion", ("v1", "v2")), ("mixed", ("v1", "v2", "omega"))])
def test_channel_widening_preserves_outputs(pretrained, layout, new):
    params = checkpoint.load_params(pretrained, "best")
    model = FNO(width=8, modes=4, depth=2, fc_dim=16)
    wide = {
        **params,
        "lift": {**params["lift"], "kernel": finetune.adapt_lift_kernel(params["lift"]["kernel"], "poisson", layout)},
    }
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 16, 16, 4))
    names = channels.LAYOUTS[layout]
    x_wide = jnp.zeros((2, 16, 16, len(names)))
    for i, name in enumerate(channels.LAYOUTS["poisson"]):
        x_wide = x_wide.at[..., names.index(name)].set(x[..., i])
    np.testing.assert_allclose(model.apply({"params": wide}, x_wide), model.apply({"params": params}, x), atol=1e-6)
    assert all(np.all(wide["lift"]["kernel"][names.index(n)] == 0) for n in new)


def test_helmholtz_diffusivity_maps_onto_k11_plus_k22():
    kernel = np.arange(4 * 3, dtype=np.float32).reshape(4, 3)  # rows: source, K11, K22, K12
    adapted = finetune.adapt_lift_kernel(kernel, "poisson", "helmholtz")  # rows: source, D, omega
    np.testing.assert_array_equal(adapted, [kernel[0], kernel[1] + kernel[2], np.zeros(3)])
    with pytest.raises(finetune.TransferError, match="channel K11 .* cannot be mapped .* 'helmholtz'"):
        finetune.adapt_lift_kernel(np.zeros((3, 3), np.float32), "helmholtz", "poisson")


def test_frozen_leaves_are_bitwise_unchanged(pretrained, tmp_path):
    config = downstream(pretrained, **{"finetune.freeze": ("spectral_.*", "lift"), "train.learning_rate": 1e-2})
    train.train_and_evaluate(config, str(tmp_path))
    before, after = checkpoint.load_params(pretrained, "best"), checkpoint.load_params(str(tmp_path))
    for name in ("spectral_0", "spectral_1", "lift"):
        for leaf in before[name]:
            np.testing.assert_array_equal(after[name][leaf], before[name][leaf])
    assert not np.array_equal(after["fc2"]["kernel"], before["fc2"]["kernel"])  # the rest did train
