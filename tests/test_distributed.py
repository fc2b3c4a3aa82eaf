"""Multi-process runs: launch detection, and two processes over loopback train like one process.

Two CPU processes (one device each) joined by `jax.distributed` over 127.0.0.1, cross-process collectives through
gloo, run the same global batch as one process on one device: same data order, gradient mean over the same 8
samples, so the params agree to float32 reduction order (1e-5 relative; see tests/test_parallel.py). Checkpoints
are saved collectively into one workdir and read back; only process 0 writes metrics and the summary.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, relative_difference, tiny_config

from fno_jax.distributed import launch_spec

RTOL = 1e-5  # float32 reduction order, see tests/test_four_devices.py

# ---- launch detection (pure) ----------------------------------------------------------------------------------


def test_single_process_by_default():
    assert launch_spec({}) is None
    assert launch_spec({"SLURM_NTASKS": "1", "OMPI_COMM_WORLD_SIZE": "1"}) is None


def test_explicit_environment():
    env = {"FNO_JAX_COORDINATOR": "10.0.0.2:1234", "FNO_JAX_NUM_PROCESSES": "4", "FNO_JAX_PROCESS_ID": "3"}
    assert launch_spec(env) == {"coordinator_address": "10.0.0.2:1234", "num_processes": 4, "process_id": 3}
    env = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}
    assert launch_spec(env)["num_processes"] == 2
    # Arguments (flags) win over the environment.
    spec = launch_spec(env, coordinator_address="h:2", num_processes=3, process_id=1)
    assert spec == {"coordinator_address": "h:2", "num_processes": 3, "process_id": 1}
    assert launch_spec({}, coordinator_address="h:2", num_processes=1, process_id=0) is None


@pytest.mark.parametrize("env", [{"SLURM_NTASKS": "8"}, {"OMPI_COMM_WORLD_SIZE": "2"}, {"TPU_WORKER_HOSTNAMES": "a,b"}])
def test_launchers_left_to_auto_detection(env):
    assert launch_spec(env) == {}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FNO_JAX_COORDINATOR": "10.0.0.2:1234", "FNO_JAX_PROCESS_ID": "0"}, "FNO_JAX_NUM_PROCESSES is missing"),
        ({"FNO_JAX_COORDINATOR": "10.0.0.2:1234", "FNO_JAX_NUM_PROCESSES": "2"}, "FNO_JAX_PROCESS_ID is missing"),
        ({"FNO_JAX_COORDINATOR": "10.0.0.2", "FNO_JAX_NUM_PROCESSES": "2"}, "must be host:port"),
        (
            {"FNO_JAX_COORDINATOR": "h:1", "FNO_JAX_NUM_PROCESSES": "2", "FNO_JAX_PROCESS_ID": "2"},
            r"process id 2 must lie in \[0, 2\)",
        ),
        ({"FNO_JAX_COORDINATOR": "h:1", "FNO_JAX_NUM_PROCESSES": "two"}, "must be an integer"),
    ],
)
def test_bad_launch_environment(env, message):
    with pytest.raises(ValueError, match=message):
        launch_spec(env)


# ---- two processes over loopback ------------------------------------------------------------------------------

_WORKER = r"""
import json, sys
from fno_jax.distributed import maybe_initialize
assert maybe_initialize()
import jax, numpy as np
sys.path.insert(0, "tests")
from conftest import tiny_config
from fno_jax.checkpoint import load_params
from fno_jax.parallel import make_parallel
from fno_jax.train import train_and_evaluate

workdir = sys.argv[1]
# Host-fed batches: each process reads only the rows of each batch that its own device trains on.
summary = train_and_evaluate(tiny_config(**{"data.loader": "host"}), workdir)
params = load_params(workdir)
if jax.process_index() == 0:
    np.savez(workdir + ".npz", *jax.tree_util.tree_leaves(params))
# A host-fed batch: each process supplies only its own rows; a jitted gather reads across processes.
dp = make_parallel("shard_map")
x = np.arange(8 * 2, dtype=np.float32).reshape(8, 2)
rows = dp.host_rows(8)
batch = dp.put_batch({"x": x[rows]}, 8)["x"]
index = np.array([7, 0, 5, 2])
gathered = jax.jit(lambda d, i: d[i], out_shardings=dp.replicated)(batch, index)
print(json.dumps({
    "process": jax.process_index(), "devices": jax.device_count(), "summary_devices": summary["devices"],
    "rows": [rows.start, rows.stop], "gather_ok": bool(np.array_equal(np.asarray(gathered), x[index])),
}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    import jax

    from fno_jax.checkpoint import load_params
    from fno_jax.train import train_and_evaluate

    workdir = tmp_path / "two_processes"
    port = _free_port()
    procs = []
    for pid in range(2):
        env = dict(
            os.environ,
            JAX_PLATFORMS="cpu",
            FNO_JAX_COORDINATOR=f"127.0.0.1:{port}",
            FNO_JAX_NUM_PROCESSES="2",
            FNO_JAX_PROCESS_ID=str(pid),
        )
        env.pop("XLA_FLAGS", None)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, str(workdir)],
                cwd=REPO,
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )  # fmt: skip
        )
    # The reference runs here meanwhile: one process, one device, the same global batch.
    train_and_evaluate(tiny_config(), str(tmp_path / "one_process"))
    reference = jax.tree_util.tree_leaves(load_params(tmp_path / "one_process"))
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-4000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()

    assert [r["process"] for r in results] == [0, 1]
    assert all(r["devices"] == 2 and r["summary_devices"] == 2 for r in results)
    assert [r["rows"] for r in results] == [[0, 4], [4, 8]]
    assert all(r["gather_ok"] for r in results)
    params = list(np.load(f"{workdir}.npz").values())
    assert relative_difference(params, reference) < RTOL
    # Process 0 alone wrote the run's records: one metrics line per logged step, one summary.
    with open(workdir / "metrics.jsonl") as f:
        steps = [json.loads(line)["step"] for line in f if line.strip()]
    assert steps == [5, 10]
    assert json.loads((workdir / "summary.json").read_text())["devices"] == 2
