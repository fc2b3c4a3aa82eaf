"""Multi-process start-up, and the few cross-process agreements a run needs (barriers, decisions, shared values).

Every process runs the same program; `jax.devices()` then lists the devices of all of them and the data-parallel
steps (`fno_jax.runtime.parallel`) span them all. Orbax checkpoints are saved and restored collectively (every process
calls save/restore); every other shared file has one writer, process 0 (`is_main_process`), and the others wait for it
at a `barrier`. `fno_jax.runtime.log_setup.configure_logging` shows the other processes' warnings and errors only.

How the job is found (`launch_spec`, a pure function of the environment), in order:
1. explicit: arguments, or FNO_JAX_COORDINATOR=host:port (or JAX's own JAX_COORDINATOR_ADDRESS) with
   FNO_JAX_NUM_PROCESSES and FNO_JAX_PROCESS_ID (JAX_NUM_PROCESSES / JAX_PROCESS_ID also accepted). Every process
   then drives every device it can see (JAX's cluster detection is switched off, so SLURM or Open MPI cannot pin it to
   one GPU by its local rank); JAX_LOCAL_DEVICE_IDS, which JAX reads itself, still narrows that down. A coordinator
   address without the process count or id is completed by JAX from a launcher it detects (below), as JAX does;
   with no launcher it is an error that names the missing variable;
2. FNO_JAX_DISTRIBUTED=0: a single process, whatever the launcher says;
3. a launcher that `jax.distributed.initialize()` detects by itself:
   - SLURM: a task of an `srun` step (SLURM_STEP_ID and SLURM_PROCID set) with SLURM_STEP_NUM_TASKS > 1. A salloc
     or batch shell also carries SLURM_NTASKS, but no step: a program started there directly is one process. JAX
     gives each task one GPU, number SLURM_LOCALID, unless JAX_LOCAL_DEVICE_IDS says otherwise (one task per node
     driving all its GPUs: scripts/slurm_gpu.sbatch sets it);
   - Open MPI (OMPI_COMM_WORLD_SIZE > 1);
   - a Cloud TPU VM (a TPU chip on the PCI bus, the check JAX itself makes; on GKE, TPU_WORKER_HOSTNAMES or
     TPU_PROCESS_ADDRESSES with several hosts). JAX reads the slice's workers from the TPU metadata server, so this
     works in a plain `gcloud compute tpus tpu-vm ssh` session, where no TPU_* variable is set; on a single-host
     TPU VM it yields one process;
   - FNO_JAX_DISTRIBUTED=1 to ask for auto-detection anyway.
Otherwise the run is a single process and nothing is done.
"""

from __future__ import annotations

import functools
import glob
import os
from collections.abc import Callable, Mapping
from typing import TypeVar

import jax
import numpy as np

_ADDRESS_VARS = ("FNO_JAX_COORDINATOR", "JAX_COORDINATOR_ADDRESS")
_NUM_VARS = ("FNO_JAX_NUM_PROCESSES", "JAX_NUM_PROCESSES")
_ID_VARS = ("FNO_JAX_PROCESS_ID", "JAX_PROCESS_ID")
# A Cloud TPU VM's TPU chips on the PCI bus: Google's vendor id and the TPU device ids (v3, v4, v5p, v5e, v6e, 7x;
# the same test `jax` makes before it loads libtpu). Other Google devices (the gVNIC network card of any GCE VM)
# share the vendor id. A newer TPU generation is started with FNO_JAX_DISTRIBUTED=1 (the TPU launch script sets it).
_GOOGLE_PCI_VENDOR = "0x1ae0"
_TPU_PCI_DEVICES = frozenset({"0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076"})
PCI_DEVICES = "/sys/bus/pci/devices"
T = TypeVar("T")


def _first(env: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    return next((env[v] for v in names if env.get(v)), None)


def _int_var(env: Mapping[str, str], names: tuple[str, ...], value: int | None) -> int | None:
    """`value`, else the first of `names` set in `env`, as an int; None when neither is there."""
    if value is not None:
        return int(value)
    raw = _first(env, names)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{names[0]}={raw!r} must be an integer.") from None


def _count(env: Mapping[str, str], name: str) -> int:
    raw = env.get(name, "") or "1"
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} must be an integer; this launcher's environment is not usable.") from None


def _slurm_step_tasks(env: Mapping[str, str]) -> int:
    """Tasks of the srun step this process belongs to; 1 outside a step (salloc or batch shell, plain shell)."""
    in_step = (env.get("SLURM_STEP_ID") or env.get("SLURM_STEPID")) and env.get("SLURM_PROCID")
    if not in_step:
        return 1
    return _count(env, "SLURM_STEP_NUM_TASKS" if env.get("SLURM_STEP_NUM_TASKS") else "SLURM_NTASKS")


def _tpu_hosts(env: Mapping[str, str]) -> int:
    hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES") or ""
    return len([h for h in hosts.split(",") if h.strip()])


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def on_cloud_tpu_vm(pci_devices: str = PCI_DEVICES) -> bool:
    """True on a machine with a Google TPU chip attached (a Cloud TPU VM host)."""
    for device in glob.glob(os.path.join(pci_devices, "*")):
        vendor, kind = _read(os.path.join(device, "vendor")), _read(os.path.join(device, "device"))
        if vendor == _GOOGLE_PCI_VENDOR and kind in _TPU_PCI_DEVICES:
            return True
    return False


def _launcher_processes(env: Mapping[str, str], cloud_tpu: bool) -> int | None:
    """Processes of the job as the launcher that JAX detects tells it: a count for SLURM and Open MPI, None for a
    launcher whose count JAX reads elsewhere (a Cloud TPU VM's metadata server, FNO_JAX_DISTRIBUTED=1), 1 for none."""
    for count in (_slurm_step_tasks(env), _count(env, "OMPI_COMM_WORLD_SIZE")):
        if count > 1:
            return count
    if _tpu_hosts(env) > 1 or cloud_tpu or env.get("FNO_JAX_DISTRIBUTED", "") == "1":
        return None
    return 1


def launch_spec(
    env: Mapping[str, str] | None = None,
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    cloud_tpu: bool = False,
) -> dict | None:
    """Keyword arguments for `jax.distributed.initialize`, {} for auto-detection, or None for a single process.

    Pure (reads `env`, default `os.environ`; `cloud_tpu` says whether this host is a Cloud TPU VM, see
    `on_cloud_tpu_vm`), so the launch logic is testable without starting anything.

    An explicit launch (address, count and id all known) returns them with `cluster_detection_method="deactivate"`:
    JAX then leaves `local_device_ids` unset, so each process drives all the devices it sees (narrowed only by
    JAX_LOCAL_DEVICE_IDS, which JAX reads itself), instead of the one GPU that SLURM's or Open MPI's local rank would
    pick. `cluster_detection_method` and JAX_LOCAL_DEVICE_IDS behave so in jax 0.7.1 to 0.11 (sources of 0.7.1, 0.8.0,
    0.9.2, 0.10.2 and 0.11.2 read).
    """
    env = os.environ if env is None else env
    wanted = env.get("FNO_JAX_DISTRIBUTED", "")
    if wanted not in ("", "0", "1"):
        raise ValueError(f"FNO_JAX_DISTRIBUTED={wanted!r} must be 1 (initialize), 0 (single process) or unset.")
    address = coordinator_address or _first(env, _ADDRESS_VARS)
    if address:
        if ":" not in address:
            raise ValueError(f"coordinator address {address!r} must be host:port, e.g. 10.0.0.2:12355.")
        num = _int_var(env, _NUM_VARS, num_processes)
        pid = _int_var(env, _ID_VARS, process_id)
        if num is None or pid is None:
            # JAX completes a bare coordinator address from the launcher it detects (JAX_COORDINATOR_ADDRESS is
            # its own variable); without one, say which variable is missing.
            launcher = _launcher_processes(env, cloud_tpu)
            if launcher == 1:
                missing = _NUM_VARS[0] if num is None else _ID_VARS[0]
                raise ValueError(
                    f"a coordinator address is set but {missing} is missing and no launcher (srun, mpirun, a Cloud "
                    f"TPU VM) provides it; set {_NUM_VARS[0]} and {_ID_VARS[0]} on every process, or unset "
                    "FNO_JAX_COORDINATOR / JAX_COORDINATOR_ADDRESS for a single-process run."
                )
            given = {"num_processes": num, "process_id": pid}
            return {"coordinator_address": address, **{k: v for k, v in given.items() if v is not None}}
        if num < 1 or not 0 <= pid < num:
            raise ValueError(f"process id {pid} must lie in [0, {num}) for a job of {num} process(es).")
        if num == 1:
            return None
        return {
            "coordinator_address": address,
            "num_processes": num,
            "process_id": pid,
            "cluster_detection_method": "deactivate",
        }
    if num_processes is not None or process_id is not None:
        raise ValueError("num_processes/process_id were given without a coordinator address (host:port).")
    if wanted == "0":
        return None
    return {} if _launcher_processes(env, cloud_tpu) != 1 else None


def maybe_initialize(
    coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> bool:
    """Join the other processes of this job, if it has several; True when it did (or already had).

    Call before any JAX computation. On CPU-only jobs the cross-process collectives go through gloo.
    """
    spec = launch_spec(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        cloud_tpu=on_cloud_tpu_vm(),
    )
    if spec is None:
        return False
    if jax.distributed.is_initialized():
        return True
    # CPU processes need a collectives backend to run psum/pmean across processes (gloo ships with jaxlib).
    if os.environ.get("JAX_PLATFORMS", "").split(",")[0] == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**spec)
    return True


def is_main_process() -> bool:
    """True on process 0, the one that writes a run's files, logs and reports."""
    return jax.process_index() == 0


def on_main_process(fn: Callable[..., T]) -> Callable[..., T | None]:
    """`fn` run by process 0 only (other processes get None): for writers of files that all processes share."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        return fn(*args, **kwargs) if is_main_process() else None

    return run


# ---- agreements between processes (no-ops in a single process) -----------------------------------------------


def barrier(name: str) -> None:
    """Return once every process has called `barrier(name)` (same name, same order everywhere).

    Used after process 0 alone wrote or moved a shared file, so that no process reads or writes it too early.
    """
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"fno_jax:{name}")


def each_process(value: int) -> list[int]:
    """Every process's `value`, in process order (each process passes its own; all get the same list)."""
    if jax.process_count() == 1:
        return [int(value)]
    from jax.experimental import multihost_utils

    values = multihost_utils.process_allgather(np.array([int(value)], np.int32))
    return [int(v) for v in np.asarray(values).reshape(-1)]


def all_processes(flag: bool) -> bool:
    """True when `flag` is true on every process (each process passes its own)."""
    return all(each_process(bool(flag)))


def from_main_process(compute: Callable[[], np.ndarray], size: int) -> np.ndarray:
    """`compute()` (a float64 array of `size` values) run on process 0 alone and handed to every process, bitwise.

    The values travel as their bytes, so no float rounding happens on the way. When `compute` raises on process 0,
    it re-raises there and the other processes raise a RuntimeError pointing at process 0's log (nobody waits).
    """
    if jax.process_count() == 1:
        return np.asarray(compute(), np.float64).reshape(size)
    from jax.experimental import multihost_utils

    payload, error = np.zeros(size, np.float64), None
    if is_main_process():
        try:
            payload = np.asarray(compute(), np.float64).reshape(size)
        except Exception as err:  # noqa: BLE001 - re-raised below, after the others were told
            error = err
    words = np.concatenate([[np.uint32(error is None)], payload.view(np.uint32)])
    words = np.asarray(multihost_utils.broadcast_one_to_all(words.astype(np.uint32)))
    if error is not None:
        raise error
    if not words[0]:
        raise RuntimeError("process 0 failed to compute a value every process needs; see process 0's error.")
    return words[1:].astype(np.uint32).view(np.float64).copy()
