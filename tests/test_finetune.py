"""Fine-tuning and zero-shot: pretrained params swapped into fresh states, channel adaptation, freezing."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import finetune as finetune_config
from experiments.configs import pretrain
from fno_jax import channels, checkpoint, finetune, train
from fno_jax.config import ConfigError
from fno_jax.model import FNO

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def downstream(pretrained_dir, task="poisson", **overrides):
    config = finetune_config.get_config(f"{task},tiny")
    config.init_from = pretrained_dir
    config.update_from_flattened_dict({"train.num_steps": 6, "train.eval_every": 3, "train.checkpoint_every": 3})
    config.update_from_flattened_dict(overrides)
    return config


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("pretrained"))
    train.train_and_evaluate(pretrain.get_config("poisson,tiny"), workdir)
    return workdir


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


def test_finetune_from_a_four_device_pretrain_on_one_device(tmp_path):
    pre = tmp_path / "pre4"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    cmd = [
        sys.executable, "-m", "experiments.main", "--config=experiments/configs/pretrain.py:poisson,tiny",
        f"--workdir={pre}", "--config.train.num_steps=4", "--config.train.eval_every=2",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((pre / "summary.json").read_text())["devices"] == 4
    summary = train.train_and_evaluate(downstream(str(pre), **{"train.num_steps": 2}), str(tmp_path / "ft1"))
    assert summary["mode"] == "finetune" and summary["devices"] == jax.device_count() == 1
    assert np.isfinite(summary["test_rel_l2"])


def test_errors_before_training(pretrained, tmp_path):
    config = finetune_config.get_config("poisson,tiny")
    with pytest.raises(ConfigError, match="set --config.init_from=PRETRAINED_WORKDIR"):
        train.train_and_evaluate(config, str(tmp_path / "a"))
    with pytest.raises(finetune.TransferError, match="another architecture .*width: pretrained 8 vs config 12"):
        train.train_and_evaluate(downstream(pretrained, **{"model.width": 12}), str(tmp_path / "b"))
    with pytest.raises(finetune.TransferError, match="not a directory"):
        train.train_and_evaluate(downstream(str(tmp_path / "nowhere")), str(tmp_path / "c"))
    for name in ("a", "b", "c"):
        assert not os.path.exists(tmp_path / name / "checkpoints")
