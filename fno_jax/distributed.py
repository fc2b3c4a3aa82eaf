"""Multi-process start-up: `jax.distributed.initialize()` when the run was launched as several processes.

Every process runs the same program; `jax.devices()` then lists the devices of all of them and the data-parallel
steps (`fno_jax.parallel`) span them all. Orbax checkpoints are saved and restored collectively (every process calls
save/restore); metrics, summaries and progress are written by process 0 only (`is_main_process`),
and `fno_jax.log_setup.configure_logging` shows the other processes' warnings and errors only.

How the job is found, in order:
1. explicit arguments or FNO_JAX_COORDINATOR=host:port (or JAX_COORDINATOR_ADDRESS) with FNO_JAX_NUM_PROCESSES and
   FNO_JAX_PROCESS_ID (JAX_NUM_PROCESSES / JAX_PROCESS_ID also accepted);
2. a launcher that `jax.distributed.initialize()` detects by itself: SLURM (SLURM_NTASKS > 1), Open MPI
   (OMPI_COMM_WORLD_SIZE > 1), a multi-host Cloud TPU slice (TPU_WORKER_HOSTNAMES with several hosts), or
   FNO_JAX_DISTRIBUTED=1 to ask for auto-detection anyway.
Otherwise the run is a single process and nothing is done.
"""

import os
from collections.abc import Mapping

import jax

_ADDRESS_VARS = ("FNO_JAX_COORDINATOR", "JAX_COORDINATOR_ADDRESS")
_NUM_VARS = ("FNO_JAX_NUM_PROCESSES", "JAX_NUM_PROCESSES")
_ID_VARS = ("FNO_JAX_PROCESS_ID", "JAX_PROCESS_ID")


def _first(env: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    return next((env[v] for v in names if env.get(v)), None)


def _int_var(env: Mapping[str, str], names: tuple[str, ...], value: int | None) -> int:
    if value is not None:
        return int(value)
    raw = _first(env, names)
    if raw is None:
        raise ValueError(
            f"a coordinator address is set but {names[0]} is missing; set {names[0]} (and "
            f"{'FNO_JAX_PROCESS_ID' if names is _NUM_VARS else 'FNO_JAX_NUM_PROCESSES'}) on every process, "
            "or unset FNO_JAX_COORDINATOR for a single-process run."
        )
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{names[0]}={raw!r} must be an integer.") from None


def launch_spec(
    env: Mapping[str, str] | None = None,
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> dict | None:
    """Keyword arguments for `jax.distributed.initialize`, {} for auto-detection, or None for a single process.

    Pure (reads `env`, default `os.environ`), so the launch logic is testable without starting anything.
    """
    env = os.environ if env is None else env
    address = coordinator_address or _first(env, _ADDRESS_VARS)
    if address:
        if ":" not in address:
            raise ValueError(f"coordinator address {address!r} must be host:port, e.g. 10.0.0.2:12355.")
        num = _int_var(env, _NUM_VARS, num_processes)
        pid = _int_var(env, _ID_VARS, process_id)
        if num < 1 or not 0 <= pid < num:
            raise ValueError(f"process id {pid} must lie in [0, {num}) for a job of {num} process(es).")
        if num == 1:
            return None
        return {"coordinator_address": address, "num_processes": num, "process_id": pid}
    if num_processes is not None or process_id is not None:
        raise ValueError("num_processes/process_id were given without a coordinator address (host:port).")
    several = (
        int(env.get("SLURM_NTASKS", "1") or 1) > 1
        or int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1
        or "," in env.get("TPU_WORKER_HOSTNAMES", "")
        or env.get("FNO_JAX_DISTRIBUTED", "") == "1"
    )
    return {} if several else None


def maybe_initialize(
    coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> bool:
    """Join the other processes of this job, if it has several; True when it did (or already had).

    Call before any JAX computation. On CPU-only jobs the cross-process collectives go through gloo.
    """
    spec = launch_spec(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)
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
