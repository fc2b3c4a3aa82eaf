"""Multi-process runs: launch detection, and a multi-host job over loopback that trains, resumes and recovers
like one process.

One job of two CPU processes with two forced devices each (4 devices), joined by `jax.distributed` over 127.0.0.1
with cross-process collectives through gloo, runs the scenarios of `tests/multihost_worker.py` in one launch (one
subprocess pair keeps this affordable on a small machine). The same global batch is split over 4 devices instead
of 1, so the params agree with one process on one device to float32 reduction order (1e-5 relative; see
tests/test_four_devices.py). Resuming across topologies (2 processes -> 1, 1 -> 2) continues from the checkpoint
and ends with the params of an uninterrupted run; process 0 alone moves broken steps and rewrites metrics.jsonl.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
from conftest import FAST_COMPILE, REPO, last_json_lines, relative_difference, tiny_config
from multihost_worker import CHAIN, RACE_RUNS, corrupt_step, race_template
from test_train import crash_after

from experiments.sweep import check_shard
from fno_jax.runtime.distributed import launch_spec, on_cloud_tpu_vm

RTOL = 1e-5  # float32 reduction order, see tests/test_four_devices.py

# ---- launch detection (pure) ----------------------------------------------------------------------------------


def test_single_process_by_default():
    assert launch_spec({}) is None
    assert launch_spec({"SLURM_NTASKS": "1", "OMPI_COMM_WORLD_SIZE": "1"}) is None


# An explicit launch switches JAX's cluster detection off, so that no launcher pins a process to one GPU.
_EXPLICIT = {"cluster_detection_method": "deactivate"}


def test_explicit_environment():
    env = {"FNO_JAX_COORDINATOR": "10.0.0.2:1234", "FNO_JAX_NUM_PROCESSES": "4", "FNO_JAX_PROCESS_ID": "3"}
    spec = launch_spec(env)
    assert spec == {"coordinator_address": "10.0.0.2:1234", "num_processes": 4, "process_id": 3, **_EXPLICIT}
    env = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}
    assert launch_spec(env) == {"coordinator_address": "h:1", "num_processes": 2, "process_id": 0, **_EXPLICIT}
    # Arguments (flags) win over the environment.
    spec = launch_spec(env, coordinator_address="h:2", num_processes=3, process_id=1)
    assert spec == {"coordinator_address": "h:2", "num_processes": 3, "process_id": 1, **_EXPLICIT}
    assert launch_spec({}, coordinator_address="h:2", num_processes=1, process_id=0) is None


# What SLURM sets: a batch or salloc shell has the job's SLURM_NTASKS (and SLURM_PROCID=0) but no step; each task
# of an srun step also has SLURM_STEP_ID and the step's task count.
_BATCH_SHELL = {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "8", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
_SRUN_TASK = {**_BATCH_SHELL, "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "8", "SLURM_STEP_NODELIST": "n[1-2]"}


def test_explicit_launch_inside_a_launcher_still_drives_every_local_device():
    # FNO_JAX_COORDINATOR & co. inside an srun step (or under mpirun): explicit wins, and detection stays off, so a
    # task that was given all GPUs of its node (one task per node) is not pinned to GPU SLURM_LOCALID.
    env = {**_SRUN_TASK, "FNO_JAX_COORDINATOR": "n1:1234", "FNO_JAX_NUM_PROCESSES": "2", "FNO_JAX_PROCESS_ID": "1"}
    assert launch_spec(env) == {"coordinator_address": "n1:1234", "num_processes": 2, "process_id": 1, **_EXPLICIT}
    assert launch_spec({**env, "OMPI_COMM_WORLD_SIZE": "2"})["cluster_detection_method"] == "deactivate"


class _Stopped(Exception):
    pass


class _NoRuntime:
    """Stands in for jaxlib's distributed runtime: `initialize` stops where it would start a service or a client."""

    def __getattr__(self, name):
        raise _Stopped(name)


def test_installed_jax_pins_gpus_only_where_launch_spec_lets_it(monkeypatch):
    """What the installed jax makes of launch_spec's arguments in task 1 of an srun step, up to the point where it
    would start its distributed runtime: the GPUs it makes visible (`jax_cuda_visible_devices`). Private jax API,
    on purpose: this is the behaviour launch_spec relies on (the same code in jax 0.7.1 to 0.11.2)."""
    from jax._src import distributed as jax_distributed

    task = {"SLURM_JOB_ID": "77", "SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "2", "SLURM_PROCID": "1"}
    for name, value in {**task, "SLURM_LOCALID": "1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("JAX_LOCAL_DEVICE_IDS", "JAX_COORDINATOR_ADDRESS", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    visible = {}
    monkeypatch.setattr(jax_distributed.config, "update", visible.__setitem__)
    monkeypatch.setattr(jax_distributed, "_jax", _NoRuntime())

    def gpus(spec: dict) -> str:
        visible.clear()
        with pytest.raises(_Stopped):
            jax_distributed.State().initialize(**spec)
        return visible.get("jax_cuda_visible_devices", "all")

    explicit = launch_spec({"FNO_JAX_COORDINATOR": "n1:1234", "FNO_JAX_NUM_PROCESSES": "2", "FNO_JAX_PROCESS_ID": "1"})
    assert gpus(explicit) == "all"  # every GPU the process was given
    without = {k: v for k, v in explicit.items() if k != "cluster_detection_method"}
    assert gpus(without) == "1"  # what jax does otherwise: GPU SLURM_LOCALID only (the bug this avoids)
    assert gpus({}) == "1"  # auto-detected srun task: one GPU per task (slurm_gpu.sbatch's default layout)
    monkeypatch.setenv("JAX_LOCAL_DEVICE_IDS", "0,1,2,3")  # slurm_gpu.sbatch's one-task-per-node layout
    assert gpus({}) == "0,1,2,3" and gpus(explicit) == "0,1,2,3"


@pytest.mark.parametrize(
    ("env", "cloud_tpu"),
    [
        ({**_SRUN_TASK, "JAX_COORDINATOR_ADDRESS": "n1:1234"}, False),
        ({"OMPI_COMM_WORLD_SIZE": "4", "JAX_COORDINATOR_ADDRESS": "n1:1234"}, False),
        ({"JAX_COORDINATOR_ADDRESS": "n1:1234"}, True),
        ({"TPU_WORKER_HOSTNAMES": "a,b", "FNO_JAX_COORDINATOR": "n1:1234"}, False),
        ({"JAX_COORDINATOR_ADDRESS": "n1:1234", "FNO_JAX_DISTRIBUTED": "1"}, False),
    ],
)
def test_a_bare_coordinator_address_is_completed_by_the_launcher(env, cloud_tpu):
    # JAX's own JAX_COORDINATOR_ADDRESS alone, as JAX accepts it: the launcher JAX detects supplies the process
    # count and id (and JAX its per-process devices), so the address is passed on and nothing is refused.
    assert launch_spec(env, cloud_tpu=cloud_tpu) == {"coordinator_address": "n1:1234"}
    # Whatever is given explicitly is passed on with it.
    spec = launch_spec({**env, "JAX_PROCESS_ID": "1"}, cloud_tpu=cloud_tpu)
    assert spec == {"coordinator_address": "n1:1234", "process_id": 1}


@pytest.mark.parametrize(
    "env",
    [
        _SRUN_TASK,
        {"OMPI_COMM_WORLD_SIZE": "2"},
        {"TPU_WORKER_HOSTNAMES": "a,b"},
        {"TPU_PROCESS_ADDRESSES": "10.0.0.1:8476,10.0.0.2:8476"},
        {"FNO_JAX_DISTRIBUTED": "1"},
    ],
)
def test_launchers_left_to_auto_detection(env):
    assert launch_spec(env) == {}


@pytest.mark.parametrize(
    "env",
    [
        _BATCH_SHELL,  # python started in the batch script or an salloc shell, outside srun
        {**_SRUN_TASK, "SLURM_STEP_NUM_TASKS": "1"},  # `srun -n 1` inside an 8-task allocation
        {"TPU_WORKER_HOSTNAMES": "localhost"},
        {**_SRUN_TASK, "FNO_JAX_DISTRIBUTED": "0"},
    ],
)
def test_single_process_launches(env):
    assert launch_spec(env) is None


def test_cloud_tpu_vm_initializes_without_tpu_variables(tmp_path):
    # A gcloud ssh session on a TPU VM sets no TPU_* variable; the TPU chips on the PCI bus say where we are, and
    # jax.distributed.initialize() reads the slice's workers from the TPU metadata server.
    def pci(name, vendor, device):
        (tmp_path / name).mkdir()
        (tmp_path / name / "vendor").write_text(vendor + "\n")
        (tmp_path / name / "device").write_text(device + "\n")

    pci("0000:00:04.0", "0x1ae0", "0x0042")  # Google's gVNIC network card: on every GCE VM, not a TPU
    pci("0000:00:05.0", "0x10de", "0x2335")  # an NVIDIA GPU
    assert not on_cloud_tpu_vm(str(tmp_path))
    pci("0000:00:06.0", "0x1ae0", "0x005e")  # a TPU v4 chip
    assert on_cloud_tpu_vm(str(tmp_path))
    assert not on_cloud_tpu_vm(str(tmp_path / "missing"))
    assert launch_spec({}, cloud_tpu=True) == {}
    assert launch_spec({"FNO_JAX_DISTRIBUTED": "0"}, cloud_tpu=True) is None


def test_sweep_shards_are_refused_in_a_multi_process_job():
    check_shard((0, 1), process_count=2)
    check_shard((1, 4), process_count=1)
    with pytest.raises(ValueError, match=r"--shard=0/2 .* 2 processes .* drop --shard"):
        check_shard((0, 2), process_count=2)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FNO_JAX_COORDINATOR": "10.0.0.2:1234", "FNO_JAX_PROCESS_ID": "0"}, "FNO_JAX_NUM_PROCESSES is missing"),
        ({"JAX_COORDINATOR_ADDRESS": "10.0.0.2:1234"}, "FNO_JAX_NUM_PROCESSES is missing and no launcher"),
        ({**_BATCH_SHELL, "JAX_COORDINATOR_ADDRESS": "n1:1"}, "FNO_JAX_NUM_PROCESSES is missing and no launcher"),
        ({"FNO_JAX_COORDINATOR": "10.0.0.2:1234", "FNO_JAX_NUM_PROCESSES": "2"}, "FNO_JAX_PROCESS_ID is missing"),
        ({"FNO_JAX_COORDINATOR": "10.0.0.2", "FNO_JAX_NUM_PROCESSES": "2"}, "must be host:port"),
        (
            {"FNO_JAX_COORDINATOR": "h:1", "FNO_JAX_NUM_PROCESSES": "2", "FNO_JAX_PROCESS_ID": "2"},
            r"process id 2 must lie in \[0, 2\)",
        ),
        ({"FNO_JAX_COORDINATOR": "h:1", "FNO_JAX_NUM_PROCESSES": "two"}, "must be an integer"),
        ({"FNO_JAX_DISTRIBUTED": "yes"}, "must be 1 .* or unset"),
        ({**_SRUN_TASK, "SLURM_STEP_NUM_TASKS": "x"}, "SLURM_STEP_NUM_TASKS='x' must be an integer"),
    ],
)
def test_bad_launch_environment(env, message):
    with pytest.raises(ValueError, match=message):
        launch_spec(env)


# ---- one multi-host job over loopback ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_workers(root) -> list[subprocess.Popen]:
    port, procs = _free_port(), []
    for pid in range(2):
        env = dict(
            os.environ,
            JAX_PLATFORMS="cpu",
            XLA_FLAGS=f"--xla_force_host_platform_device_count=2 {FAST_COMPILE}",
            FNO_JAX_COORDINATOR=f"127.0.0.1:{port}",
            FNO_JAX_NUM_PROCESSES="2",
            FNO_JAX_PROCESS_ID=str(pid),
        )
        worker = os.path.join(REPO, "tests", "multihost_worker.py")
        procs.append(
            subprocess.Popen(
                [sys.executable, worker, str(root)],
                cwd=REPO,
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )  # fmt: skip
        )
    return procs


def _metrics_steps(workdir) -> list[int]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line)["step"] for line in f if line.strip()]


def _params(workdir):
    import jax

    from fno_jax.checkpoint import load_params

    return jax.tree_util.tree_leaves(load_params(workdir))


@pytest.mark.slow
def test_multi_host_job_resumes_across_topologies_and_recovers(tmp_path, monkeypatch):
    from fno_jax.train import train_and_evaluate

    race_template(str(tmp_path / "race_template"))
    procs = _start_workers(tmp_path)
    # Meanwhile, on this one process and one device: a run that dies after step 4 (checkpoints 2 and 4), whose
    # step 4 then breaks; the 2-process job resumes it from step 2 and finishes it.
    chain = str(tmp_path / "chain")
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        crash_after(4, patch)
        train_and_evaluate(tiny_config(**CHAIN), chain)
    corrupt_step(os.path.join(chain, "checkpoints", "4"))
    (tmp_path / "chain.ready").touch()
    # The reference: one process, one device, uninterrupted, device-resident data.
    reference = str(tmp_path / "reference")
    train_and_evaluate(tiny_config(**{**CHAIN, "data.loader": "device"}), reference)
    results = last_json_lines(procs)
    # The finished 2-process run as a 2-process run killed after its checkpoint of step 6: its later checkpoints
    # and summary gone, its metrics past step 6 still there. One process on one device finishes it again.
    two_to_one = str(tmp_path / "two_to_one")
    shutil.copytree(chain, two_to_one)
    os.remove(os.path.join(two_to_one, "summary.json"))
    for step in (8, 10):
        shutil.rmtree(os.path.join(two_to_one, "checkpoints", str(step)))
    summary = train_and_evaluate(tiny_config(**CHAIN), two_to_one)

    assert [r["process"] for r in results] == [0, 1]
    assert all(r["devices"] == 4 and r["summary_devices"] == 4 for r in results)
    assert all("train.parallel='shard_map'" in r["pmap_error"] for r in results)
    assert [r["rows"] for r in results] == [[0, 4], [4, 8]] and all(r["gather_ok"] for r in results)
    assert [r["race_clean"] for r in results] == [RACE_RUNS, RACE_RUNS]
    assert all(r["stats_equal"] for r in results)
    assert results[0]["stats_error"] == "ValueError: median source norm is nan"
    assert results[1]["stats_error"].startswith("RuntimeError: process 0 failed to compute")
    # 1 -> 2 processes (past a broken step) and 2 -> 1 both end with the uninterrupted run's params.
    expected = _params(reference)
    for workdir in (chain, two_to_one):
        assert relative_difference(_params(workdir), expected) < RTOL, workdir
        # Records past the restored checkpoint were dropped once, by process 0, and written again.
        assert _metrics_steps(workdir) == list(range(1, 11)), workdir
    assert os.listdir(os.path.join(chain, "broken_checkpoints")) == ["4"]
    assert json.loads((tmp_path / "chain" / "summary.json").read_text())["devices"] == 4
    assert summary["devices"] == 1
