"""Four forced host devices (one subprocess, shared by every check here): data-parallel runs equal the one-device run,
the generate job writes the same dataset, a 4-device pretraining fine-tunes on one device, and layouts that cannot
split over 4 devices are refused before any work.

Both compile paths (jit of shard_map, pmap) are checked. Data order is a function of (seed, step) only and the
gradient is the mean over the global batch whichever way it is split, so the params agree up to float32 reduction
order: per step the mean gradient differs by ~1e-7 relative, Adam's update direction by as much, and ten steps of
lr 1e-3 move the params by ~1e-2 of their size, so 1e-5 relative is a loose bound that a wrong split (a device
training on the wrong samples, a sum instead of a mean) exceeds by orders of magnitude.
"""

import json

import jax
import numpy as np
import pytest
from conftest import relative_difference, run_python, tiny_config

from fno_jax import checkpoint, train
from fno_jax.data import SPLITS, generate_dataset, open_dataset
from fno_jax.runtime.parallel import make_parallel

pytestmark = pytest.mark.slow
MODES = ("shard_map", "pmap")
RTOL = 1e-5

# Runs in a fresh interpreter with 4 forced host devices; prints one JSON line.
_FOUR_DEVICES = r"""
import json, sys
import jax, numpy as np
sys.path.insert(0, "tests")
from conftest import tiny_config
from fno_jax.checkpoint import load_params
from fno_jax.data import generate_dataset
from fno_jax.runtime.parallel import make_parallel
from fno_jax.train import train_and_evaluate

out, result = sys.argv[1], {"devices": jax.device_count()}
for mode in ("shard_map", "pmap"):
    train_and_evaluate(tiny_config(**{"train.parallel": mode}), f"{out}/{mode}")
    np.savez(f"{out}/{mode}.npz", *jax.tree_util.tree_leaves(load_params(f"{out}/{mode}")))
generate_dataset(tiny_config(), f"{out}/dataset")
# Two packed runs (seeds 0 and 1 of one pool) on the 4-device mesh: the run axis beside the data axis.
from fno_jax.train import train_and_evaluate_packed
for mode in ("shard_map", "pmap"):
    group = [tiny_config(seed=k, **{"data.seed": 0, "train.parallel": mode}) for k in range(2)]
    train_and_evaluate_packed(group, [f"{out}/packed_{mode}/{k}" for k in range(2)])
    np.savez(f"{out}/packed_{mode}.npz", *jax.tree_util.tree_leaves(load_params(f"{out}/packed_{mode}/0")))
try:  # global batch 6 over 4 devices: refused before any work
    train_and_evaluate(tiny_config(**{"train.batch_size": 6}), f"{out}/bad_batch")
except ValueError as err:
    result["batch_error"] = str(err)
    result["bad_batch_workdir"] = __import__("os").path.exists(f"{out}/bad_batch")
try:
    make_parallel("shard_map").host_rows(30)
except ValueError as err:
    result["rows_error"] = str(err)
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    out = tmp_path_factory.mktemp("four_devices")
    proc = run_python(["-c", _FOUR_DEVICES, str(out)], devices=4)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    params = {m: list(np.load(out / f"{m}.npz").values()) for m in MODES}
    params.update({f"packed_{m}": list(np.load(out / f"packed_{m}.npz").values()) for m in MODES})
    return out, result, params


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    assert jax.device_count() == 1, "run this module without forced host devices"
    out = tmp_path_factory.mktemp("one_device")
    params = {}
    for mode in MODES:
        train.train_and_evaluate(tiny_config(**{"train.parallel": mode}), str(out / mode))
        params[mode] = jax.tree_util.tree_leaves(checkpoint.load_params(out / mode))
    return out, params


def test_one_device_modes_agree(one_device):
    # One device: both forms run the same program on the same batch; only compilation differs.
    _, params = one_device
    assert relative_difference(params["pmap"], params["shard_map"]) < RTOL


@pytest.mark.parametrize("mode", MODES)
def test_four_devices_match_one_device(four_devices, one_device, mode):
    _, result, params = four_devices
    assert result["devices"] == 4
    assert relative_difference(params[mode], one_device[1]["shard_map"]) < RTOL


@pytest.mark.parametrize("mode", MODES)
def test_packed_runs_on_four_devices_match_one_device(four_devices, one_device, mode):
    # Run 0 of a packed group (seed 0, data seed 0: the tiny run's own data) against the tiny run on one device.
    _, _, params = four_devices
    assert relative_difference(params[f"packed_{mode}"], one_device[1]["shard_map"]) < RTOL


def test_batch_not_divisible_by_devices_is_refused_before_work(four_devices):
    _, result, _ = four_devices
    message = result["batch_error"]
    assert "train.batch_size=6" in message and "4 devices" in message and "multiple of 4" in message
    assert not result["bad_batch_workdir"]
    assert "train.batch_size=30 is not divisible by the 4 devices" in result["rows_error"]


def test_generate_job_on_four_devices_writes_the_same_dataset(four_devices, tmp_path):
    out, _, _ = four_devices
    one = generate_dataset(tiny_config(), tmp_path / "one")
    four = open_dataset(out / "dataset")
    assert four.metadata["normalization"] == one.metadata["normalization"]
    for split in SPLITS:
        a, b = four.read(split, slice(None)), one.read(split, slice(None))
        assert all(np.array_equal(a[k], b[k]) for k in a), split


def test_finetune_from_a_four_device_pretrain_on_one_device(four_devices, one_device, tmp_path):
    out, _, _ = four_devices
    assert json.loads((out / "shard_map" / "summary.json").read_text())["devices"] == 4
    config = tiny_config(init_from=str(out / "shard_map"), **{"train.num_steps": 2})
    summary = train.train_and_evaluate(config, str(tmp_path / "ft1"))
    assert summary["mode"] == "finetune" and summary["devices"] == jax.device_count() == 1
    assert np.isfinite(summary["test_rel_l2"])


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="train.parallel='vmap' is not one of"):
        make_parallel("vmap")


def test_state_layouts():
    tree = {"w": np.arange(6.0, dtype=np.float32).reshape(2, 3), "step": np.int32(3)}
    pm = make_parallel("pmap")
    stacked = pm.put_state(tree)
    assert stacked["w"].shape == (jax.local_device_count(), 2, 3)
    np.testing.assert_array_equal(pm.state_to_save(stacked)["w"], tree["w"])
    sm = make_parallel("shard_map").put_state(tree)
    assert sm["w"].shape == (2, 3) and sm["w"].sharding.is_fully_replicated
    assert int(sm["step"]) == 3
