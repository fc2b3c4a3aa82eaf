"""One of the two processes of tests/test_distributed.py's multi-host job (2 forced CPU devices each, gloo).

    python tests/multihost_worker.py ROOT        (FNO_JAX_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID set)

Both processes run the same scenarios, in this order, in ROOT:
  pmap       train.parallel="pmap" across processes is refused before the workdir is touched;
  resume     ROOT/chain holds a 1-process run (host-fed batches) that died after step 4, with checkpoints 2 and 4
             and step 4 then corrupted; the job resumes it on 4 devices and finishes it: process 0 alone moves
             step 4 aside and cuts metrics.jsonl back to step 2, and both continue from the checkpoint that one
             process on one device wrote. The test writes ROOT/chain meanwhile and marks it with ROOT/chain.ready;
  race       RACE_RUNS times, a broken step and a metrics file past the restored step, restored by both processes
             (ROOT/race_template is written beforehand by one process);
  stats      normalization statistics computed on process 0 alone reach process 1 bit for bit, and an error
             there reaches process 1 as an error instead of a hang;
  gather     a host-fed batch assembled from each process's rows and gathered by index across processes.
The last line printed is a JSON object with what the test checks.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import time

import numpy as np

RACE_RUNS = 20
# The chained run: a metrics record every step, a checkpoint every 2 steps, host-fed batches (each process reads its
# own rows). Evaluation every 5 steps of 10, as in the tiny run.
CHAIN = {"train.log_every": 1, "train.checkpoint_every": 2, "data.loader": "host"}


def corrupt_step(step_dir: str) -> None:
    """Garbage over every array data file of a checkpoint step (a read error for any reader)."""
    files = glob.glob(os.path.join(step_dir, "*", "**", "d", "*"), recursive=True)
    assert files, f"no array files under {step_dir}"
    for path in files:
        with open(path, "r+b") as f:
            f.write(np.random.default_rng(0).bytes(os.path.getsize(path)))


def race_template(path: str) -> None:
    """A tiny workdir with a good step 1 and a broken step 2 (written by a single process beforehand)."""
    import jax.numpy as jnp

    from fno_jax.checkpoint import Checkpointer
    from fno_jax.model.normalization import NormStats
    from fno_jax.storage.workdir import RunMeta

    state = {"params": {"w": jnp.arange(6.0).reshape(2, 3)}, "opt_state": {"mu": jnp.zeros(3)}}
    stats = NormStats(1.0, (1.0, 1.0, 1.0))
    meta = RunMeta(model={}, layout="poisson", norm_stats=stats, task_spec={}, config={}, provenance={})
    ckpt = Checkpointer(path)
    for step in (1, 2):
        ckpt.save(step, state, meta)
    ckpt.close()
    corrupt_step(os.path.join(path, "checkpoints", "2"))


def _pmap_refused(root: str, config) -> str:
    from fno_jax.train import train_and_evaluate

    workdir = os.path.join(root, "pmap")
    try:
        train_and_evaluate(config, workdir)
    except ValueError as err:
        from fno_jax.runtime.cli_errors import is_expected, one_line

        assert not os.path.exists(workdir), "the refused pmap run touched its workdir"
        # The command line reports it in one line with exit status 2 (a UserError), not a traceback.
        assert is_expected(err) and "\n" not in one_line(err), repr(err)
        return str(err)
    raise AssertionError("train.parallel='pmap' across processes was not refused")


def _wait_for(path: str, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def _race(root: str) -> int:
    """Both processes restore a workdir with a broken newest step and metrics past the good one; count clean runs."""
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from fno_jax.checkpoint import Checkpointer, restore_latest
    from fno_jax.runtime.distributed import barrier
    from fno_jax.runtime.parallel import abstract_arrays, make_parallel
    from fno_jax.storage.workdir import MetricsLog

    template = os.path.join(root, "race_template")  # written beforehand by one process (`race_template`)
    state = {"params": {"w": np.zeros((2, 3), np.float32)}, "opt_state": {"mu": np.zeros(3, np.float32)}}
    target = abstract_arrays(state, NamedSharding(make_parallel().mesh, P()))
    clean = 0
    for i in range(RACE_RUNS):
        workdir = os.path.join(root, f"race_{i}")
        metrics = os.path.join(workdir, "metrics.jsonl")
        if jax.process_index() == 0:
            shutil.copytree(template, workdir)
            with open(metrics, "w") as f:
                f.writelines(json.dumps({"step": s}) + "\n" for s in (1, 2, 3))
        barrier("test_race_copy")
        ckpt = Checkpointer(workdir)
        step, (restored,), _ = restore_latest([ckpt], target)
        MetricsLog(metrics).keep_until(step)
        # Every process sees the finished work of process 0 on return: nothing half-moved, nothing half-written.
        with open(metrics) as f:
            steps = [json.loads(line)["step"] for line in f]
        moved = sorted(os.listdir(os.path.join(workdir, "broken_checkpoints")))
        ok = step == 1 and steps == [1] and moved == ["2"] and ckpt.steps() == [1]
        clean += ok and np.array_equal(np.asarray(restored["params"]["w"]), np.arange(6.0).reshape(2, 3))
        ckpt.close()
    return clean


def _stats() -> dict:
    import jax

    from fno_jax.data.training_set import shared_stats
    from fno_jax.model.normalization import NormStats

    stats = NormStats(1 / 3, (np.pi, 2.0**-30, 7.0))

    def compute():
        assert jax.process_index() == 0, "the statistics were computed on another process than 0"
        return stats

    def fail():
        raise ValueError("median source norm is nan")

    error = None
    try:
        shared_stats(fail, "poisson")
    except (ValueError, RuntimeError) as err:
        error = f"{type(err).__name__}: {err}"
    return {"stats_equal": shared_stats(compute, "poisson") == stats, "stats_error": error}


def _gather() -> dict:
    import jax

    from fno_jax.runtime.parallel import make_parallel

    dp = make_parallel("shard_map")
    x = np.arange(8 * 2, dtype=np.float32).reshape(8, 2)
    rows = dp.host_rows(8)
    batch = dp.put_batch({"x": x[rows]}, 8)["x"]
    index = np.array([7, 0, 5, 2])
    gathered = jax.jit(lambda d, i: d[i], out_shardings=dp.replicated)(batch, index)
    return {"rows": [rows.start, rows.stop], "gather_ok": bool(np.array_equal(np.asarray(gathered), x[index]))}


def main(root: str) -> None:
    from fno_jax.runtime.distributed import maybe_initialize

    assert maybe_initialize()
    import jax

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from conftest import tiny_config

    from fno_jax.train import train_and_evaluate

    result = {"process": jax.process_index(), "devices": jax.device_count()}
    result["pmap_error"] = _pmap_refused(root, tiny_config(**{"train.parallel": "pmap"}))
    _wait_for(os.path.join(root, "chain.ready"))
    result["summary_devices"] = train_and_evaluate(tiny_config(**CHAIN), os.path.join(root, "chain"))["devices"]
    result["race_clean"] = _race(root)
    result.update(_stats())
    result.update(_gather())
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
