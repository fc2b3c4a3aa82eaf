"""End-to-end proof that the chain fno-jax needs works on `gs://`: orbax checkpoints and a tensorstore zarr dataset,
saved and read back, in one process and in a two-process JAX job. Not a test: a script to run by hand.

    python scripts/gcs_smoke.py                        # starts a local emulator (tests/gcs_emulator.py) itself
    python scripts/gcs_smoke.py --processes 2          # also a 2-process job (loopback, gloo) saving collectively
    python scripts/gcs_smoke.py --root gs://BUCKET/tmp # a real bucket, with your credentials (nothing is emulated)

What it does, timing each part:
  1. orbax: a CheckpointManager set up as fno_jax.checkpoint sets it up (params, opt_state and a JSON meta item;
     asynchronous saves; the newest 2 steps and the best by a metric kept) saves 3 steps, is reopened read-only,
     finds the steps and the best one, and restores the newest bitwise; each step is committed by its
     commit_success.txt (orbax writes no temporary directory and renames nothing on GCS).
  2. tensorstore: a zarr v3 array with the dataset store's codecs (zstd, crc32c), written in whole chunks and read
     back bitwise.
  3. fno-jax itself: a tiny run (16 x 16 Poisson, 10 steps) in a gs:// workdir (lease, metrics.jsonl, event files,
     checkpoints, summary), run again (it finds itself finished and resumes nothing), a second holder of its
     workdir refused, its best checkpoint exported as a bundle to gs:// and loaded back.
  4. (--processes 2) two processes, two CPU devices each, save one array sharded over the 4 devices collectively
     (each process writes its own shards, process 0 commits) and restore it.
Prints one line per part and "gcs smoke: all passed" at the end; exits non-zero on the first failure.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import subprocess
import sys
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _timed(label: str, fn) -> None:
    start = time.perf_counter()
    detail = fn()
    print(f"  {label}: ok in {time.perf_counter() - start:.2f} s{f' ({detail})' if detail else ''}", flush=True)


def orbax_round_trip(root: str) -> str:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import orbax.checkpoint as ocp
    from orbax.checkpoint import checkpoint_managers as policies

    from fno_jax.storage import paths

    directory = paths.join(root, "run", "checkpoints")

    def selection(metrics):
        value = float(metrics.get("selection", math.inf))
        return value if math.isfinite(value) else math.inf

    def manager(read_only: bool):
        keep = policies.AnyPreservationPolicy(
            [
                policies.LatestN(n=2),
                policies.BestN(get_metric_fn=selection, reverse=True, n=1, keep_checkpoints_without_metrics=False),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            best_fn=selection,
            best_mode="min",
            preservation_policy=None if read_only else keep,
            create=not read_only,
            read_only=read_only,
            enable_async_checkpointing=True,
        )
        handlers = {
            "params": ocp.StandardCheckpointHandler(),
            "opt_state": ocp.StandardCheckpointHandler(),
            "meta": ocp.JsonCheckpointHandler(),
        }
        return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)

    key = jax.random.PRNGKey(0)
    state = {"params": {"w": jax.random.normal(key, (8, 16)), "b": jnp.zeros(16)}, "opt_state": {"mu": jnp.ones(16)}}
    writer = manager(read_only=False)
    for step, selection_value in ((5, 0.3), (10, 0.1), (15, 0.2)):
        saved = jax.tree_util.tree_map(lambda x, s=step: x + s, state)
        args = ocp.args.Composite(
            params=ocp.args.StandardSave(saved["params"]),
            opt_state=ocp.args.StandardSave(saved["opt_state"]),
            meta=ocp.args.JsonSave({"step": step}),
        )
        writer.save(step, args=args, metrics={"selection": selection_value}, force=True)
    writer.wait_until_finished()
    writer.close()

    reader = manager(read_only=True)
    steps, best = reader.all_steps(), reader.best_step()
    assert steps == [10, 15] and best == 10, (steps, best)  # step 5: neither among the newest 2 nor the best
    assert paths.exists(paths.join(directory, "15", "commit_success.txt"))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), state)
    restored = reader.restore(
        15,
        args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract["params"]),
            opt_state=ocp.args.StandardRestore(abstract["opt_state"]),
            meta=ocp.args.JsonRestore(),
        ),
    )
    expected = jax.tree_util.tree_map(lambda x: np.asarray(x + 15), state)
    for item in ("params", "opt_state"):
        got = jax.tree_util.tree_map(np.asarray, restored[item])
        assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, got, expected[item])), item
    assert dict(restored["meta"]) == {"step": 15}
    reader.close()
    return f"steps {steps}, best {best}, restored bitwise"


def tensorstore_round_trip(root: str) -> str:
    import numpy as np
    import tensorstore as ts

    from fno_jax.storage import paths

    n, chunk, count = 16, 8, 20
    spec = {
        "driver": "zarr3",
        "kvstore": paths.tensorstore_kvstore(paths.join(root, "dataset", "train", "source")),
        "fill_missing_data_reads": False,
        "store_data_equal_to_fill_value": True,
        "metadata": {
            "shape": [count, n, n],
            "data_type": "float32",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [chunk, n, n]}},
            "codecs": [
                {"name": "bytes", "configuration": {"endian": "little"}},
                {"name": "zstd", "configuration": {"level": 3}},
                {"name": "crc32c"},
            ],
        },
    }
    x = np.random.default_rng(0).standard_normal((count, n, n)).astype(np.float32)
    array = ts.open(spec, create=True).result()
    for start in range(0, count, chunk):
        stop = min(start + chunk, count)
        array[start:stop].write(x[start:stop]).result()
    reopened = ts.open({k: v for k, v in spec.items() if k != "metadata"}, open=True).result()
    assert np.array_equal(reopened.read().result(), x)
    return f"{count} samples in {math.ceil(count / chunk)} chunks"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_processes(root: str) -> str:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    coordinator = f"127.0.0.1:{_free_port()}"
    directory = f"{root}/two_processes/checkpoints"
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", str(i), coordinator, directory],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    for i, (worker, output) in enumerate(zip(workers, outputs, strict=True)):
        if worker.returncode != 0 or "worker ok" not in output:
            raise AssertionError(f"process {i} failed (status {worker.returncode}):\n{output[-3000:]}")
    return "4 devices over 2 processes, saved collectively and restored bitwise"


def worker(process_id: int, coordinator: str, directory: str) -> None:
    """One process of `two_processes`: save an array sharded over all 4 devices, restore it, compare."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=2, process_id=process_id)
    import numpy as np
    import orbax.checkpoint as ocp
    from jax.experimental import multihost_utils

    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    full = np.arange(8 * 6, dtype=np.float32).reshape(8, 6)
    array = jax.make_array_from_callback(full.shape, sharding, lambda index: full[index])
    options = ocp.CheckpointManagerOptions(enable_async_checkpointing=True, max_to_keep=2)
    handlers = {"params": ocp.StandardCheckpointHandler()}
    manager = ocp.CheckpointManager(directory, options=options, item_handlers=handlers)
    manager.save(1, args=ocp.args.Composite(params=ocp.args.StandardSave({"w": array})))
    manager.wait_until_finished()
    manager.reload()
    assert manager.all_steps() == [1], manager.all_steps()
    abstract = {"w": jax.ShapeDtypeStruct(full.shape, full.dtype, sharding=sharding)}
    restored = manager.restore(1, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract)))
    gathered = multihost_utils.process_allgather(restored["params"]["w"], tiled=True)
    assert np.array_equal(np.asarray(gathered), full)
    manager.close()
    print("worker ok", flush=True)


def fno_jax_round_trip(root: str) -> str:
    import numpy as np

    from fno_jax import checkpoint, export, pretrained, train
    from fno_jax.config import default_config
    from fno_jax.storage import paths
    from fno_jax.storage.workdir import Workdir, WorkdirLockedError

    config = default_config()
    config.update_from_flattened_dict(
        {"data.resolution": 16, "data.num_train": 32, "data.num_val": 16, "data.num_test": 16,
         "data.generate_chunk": 16, "model.width": 8, "model.modes": 4, "model.depth": 2, "model.fc_dim": 16,
         "train.batch_size": 8, "train.eval_batch_size": 16, "train.num_steps": 10, "train.eval_every": 5,
         "train.checkpoint_every": 5, "train.log_every": 5}
    )  # fmt: skip
    workdir = paths.join(root, "fno_run")
    summary = train.train_and_evaluate(config, workdir)
    again = train.train_and_evaluate(config, workdir)
    assert again["test_rel_l2"] == summary["test_rel_l2"], (again, summary)
    with Workdir(workdir, config):
        try:
            Workdir(workdir, config).__enter__()
            raise AssertionError("a second holder of the workdir was not refused")
        except WorkdirLockedError:
            pass
    records = paths.read_text(paths.join(workdir, "metrics.jsonl")).splitlines()
    assert len(records) == 2, records
    bundle = paths.join(root, "bundle")
    export.export_bundle(workdir, bundle)
    _, params, _ = pretrained.load(bundle)
    saved = checkpoint.load_params(workdir, "best")
    flat, flat_saved = pretrained.flatten_params(params), pretrained.flatten_params(saved)
    assert all(np.array_equal(flat[k], flat_saved[k]) for k in flat)
    return f"test rel L2 {summary['test_rel_l2']:.4g}, {sorted(paths.listdir(workdir))}"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="a gs:// prefix to use (default: a local emulator's bucket)")
    parser.add_argument("--processes", type=int, choices=(1, 2), default=1, help="2: also a 2-process job")
    args = parser.parse_args()
    emulator = None
    if args.root is None:
        sys.path.insert(0, os.path.join(REPO, "tests"))
        from gcs_emulator import start_emulator

        emulator = start_emulator()
        os.environ.update(emulator.env())
        print(f"emulator: {emulator.name} at {emulator.url}, answering after {emulator.startup_s:.2f} s", flush=True)
        root = f"gs://{emulator.bucket}/smoke-{uuid.uuid4().hex[:8]}"
    else:
        root = args.root.rstrip("/") + f"/smoke-{uuid.uuid4().hex[:8]}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    print(f"root: {root}", flush=True)
    try:
        _timed("orbax checkpoints", lambda: orbax_round_trip(root))
        _timed("tensorstore zarr v3", lambda: tensorstore_round_trip(root))
        _timed("fno-jax run, lock and bundle", lambda: fno_jax_round_trip(root))
        if args.processes == 2:
            _timed("2-process orbax", lambda: two_processes(root))
    finally:
        if emulator is not None:
            emulator.stop()
    print("gcs smoke: all passed", flush=True)


if __name__ == "__main__":
    main()
