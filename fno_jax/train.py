"""One run: data -> normalization -> FNO -> data-parallel training -> checkpoints -> test summary.

`train_and_evaluate(config, workdir)` is the whole job; `experiments/main.py` is a thin CLI around it. Everything a
step depends on (batch order, stream samples, init) is a function of (seed, step), so rerunning the same command on
the same workdir resumes from the newest good checkpoint and ends with the same parameters as an uninterrupted run.

Workdir: config.json, metrics.jsonl, checkpoints/<step>/ (orbax), summary.json (at the end), .lock (while running).
"""

import dataclasses
import functools
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fno_jax import channels, checkpoint, finetune, steps
from fno_jax.config import ConfigError, validate_config
from fno_jax.data import Prefetcher, generate, nested_subset, open_dataset
from fno_jax.model import FNO
from fno_jax.normalization import NormStats, source_norms, stats_from_norms
from fno_jax.optim import make_optimizer
from fno_jax.parallel import DataParallel
from fno_jax.progress import Progress
from fno_jax.workdir_lock import WorkdirLock

log = logging.getLogger("fno_jax")

TRAIN_KEYS = ("source", "coeffs", "solution")
# Config sections that define what a workdir's checkpoints are; changing them on a resume is an error.
_IDENTITY_KEYS = ("seed", "task", "task_ranges", "data", "model", "init_from", "init_step")


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss or gradient."""


class TrainPool:
    """The run's training samples on the host: row r is sample `indices[r]` of a pool held in memory (generated) or
    in a stored dataset (read on demand, so a split larger than memory never has to be loaded)."""

    def __init__(self, layout: str, indices: np.ndarray, *, arrays: dict[str, np.ndarray] | None = None, dataset=None):
        self.layout = layout
        self.indices = np.asarray(indices)
        self.arrays = arrays
        self.dataset = dataset

    @property
    def num(self) -> int:
        return len(self.indices)

    def read(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Rows of the training set as {"source", "coeffs", "solution"} host arrays, in the order given."""
        rows = np.asarray(rows)
        if self.arrays is not None:
            return {k: v[rows] for k, v in self.arrays.items()}
        index = self.indices[rows]
        order = np.argsort(index, kind="stable")
        batch = self.dataset.read("train", index[order], arrays=_STORED_FOR_TRAINING)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return {k: v[inverse] for k, v in _to_train_arrays(batch, self.layout).items()}

    def nbytes(self, resolution: int) -> int:
        return self.num * (2 * resolution * resolution + len(channels.LAYOUTS[self.layout])) * 4

    def stats(self, length: float, chunk: int = 1024) -> NormStats:
        """Normalization statistics of the training set, read chunk by chunk."""
        norms, coeffs = [], []
        for start in range(0, self.num, chunk):
            part = self.read(np.arange(start, min(start + chunk, self.num)))
            norms.append(np.asarray(source_norms(part["source"], length)))
            coeffs.append(part["coeffs"])
        return stats_from_norms(np.concatenate(norms), np.concatenate(coeffs))


_STORED_FOR_TRAINING = ("source", "solution", "diffusion", "velocity", "omega")
# data.loader="auto": training sets up to this size live on the devices; larger ones are fed from the host.
DEVICE_RESIDENT_MAX_BYTES = 4 * 2**30


@dataclasses.dataclass
class Splits:
    """The run's training pool (None when not training, or streaming) and its val/test splits as host arrays."""

    train: TrainPool | None
    val: dict[str, np.ndarray]
    test: dict[str, np.ndarray]


def layout_of(config: ml_collections.ConfigDict) -> str:
    return config.data.layout or config.task


def model_from_config(config: ml_collections.ConfigDict) -> FNO:
    dtype = jnp.bfloat16 if config.train.dtype == "bfloat16" else jnp.float32
    m = config.model
    return FNO(width=m.width, modes=m.modes, depth=m.depth, fc_dim=m.fc_dim, out_dim=1, dtype=dtype, remat=m.remat)


def num_params(params) -> int:
    return int(sum(np.prod(np.shape(x)) for x in jax.tree_util.tree_leaves(params)))


# ---- data -----------------------------------------------------------------------------------------------------
def _to_train_arrays(batch: dict[str, np.ndarray], layout: str) -> dict[str, np.ndarray]:
    coeffs = np.asarray(channels.coefficients(batch, layout))
    return {"source": np.asarray(batch["source"]), "coeffs": coeffs, "solution": np.asarray(batch["solution"])}


def open_checked_dataset(config: ml_collections.ConfigDict, task, layout: str):
    """The stored dataset `config.data.source`, checked against the config (resolution, task, ranges, sizes)."""
    d = config.data
    source = d.source
    dataset = open_dataset(source)
    dataset.check_compatible(resolution=d.resolution, layout=layout)
    spec = dataset.task
    if config.task != "mixed" and spec.get("name") not in (config.task, None):
        raise ConfigError(
            f"dataset {source} holds task {spec.get('name')!r} but config.task={config.task!r}; "
            f"set config.task={spec.get('name')!r} or use a {config.task!r} dataset."
        )
    if spec.get("name") == config.task and "imported_from" not in spec:
        # Same PDE but other coefficient ranges or domain size would train (and record in the checkpoint's
        # task_spec) something other than what the config says. Imported datasets carry no ranges to compare.
        expected = json.loads(json.dumps(task.spec()))
        if spec != expected:
            raise ConfigError(
                f"dataset {source} was generated with task spec {spec} but the config asks for {expected}; set "
                "config.task_ranges and config.data.length to the dataset's values or generate a dataset for these."
            )
    for split, wanted in (("val", d.num_val), ("test", d.num_test)):
        if wanted > dataset.num(split):
            raise ConfigError(
                f"config.data.num_{split}={wanted} exceeds the {dataset.num(split)} samples of split {split!r} in "
                f"{source}; lower it or generate a bigger dataset."
            )
    if d.num_train > dataset.num("train") and config.train.num_steps > 0:
        raise ConfigError(
            f"config.data.num_train={d.num_train} exceeds the {dataset.num('train')} training samples in {source}; "
            "lower it or generate a bigger dataset."
        )
    return dataset


def load_splits(config: ml_collections.ConfigDict, task, layout: str, *, need_train: bool, dataset=None) -> Splits:
    """Train (nested subset of the pool), val and test splits as host arrays, per `config.data.source`
    (`dataset`: the stored dataset it names, from `open_checked_dataset`)."""
    d = config.data
    if d.source in ("generate", "stream"):
        make = functools.partial(
            generate.generate_split, task, config.seed, resolution=d.resolution, chunk=d.generate_chunk
        )
        val = _to_train_arrays(make("val", d.num_val), layout)
        test = _to_train_arrays(make("test", d.num_test), layout)
        if not need_train or d.source == "stream":
            return Splits(None, val, test)
        pool = make("train", d.num_train_pool or d.num_train)
        indices = nested_subset(pool["volume_fraction"], d.num_train, config.seed)
        arrays = _to_train_arrays({k: v[indices] for k, v in pool.items()}, layout)
        return Splits(TrainPool(layout, indices, arrays=arrays), val, test)

    dataset = dataset if dataset is not None else open_checked_dataset(config, task, layout)
    val = _to_train_arrays(dataset.read("val", slice(0, d.num_val)), layout)
    test = _to_train_arrays(dataset.read("test", slice(0, d.num_test)), layout)
    if not need_train:
        return Splits(None, val, test)
    if d.num_train < dataset.num("train"):
        vf = dataset.read("train", slice(None), arrays=("volume_fraction",))["volume_fraction"]
        indices = nested_subset(vf, d.num_train, config.seed)
    else:
        indices = np.arange(d.num_train)
    return Splits(TrainPool(layout, indices, dataset=dataset), val, test)


def generated_stats(config: ml_collections.ConfigDict, task, layout: str, num: int) -> NormStats:
    """Normalization statistics of the first `num` samples of the generated train split: stream mode's (which has no
    fixed training set) and zero-shot's (which trains on none)."""
    d = config.data
    pilot = generate.generate_split(task, config.seed, "train", num, d.resolution, chunk=d.generate_chunk)
    arrays = _to_train_arrays(pilot, layout)
    return stats_from_norms(source_norms(arrays["source"], d.length), arrays["coeffs"])


# ---- steps ----------------------------------------------------------------------------------------------------
def epoch_order(epoch: jax.Array, *, num: int, seed: int) -> jax.Array:
    """The order in which epoch `epoch` visits the `num` training samples (a function of seed and epoch only)."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), 2000), epoch)
    return jax.random.permutation(key, num)


def batch_indices(step: jax.Array, *, num: int, batch_size: int, seed: int) -> jax.Array:
    """Indices of the samples of training step `step`: epoch-wise permutations seeded by (seed, epoch)."""
    per_epoch = num // batch_size
    order = epoch_order(step // per_epoch, num=num, seed=seed)
    return jax.lax.dynamic_slice_in_dim(order, (step % per_epoch) * batch_size, batch_size)


def host_batches(pool: TrainPool, parallel: DataParallel, *, start: int, stop: int, batch_size: int, seed: int):
    """Prefetched, device-placed batches of steps [start, stop) read on the host in the same order as
    `batch_indices`; each process reads only the rows of each batch that its own devices train on."""
    per_epoch = pool.num // batch_size
    mine = parallel.host_rows(batch_size, what="train.batch_size")
    order_fn = jax.jit(functools.partial(epoch_order, num=pool.num, seed=seed))
    cache: dict[int, np.ndarray] = {}

    def fetch(step: int):
        epoch = step // per_epoch
        if epoch not in cache:
            cache.clear()
            cache[epoch] = np.asarray(jax.device_get(order_fn(epoch)))
        first = (step % per_epoch) * batch_size
        rows = cache[epoch][first : first + batch_size][mine]
        return parallel.put_batch(pool.read(rows), batch_size)

    return Prefetcher(fetch, range(start, stop), buffer_size=2)


def _select_from_data(step, data, *, num, batch_size, seed):
    index = batch_indices(step, num=num, batch_size=batch_size, seed=seed)
    return {k: data[k][index] for k in TRAIN_KEYS}


def _select_from_stream(step, data, *, task, seed, batch_size, resolution, layout):
    del data
    batch = generate.stream_batch(task, seed, step, batch_size, resolution)
    return {"source": batch["source"], "coeffs": channels.coefficients(batch, layout), "solution": batch["solution"]}


def evaluate(eval_fn: Callable, params, data: dict[str, jax.Array], batch_size: int) -> dict[str, float]:
    """Mean relative L2 and loss over a device-resident split."""
    num = int(data["source"].shape[0])
    totals = [eval_fn(params, data, jnp.int32(start)) for start in range(0, num, batch_size)]
    totals = jax.device_get(totals)
    count = sum(float(t["count"]) for t in totals)
    return {
        "rel_l2": sum(float(t["rel_l2_sum"]) for t in totals) / count,
        "loss": sum(float(t["sse_sum"]) for t in totals) / count,
    }


# ---- the run --------------------------------------------------------------------------------------------------
def _is_main() -> bool:
    return jax.process_index() == 0


def _write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """config.json; a workdir that already holds another run's identity (model, data, task) is refused."""
    path = os.path.join(workdir, "config.json")
    new = json.loads(config.to_json())
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        changed = [k for k in _IDENTITY_KEYS if old.get(k) != new.get(k)]
        if changed:
            k = changed[0]
            raise ConfigError(
                f"workdir {workdir} holds a run with a different config.{k} ({old.get(k)!r} there, {new.get(k)!r} "
                "now); use a new --workdir, or the same config to resume."
            )
    if _is_main():
        checkpoint.write_json_atomic(path, new)


def _truncate_metrics(path: str, step: int) -> None:
    """Drop metrics lines past `step` (written by a run that died after its last checkpoint)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(kept)
        os.replace(tmp, path)


def _append_metrics(path: str, record: dict[str, Any]) -> None:
    if _is_main():
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


def loader_of(config: ml_collections.ConfigDict, pool: TrainPool) -> str:
    """Where training batches come from: "device" (the whole training set on every device, gathered per step) or
    "host" (each step's batch read on the host, prefetched; each process reads only its own devices' rows)."""
    if config.data.loader != "auto":
        return config.data.loader
    if jax.process_count() > 1 and pool.dataset is not None:
        return "host"
    return "device" if pool.nbytes(config.data.resolution) <= DEVICE_RESIDENT_MAX_BYTES else "host"


def _mode(config) -> str:
    if not config.init_from:
        return "scratch"
    return "zeroshot" if config.train.num_steps == 0 else "finetune"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Train (or, with num_steps=0 and init_from, only evaluate) one run in `workdir`; returns the summary."""
    validate_config(config)
    # A stored dataset is checked before anything is written, the workdir included.
    dataset = None
    if config.data.source not in ("generate", "stream"):
        task = generate.task_from_config(config)
        dataset = open_checked_dataset(config, task, layout_of(config))
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    lock = WorkdirLock(workdir) if _is_main() else None
    if lock:
        lock.acquire()
    try:
        return _train_and_evaluate(config, workdir, dataset)
    finally:
        if lock:
            lock.release()


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, dataset) -> dict[str, Any]:
    t_start = time.perf_counter()
    c, t, d = config, config.train, config.data
    layout = layout_of(c)
    parallel = DataParallel(t.parallel)
    parallel.check_batch_size(t.batch_size)
    eval_batch = -(-t.eval_batch_size // parallel.num_devices) * parallel.num_devices
    task = generate.task_from_config(c)
    model = model_from_config(c)
    model_cfg = {k: int(c.model[k]) for k in finetune.MODEL_KEYS}

    # Pretrained model first: its errors must come before any data is made.
    pretrained = None
    if c.init_from:
        p_step, p_params, p_meta = finetune.load_pretrained(c.init_from, c.init_step)
        finetune.check_architecture(p_meta["model"], model_cfg, c.init_from)
        finetune.channel_map(p_meta["layout"], layout)  # raises when channels cannot be mapped
        pretrained = (p_step, p_params, p_meta)

    ckpt = checkpoint.Checkpointer(workdir, max_to_keep=t.max_to_keep)
    try:
        previous = _newest_readable_meta(ckpt)
        if previous is not None and (previous.get("model") != model_cfg or previous.get("layout") != layout):
            raise ConfigError(
                f"workdir {workdir} holds checkpoints of another architecture (model {previous.get('model')}, "
                f"layout {previous.get('layout')!r}; this config: model {model_cfg}, layout {layout!r}); "
                "use a new --workdir."
            )
        _write_config(workdir, c)
        metrics_path = os.path.join(workdir, "metrics.jsonl")

        # Data.
        mode = _mode(c)
        splits = load_splits(c, task, layout, need_train=mode != "zeroshot", dataset=dataset)
        if d.source == "stream":
            stats = generated_stats(c, task, layout, num=1024)
        elif splits.train is not None:
            stats = splits.train.stats(d.length)
        else:  # zero-shot: the downstream statistics of a training set it would have had
            stats = generated_stats(c, task, layout, num=d.num_train)
        if pretrained is not None and c.finetune.norm_stats == "pretrained":
            p_stats = NormStats.from_dict(pretrained[2]["norm_stats"])
            stats = finetune.transfer_stats(p_stats, stats, pretrained[2]["layout"], layout)

        # Params: fresh init, then the pretrained params swapped in.
        init_key = jax.random.fold_in(jax.random.PRNGKey(c.seed), 3000)
        dummy = jnp.zeros((1, d.resolution, d.resolution, channels.num_channels(layout)), jnp.float32)
        params = jax.jit(lambda k: model.init(k, dummy)["params"])(init_key)
        if pretrained is not None:
            params = finetune.transfer_params(pretrained[1], params, pretrained[2]["layout"], layout)
        params = jax.tree_util.tree_map(jnp.asarray, params)
        optimizer = make_optimizer(
            t.learning_rate,
            max(t.num_steps, 1),
            warmup_steps=t.warmup_steps,
            weight_decay=t.weight_decay,
            freeze=tuple(c.finetune.freeze),
            params=params,
        )
        state = {"params": params, "opt_state": optimizer.init(params), "step": jnp.int32(0)}

        meta = {
            "model": model_cfg,
            "layout": layout,
            "norm_stats": stats.to_dict(),
            "task_spec": task.spec(),
            "config": json.loads(c.to_json()),
            "provenance": _provenance(c, pretrained),
            "best_step": None,
            "best_val_rel_l2": None,
        }
        restored = None
        if ckpt.steps():
            abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
            restored = ckpt.restore_latest(abstract["params"], abstract["opt_state"])
        if restored is not None:
            r_step, r_params, r_opt, r_meta = restored
            state = {"params": r_params, "opt_state": r_opt, "step": jnp.int32(r_step)}
            stats = NormStats.from_dict(r_meta["norm_stats"])
            meta.update(best_step=r_meta.get("best_step"), best_val_rel_l2=r_meta.get("best_val_rel_l2"))
            meta["norm_stats"] = r_meta["norm_stats"]
            _truncate_metrics(metrics_path, r_step)
            if _is_main():
                log.info("resuming %s from step %d", workdir, r_step)
        elif os.path.exists(metrics_path) and _is_main():
            os.remove(metrics_path)
        start_step = int(state["step"])

        eval_fn = parallel.compile_eval(
            functools.partial(steps.eval_step, model=model, norm=stats, length=d.length), eval_batch
        )
        val_data = parallel.put_data(splits.val, for_training=False)
        summary_extra: dict[str, Any] = {}

        if t.num_steps > 0 and start_step < t.num_steps:
            state, summary_extra = _train_loop(
                c, workdir, parallel, model, optimizer, stats, task, layout, splits, state, meta, ckpt, eval_fn,
                val_data, eval_batch, metrics_path,
            )  # fmt: skip

        # Final evaluation with the best-validation params.
        if t.num_steps == 0:
            best_params, best_step = state["params"], 0
            val = evaluate(eval_fn, parallel.eval_params(parallel.replicate(best_params)), val_data, eval_batch)
            meta.update(best_step=0, best_val_rel_l2=val["rel_l2"])
        else:
            best_step = meta["best_step"] if meta["best_step"] is not None else int(ckpt.latest_step())
            abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
            best_params = ckpt.restore_params(best_step, abstract)
        test_data = parallel.put_data(splits.test, for_training=False)
        eval_params = parallel.eval_params(parallel.replicate(jax.device_get(best_params)))
        test = evaluate(eval_fn, eval_params, test_data, eval_batch)
        # Distinct training samples seen: a stream draws fresh ones every step.
        seen = t.num_steps * t.batch_size if d.source == "stream" else d.num_train
        summary = {
            "task": c.task,
            "layout": layout,
            "mode": mode,
            "num_train": 0 if mode == "zeroshot" else int(seen),
            "model": model_cfg,
            "num_params": num_params(params),
            "test_rel_l2": test["rel_l2"],
            "test_loss": test["loss"],
            "val_rel_l2": meta["best_val_rel_l2"],
            "best_step": best_step,
            "learning_rate": float(t.learning_rate),
            "steps": int(t.num_steps),
            "task_spec": task.spec(),
            "init_from": c.init_from,
            "devices": parallel.num_devices,
            "wall_s": time.perf_counter() - t_start,
            **summary_extra,
        }
        if _is_main():
            checkpoint.write_json_atomic(os.path.join(workdir, "summary.json"), summary)
            log.info("test rel L2 %.4g (best step %s)", test["rel_l2"], best_step)
        return summary
    finally:
        ckpt.close()


def _newest_readable_meta(ckpt: checkpoint.Checkpointer) -> dict[str, Any] | None:
    """Metadata of the newest checkpoint whose metadata reads (broken steps are handled by restore_latest)."""
    for step in reversed(ckpt.steps()):
        try:
            return ckpt.meta(step)
        except Exception:  # noqa: BLE001, S112 - any unreadable step: look at an older one
            continue
    return None


def _provenance(config, pretrained) -> dict[str, Any]:
    from fno_jax.data.store import package_version

    return {
        "package_version": package_version(),
        "seed": int(config.seed),
        "jax_version": jax.__version__,
        "init_from": config.init_from,
        "init_step": pretrained[0] if pretrained else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _train_loop(
    c, workdir, parallel, model, optimizer, stats, task, layout, splits, state, meta, ckpt, eval_fn, val_data,
    eval_batch, metrics_path,
):  # fmt: skip
    t, d = c.train, c.data
    per_device = functools.partial(steps.train_step, model=model, optimizer=optimizer, norm=stats, length=d.length)
    if d.source == "stream":
        select = functools.partial(
            _select_from_stream, task=task, seed=c.seed, batch_size=t.batch_size, resolution=d.resolution, layout=layout
        )
        train_data = {}
    state = parallel.replicate(jax.device_get(state))
    step = int(jax.device_get(parallel.unreplicate(state)["step"]))
    batches = None  # host-fed batches (loader "host"); otherwise every step reads `train_data` on the devices
    if d.source == "stream":
        train_data = {}
    elif loader_of(c, splits.train) == "device":
        num = splits.train.num
        select = functools.partial(_select_from_data, num=num, batch_size=t.batch_size, seed=c.seed)
        train_data = parallel.put_data(splits.train.read(np.arange(num)), for_training=True)
    else:
        select = None
        batches = host_batches(
            splits.train, parallel, start=step, stop=t.num_steps, batch_size=t.batch_size, seed=c.seed
        )
    step_fn = parallel.compile_train(per_device, select)

    progress = Progress(t.num_steps, start=step)
    pending: list[tuple[int, dict]] = []
    t_window, window_start = time.perf_counter(), step
    compile_s = None
    try:
        while step < t.num_steps:
            t0 = time.perf_counter()
            if batches is not None:
                train_data = next(batches)
            state, metrics = step_fn(state, train_data)
            step += 1
            if compile_s is None:
                jax.block_until_ready(metrics)
                compile_s = time.perf_counter() - t0
                t_window, window_start = time.perf_counter(), step
            pending.append((step, metrics))
            last = step == t.num_steps
            if step % t.log_every == 0 or step % t.eval_every == 0 or step % t.checkpoint_every == 0 or last:
                host = jax.device_get([parallel.unreplicate(m) for _, m in pending])
                for (s, _), m in zip(pending, host, strict=True):
                    if not bool(m["finite"]):
                        ckpt.wait()  # the last good (asynchronous) save must be on disk before the run stops
                        raise NonFiniteError(_nonfinite_message(c, s, m, splits, workdir, ckpt))
                elapsed = time.perf_counter() - t_window
                record = {
                    "step": step,
                    "train_loss": float(np.mean([m["loss"] for m in host])),
                    "grad_norm": float(np.mean([m["grad_norm"] for m in host])),
                    "steps_per_s": (step - window_start) / elapsed if elapsed > 0 else None,
                }
                pending.clear()
                t_window, window_start = time.perf_counter(), step
                if step % t.eval_every == 0 or last:
                    params = parallel.eval_params(state["params"])
                    val = evaluate(eval_fn, params, val_data, eval_batch)
                    record.update(val_rel_l2=val["rel_l2"], val_loss=val["loss"])
                    best = meta["best_val_rel_l2"]
                    if best is None or val["rel_l2"] < best:
                        meta.update(best_step=step, best_val_rel_l2=val["rel_l2"])
                        record["best"] = True
                        _save(ckpt, parallel, state, step, meta)
                if step % t.checkpoint_every == 0 or last:
                    _save(ckpt, parallel, state, step, meta)
                _append_metrics(metrics_path, record)
                progress.update(
                    step, force=True, loss=record["train_loss"], val=meta["best_val_rel_l2"] or float("nan")
                )
            else:
                progress.update(step)
    finally:
        progress.close()
        if batches is not None:
            batches.close()  # stops the prefetch thread on every exit, errors included
    ckpt.wait()
    return parallel.unreplicate(state), {"compile_s": compile_s}


def _save(ckpt, parallel, state, step, meta) -> None:
    single = parallel.unreplicate(state)
    protect = {meta["best_step"]} if meta["best_step"] is not None else set()
    ckpt.save(step, single["params"], single["opt_state"], dict(meta, step=step), protect=protect)


def _nonfinite_message(c, step, metrics, splits, workdir, ckpt) -> str:
    last = ckpt.latest_step()
    where = f"the last good checkpoint is step {last} in {workdir}/checkpoints" if last else "no checkpoint was written"
    batch = ""
    if splits.train is not None:
        index = batch_indices(jnp.int32(step - 1), num=splits.train.num, batch_size=c.train.batch_size, seed=c.seed)
        sample = splits.train.indices[np.asarray(index)]
        batch = f" (batch of train samples {sorted(int(i) for i in sample)[:16]})"
    else:
        batch = f" (stream batch of step {step - 1})"
    return (
        f"non-finite training loss or gradient at step {step}{batch}: loss={float(metrics['loss'])}, "
        f"grad_norm={float(metrics['grad_norm'])}. The update was skipped and the run stopped; {where}. "
        "Check the data for NaN/Inf or lower config.train.learning_rate."
    )
