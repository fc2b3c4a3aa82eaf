"""Data parallelism: the same short run on 1 device and on 4 forced host devices ends with the same params.

Both compile paths (jit of shard_map, pmap) are checked. Data order is a function of (seed, step) only and the
gradient is the mean over the global batch whichever way it is split, so the params agree up to float32 reduction
order: per step the mean gradient differs by ~1e-7 relative, Adam's update direction by as much, and ten steps of
lr 1e-3 move the params by ~1e-2 of their size, so 1e-5 relative is a loose bound that a wrong split (a device
training on the wrong samples, a sum instead of a mean) exceeds by orders of magnitude.
The 4-device runs share one subprocess (XLA_FLAGS is read when JAX starts); it also checks the bad-input errors.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("shard_map", "pmap")
RTOL = 1e-5


def tiny_config(parallel: str = "shard_map", batch_size: int = 8):
    """pretrain.py:poisson,runlocal shrunk to seconds: 16x16, width 8, 4 modes, 2 layers, 32 samples, 10 steps."""
    from experiments.configs.pretrain import get_config

    c = get_config("poisson,runlocal")
    c.data.resolution, c.data.num_train, c.data.num_val, c.data.num_test = 16, 32, 8, 8
    c.data.generate_chunk = 32
    c.model.width, c.model.modes, c.model.depth, c.model.fc_dim = 8, 4, 2, 16
    c.train.batch_size, c.train.eval_batch_size, c.train.num_steps = batch_size, 8, 10
    c.train.eval_every = c.train.checkpoint_every = c.train.log_every = 10
    c.train.parallel = parallel
    return c


def relative_difference(a, b) -> float:
    """||a - b|| / ||b|| over all leaves of two params trees of the same structure."""
    import jax

    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    num = sum(float(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2)) for x, y in zip(la, lb))
    den = sum(float(np.sum(np.asarray(y, np.float64) ** 2)) for y in lb)
    return (num / den) ** 0.5


# Runs in a fresh interpreter with 4 forced host devices; prints one JSON line.
_FOUR_DEVICES = r"""
import json, sys
import jax, numpy as np
sys.path.insert(0, "tests")
from test_parallel import tiny_config
from fno_jax.train import train_and_evaluate
from fno_jax.checkpoint import load_params
from fno_jax.parallel import DataParallel

out, result = sys.argv[1], {"devices": jax.device_count()}
for mode in ("shard_map", "pmap"):
    train_and_evaluate(tiny_config(mode), f"{out}/{mode}")
    leaves = jax.tree_util.tree_leaves(load_params(f"{out}/{mode}"))
    np.savez(f"{out}/{mode}.npz", *leaves)
try:  # global batch 6 over 4 devices: refused before any work
    train_and_evaluate(tiny_config("shard_map", batch_size=6), f"{out}/bad_batch")
except ValueError as err:
    result["batch_error"] = str(err)
    result["bad_batch_checkpoints"] = __import__("os").path.exists(f"{out}/bad_batch/checkpoints")
dp = DataParallel("shard_map")
try:
    dp.host_rows(30)
except ValueError as err:
    result["shard_error"] = str(err)
try:
    DataParallel("pmap").put_sharded({"x": np.zeros((8, 2))}, 8)
except ValueError as err:
    result["pmap_sharded_error"] = str(err)
# A sharded split: one global array over the sample axis; a jitted index gather reads across devices.
x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
sharded = dp.put_sharded({"x": x[dp.host_rows(16)]}, 16)["x"]
index = np.array([15, 0, 7, 4, 9, 2, 12, 5])
gathered = jax.jit(lambda d, i: d[i])(sharded, index)
result["sharded_devices"] = len(sharded.sharding.device_set)
result["sharded_roundtrip"] = bool(np.array_equal(np.asarray(sharded), x))
result["sharded_gather"] = bool(np.array_equal(np.asarray(gathered), x[index]))
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    out = tmp_path_factory.mktemp("four_devices")
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run(
        [sys.executable, "-c", _FOUR_DEVICES, str(out)], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    params = {m: list(np.load(out / f"{m}.npz").values()) for m in MODES}
    return result, params


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    import jax

    from fno_jax.checkpoint import load_params
    from fno_jax.train import train_and_evaluate

    assert jax.device_count() == 1, "run this module without forced host devices"
    out = tmp_path_factory.mktemp("one_device")
    params = {}
    for mode in MODES:
        train_and_evaluate(tiny_config(mode), str(out / mode))
        params[mode] = jax.tree_util.tree_leaves(load_params(out / mode))
    return params


@pytest.mark.slow
def test_one_device_modes_agree(one_device):
    # One device: both forms run the same program on the same batch; only compilation differs.
    assert relative_difference(one_device["pmap"], one_device["shard_map"]) < RTOL


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_four_devices_match_one_device(four_devices, one_device, mode):
    result, params = four_devices
    assert result["devices"] == 4
    assert relative_difference(params[mode], one_device["shard_map"]) < RTOL


@pytest.mark.slow
def test_batch_not_divisible_by_devices_is_refused(four_devices):
    result, _ = four_devices
    message = result["batch_error"]
    assert "train.batch_size=6" in message and "4 devices" in message and "multiple of 4" in message
    assert not result["bad_batch_checkpoints"]


@pytest.mark.slow
def test_dataset_shard_not_divisible_by_devices_is_refused(four_devices):
    result, _ = four_devices
    message = result["shard_error"]
    assert "data.num_train=30" in message and "4 devices" in message and "multiple of 4" in message
    assert "train.parallel='shard_map'" in result["pmap_sharded_error"]


@pytest.mark.slow
def test_sharded_split_roundtrip_and_gather(four_devices):
    result, _ = four_devices
    assert result["sharded_devices"] == 4
    assert result["sharded_roundtrip"] and result["sharded_gather"]


def test_unknown_mode_is_refused():
    from fno_jax.parallel import DataParallel

    with pytest.raises(ValueError, match="train.parallel='vmap' is not one of"):
        DataParallel("vmap")


def test_replicate_layouts():
    import jax

    from fno_jax.parallel import DataParallel

    tree = {"w": np.arange(6.0, dtype=np.float32).reshape(2, 3), "step": np.int32(3)}
    pm = DataParallel("pmap").replicate(tree)
    assert pm["w"].shape == (jax.local_device_count(), 2, 3)
    np.testing.assert_array_equal(DataParallel("pmap").unreplicate(pm)["w"], tree["w"])
    sm = DataParallel("shard_map").replicate(tree)
    assert sm["w"].shape == (2, 3) and sm["w"].sharding.is_fully_replicated
    assert int(sm["step"]) == 3
