"""Multi-process start-up: `jax.distributed.initialize()` when the run was launched as several processes."""

import os

import jax

# Variables set by the launchers we document (our own, SLURM, Open MPI, Cloud TPU pods set their own config).
_COORDINATOR_VARS = ("FNO_JAX_COORDINATOR", "JAX_COORDINATOR_ADDRESS")


def maybe_initialize() -> bool:
    """Join the other processes of this job, if it has several; True when it did.

    Explicit: FNO_JAX_COORDINATOR=host:port, FNO_JAX_NUM_PROCESSES, FNO_JAX_PROCESS_ID. Otherwise SLURM
    (SLURM_NTASKS > 1) and Cloud TPU pod slices are detected by `jax.distributed.initialize()` itself.
    """
    address = next((os.environ[v] for v in _COORDINATOR_VARS if os.environ.get(v)), None)
    if address:
        jax.distributed.initialize(
            coordinator_address=address,
            num_processes=int(os.environ["FNO_JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["FNO_JAX_PROCESS_ID"]),
        )
        return True
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 or os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0:
        jax.distributed.initialize()
        return True
    return False
