"""Many runs as one compiled program: runs that differ only in seed and learning rate, trained together.

K runs whose configs agree on everything but `seed` and `train.learning_rate` (`pack_key`) share one pool, one
validation and test split, their normalization statistics and one compiled step: params and optimizer states carry a
leading run axis and the train step is `jax.vmap`ped over it (each run's rate is a leaf of its optimizer state, see
`fno_jax.training.optim`). Each run keeps its own init (from its seed), its own nested training subset and data order,
its own best-validation checkpoint and its own workdir, written as `fno_jax.train.train_and_evaluate` writes it
(config.json,
metrics.jsonl, TensorBoard event files, checkpoints/, summary.json); a killed group, run again with the same runs,
resumes bitwise.

The run axis lives beside the data axis of the mesh: every device holds all K runs, and each step's K batches
[K, B, ...] are split over the devices along B, so data parallelism works as for one run. A group that would not fit
in device memory (by XLA's compiled memory analysis of one run's program) is trained in several parts.

Final params equal those of one-at-a-time runs to float32 rounding, not bitwise: a vmapped matmul may sum in another
order. tests/test_packed.py bounds the difference.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from fno_jax.checkpoint import Checkpointer
from fno_jax.config import ConfigError, layout_of, matmul_precision, model_size, validate_config
from fno_jax.data import load_splits_for_seeds, make_packed_feed, open_checked_dataset
from fno_jax.data.generate import task_from_config
from fno_jax.data.loader import DEVICE_RESIDENT_MAX_BYTES
from fno_jax.model import channels, num_params
from fno_jax.runtime.parallel import DataParallel, abstract_arrays, make_parallel
from fno_jax.runtime.preemption import PreemptionGuard
from fno_jax.runtime.progress import Progress
from fno_jax.storage.metric_writer import (
    MetricWriter,
    image_cadence,
    log_evaluation,
    open_writer,
    scalar_tags,
    split_record,
)
from fno_jax.storage.workdir import RunMeta, Workdir, provenance
from fno_jax.train import NonFiniteError, model_from_config
from fno_jax.training import steps
from fno_jax.training.cadence import Cadence
from fno_jax.training.evaluate import Evaluator
from fno_jax.training.finetune import Pretrained, load_pretrained, transfer_params, transfer_stats
from fno_jax.training.optim import optimizer_from_config

__all__ = ["group_by_pack_key", "pack_key", "packed_step_bytes", "plan_parts", "train_and_evaluate_packed"]

# Fraction of a device's memory a packed group may plan to use (the rest: runtime, fragmentation, other buffers).
MEMORY_FRACTION = 0.8


def pack_key(config: ml_collections.ConfigDict) -> str:
    """Runs with equal keys can train as one program: everything but `seed` and `train.learning_rate` agrees.

    A run whose data splits follow its seed (`data.seed` = -1) keeps its seed in the key: runs on different pools
    cannot share one.
    """
    flat = json.loads(config.to_json())
    flat["train"].pop("learning_rate")
    if flat["data"]["seed"] >= 0:
        flat.pop("seed")
    return json.dumps(flat, sort_keys=True)


def group_by_pack_key(configs: Sequence[ml_collections.ConfigDict]) -> list[list[int]]:
    """Indices of `configs` grouped by `pack_key`, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(pack_key(config), []).append(i)
    return list(groups.values())


def train_and_evaluate_packed(
    configs: Sequence[ml_collections.ConfigDict],
    workdirs: Sequence[str],
    *,
    memory_limit_bytes: int | None = None,
) -> list[dict[str, Any]]:
    """Train K runs that share a `pack_key` as one program; returns their summaries, in order.

    `memory_limit_bytes` (default: the device's own limit where the backend reports one) bounds the memory a part
    may plan to use; a group over it is split into parts that fit, trained one after another.
    """
    if len(configs) != len(workdirs) or not configs:
        raise ValueError(f"give one workdir per config; got {len(configs)} configs and {len(workdirs)} workdirs.")
    for config in configs:
        validate_config(config)
    keys = {pack_key(c) for c in configs}
    if len(keys) > 1:
        raise ConfigError(
            "packed runs must differ only in seed and train.learning_rate (and share their data: data.seed >= 0); "
            "group them with fno_jax.training.packed.group_by_pack_key."
        )
    if configs[0].train.num_steps == 0:
        raise ConfigError("zero-shot runs (train.num_steps=0) train nothing; evaluate them with train_and_evaluate.")
    summaries: list[dict[str, Any]] = []
    with matmul_precision(configs[0]):
        for part in plan_parts(configs, memory_limit_bytes):
            summaries += _train_group([configs[i] for i in part], [workdirs[i] for i in part])
    return summaries


@dataclasses.dataclass
class _Group:
    """What the phases of one packed group share."""

    configs: list[ml_collections.ConfigDict]
    cadence: Cadence
    parallel: DataParallel
    model: Any
    workdirs: list[Workdir]
    ckpts: list[Checkpointer]
    splits: list[Any]
    metas: list[RunMeta] = dataclasses.field(default_factory=list)
    optimizer: Any = None
    evaluator: _PackedEvaluator | None = None
    writers: list[MetricWriter] = dataclasses.field(default_factory=list)

    @property
    def runs(self) -> int:
        return len(self.configs)

    @property
    def mode(self) -> str:
        return "finetune" if self.configs[0].init_from else "scratch"


def _train_group(configs: list[ml_collections.ConfigDict], paths: list[str]) -> list[dict[str, Any]]:
    t_start = time.perf_counter()
    c0 = configs[0]
    task, layout = task_from_config(c0), layout_of(c0)
    stored = c0.data.source not in ("generate", "stream")
    dataset = open_checked_dataset(c0, task, layout) if stored else None
    pretrained = (
        load_pretrained(c0.init_from, c0.init_step, model=model_size(c0), layout=layout) if c0.init_from else None
    )
    parallel = make_parallel(c0.train.parallel)
    parallel.check_batch_size(c0.train.batch_size)
    with contextlib.ExitStack() as stack:
        workdirs = [stack.enter_context(Workdir(p, c)) for p, c in zip(paths, configs, strict=True)]
        # At least two newest steps: a group killed while saving its K checkpoints keeps one step every run has.
        ckpts = [Checkpointer(w.path, max_to_keep=max(c.train.max_to_keep, 2)) for w, c in zip(workdirs, configs)]
        for ckpt in ckpts:
            stack.callback(ckpt.close)
        seeds = [int(c.seed) for c in configs]
        splits = load_splits_for_seeds(c0, task, layout, dataset, seeds)
        group = _Group(configs, Cadence.from_config(c0), parallel, model_from_config(c0), workdirs, ckpts, splits)
        state = _initial_state(group, task, layout, pretrained)
        state, start = _restore(group, state)
        group.evaluator = _PackedEvaluator(group)
        group.writers = [open_writer(c, w.path, start_step=start) for c, w in zip(configs, workdirs, strict=True)]
        for writer in group.writers:
            stack.callback(writer.close)
        compile_s = None
        if start < group.cadence.num_steps:
            state, compile_s = _PackedLoop(group, task).train(state, start)
        summaries = _final_evaluation(group, state)
        for wd, summary in zip(workdirs, summaries, strict=True):
            summary.update(compile_s=compile_s, wall_s=time.perf_counter() - t_start)
            wd.write_summary(summary)
        logging.info("packed %d runs: test rel L2 %s", group.runs, [round(s["test_rel_l2"], 4) for s in summaries])
        return summaries


def _initial_state(group: _Group, task, layout: str, pretrained: Pretrained | None) -> dict:
    """Each run's fresh init (from its seed) or the pretrained params, its own optimizer state; stacked [K, ...]."""
    c0 = group.configs[0]
    stats = group.splits[0].stats
    if pretrained is not None and c0.finetune.norm_stats == "pretrained":
        stats = transfer_stats(pretrained.meta.norm_stats, stats, pretrained.meta.layout, layout)
    n = c0.data.resolution
    dummy = jnp.zeros((1, n, n, channels.num_channels(layout)), jnp.float32)
    keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(c.seed), 3000) for c in group.configs])
    params = jax.jit(jax.vmap(lambda k: group.model.init(k, dummy)["params"]))(keys)
    runs = _unbind(params, group.runs)
    if pretrained is not None:
        runs = [transfer_params(pretrained.params, p, pretrained.meta.layout, layout) for p in runs]
    runs = [jax.tree_util.tree_map(jnp.asarray, p) for p in runs]
    opt_states = []
    for c, p in zip(group.configs, runs, strict=True):
        optimizer = optimizer_from_config(
            c, p, num_steps=group.cadence.num_steps, steps_per_decay=group.cadence.steps_per_decay(c)
        )
        opt_states.append(optimizer.init(p))
    # The runs' optimizers differ only in the rate each puts in its state: one update function serves them all.
    group.optimizer = optimizer
    group.metas = [
        RunMeta(model_size(c), layout, stats, task.spec(), json.loads(c.to_json()), _provenance(c, pretrained))
        for c in group.configs
    ]
    stacked = _stack([{"params": p, "opt_state": o} for p, o in zip(runs, opt_states, strict=True)])
    return {**stacked, "step": jnp.zeros((group.runs,), jnp.int32)}


def _provenance(config: ml_collections.ConfigDict, pretrained: Pretrained | None) -> dict[str, Any]:
    return {**provenance(config, pretrained.step if pretrained else None), "packed_runs": True}


@jax.jit
def _stack(trees: list) -> Any:
    """K trees of one structure as one tree with a leading run axis, in one program."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


@functools.partial(jax.jit, static_argnums=1)
def _unbind(tree, runs: int) -> list:
    """The `runs` trees of a stacked tree, in one program: indexing leaf by leaf dispatches (and compiles) one
    small op per leaf and run, seconds per checkpoint on a CPU."""
    return [jax.tree_util.tree_map(lambda x, k=k: x[k], tree) for k in range(runs)]


def _restore(group: _Group, state: dict) -> tuple[dict, int]:
    """The newest step every run of the group has a checkpoint of, restored for all; else step 0."""
    per_run = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), {k: state[k] for k in ("params", "opt_state")}
    )
    abstract = abstract_arrays(per_run, group.parallel.replicated)  # laid out for this run's devices
    common = set.intersection(*(set(c.steps()) for c in group.ckpts))
    for step in sorted(common, reverse=True):
        try:
            restored = [ckpt.restore(step, abstract)[0] for ckpt in group.ckpts]
        except Exception as err:  # noqa: BLE001 - an unreadable step: try the previous common one
            logging.warning(
                "packed group: step %d does not restore for every run (%s); trying an older one.", step, err
            )
            continue
        for wd in group.workdirs:
            wd.metrics.keep_until(step)
        logging.info("resuming %d packed runs from step %d", group.runs, step)
        return {**_stack(restored), "step": jnp.full((group.runs,), step, jnp.int32)}, step
    if any(c.steps() for c in group.ckpts):
        logging.warning("packed group: no checkpoint step common to every run; the group starts again at step 0.")
    for wd in group.workdirs:
        wd.metrics.clear()
    return state, 0


class _PackedEvaluator(Evaluator):
    """The group's `Evaluator` of K runs' params [K, ...], with the shared validation split on the devices (`val`)."""

    def __init__(self, group: _Group):
        c, meta = group.configs[0], group.metas[0]
        super().__init__(
            group.model,
            meta.norm_stats,
            layout=meta.layout,
            length=c.data.length,
            parallel=group.parallel,
            batch_size=c.train.eval_batch_size,
            runs=group.runs,
        )
        self.val = self.put(group.splits[0].val)


def _log_evaluations(group: _Group, step: int, split: str, metrics: list[dict], params, data) -> None:
    """Each run's metrics of a split in its writer, with images as `fno_jax.train` draws them (collective)."""
    logging_config = group.configs[0].logging  # the same for every run of a group (`pack_key`)
    due = split != "val" or image_cadence(group.cadence, logging_config.image_evals).due(step)
    count = logging_config.images if due else 0
    examples = group.evaluator.examples(params, data, count) if count else [None] * group.runs
    for writer, run_metrics, run_examples in zip(group.writers, metrics, examples, strict=True):
        log_evaluation(writer, step, split, run_metrics, run_examples)


class _PackedLoop:
    """Steps [start, num_steps) of K runs at once; logging, evaluation and checkpoints per run (`Cadence`)."""

    def __init__(self, group: _Group, task):
        self.group, self.task = group, task
        c = group.configs[0]
        one = functools.partial(
            steps.train_step,
            model=group.model,
            optimizer=group.optimizer,
            norm=group.metas[0].norm_stats,
            length=c.data.length,
        )
        self.per_device = lambda states, batches, axis_name: jax.vmap(functools.partial(one, axis_name=axis_name))(
            states, batches
        )
        self.best: list[float | None] = []
        for ckpt in group.ckpts:
            self.best.append((ckpt.best_metrics() or {}).get("selection"))
        self.pending: list[dict] = []
        self.window = (time.perf_counter(), 0)

    def train(self, state: dict, start: int) -> tuple[dict, float]:
        group = self.group
        seeds = [int(c.seed) for c in group.configs]
        feed = make_packed_feed(group.configs[0], group.splits, self.task, group.parallel, seeds)
        step_fn = group.parallel.compile_train(self.per_device, feed.select, batch_axis=1)
        state = group.parallel.put_state(state)
        num_steps = group.cadence.num_steps
        progress = Progress(num_steps, start=start, label=f"train x{group.runs}")
        compile_s = None
        # SIGTERM/SIGINT: finish the step, checkpoint every run at it, raise Preempted (as a single run does).
        guard = PreemptionGuard(sync_every=group.cadence.log.steps).install()
        try:
            for step in range(start + 1, num_steps + 1):
                t0 = time.perf_counter()
                state, metrics = step_fn(state, feed.data(step - 1))
                if compile_s is None:
                    jax.block_until_ready(metrics)
                    compile_s = time.perf_counter() - t0
                    self.window = (time.perf_counter(), step)
                self.pending.append(metrics)
                if group.cadence.due_any(step):
                    self._periodic(step, state, progress)
                else:
                    progress.update(step)
                if guard.should_stop(step):
                    self._stop(step, state)
                    raise guard.preempted(step, f"checkpoints of step {step} in {group.runs} run workdirs")
        finally:
            guard.uninstall()
            progress.close()
            feed.close()
        for ckpt in group.ckpts:
            ckpt.wait()
        return group.parallel.state_to_save(state), compile_s

    def _periodic(self, step: int, state: dict, progress: Progress) -> None:
        group, cadence = self.group, self.group.cadence
        records = self._training_records(step)
        val = [None] * group.runs
        if cadence.evaluate.due(step):
            params = group.parallel.eval_params(state)
            val = group.evaluator(params, group.evaluator.val)
            _log_evaluations(group, step, "val", val, params, group.evaluator.val)
        saved = group.parallel.state_to_save(state)
        per_run = None  # the runs' states, split once when the first of them is saved
        for k in range(group.runs):
            metrics = {}
            if val[k] is not None:
                records[k].update(split_record("val", val[k]))
                metrics = {"val_rel_l2": val[k]["rel_l2"], "val_loss": val[k]["loss"]}
                metrics["selection"] = metrics[group.configs[k].train.select_by]
                if self.best[k] is None or metrics["selection"] < self.best[k]:
                    self.best[k], records[k]["best"] = metrics["selection"], True
            if cadence.checkpoint.due(step) or records[k].get("best"):
                if per_run is None:
                    per_run = _unbind({"params": saved["params"], "opt_state": saved["opt_state"]}, group.runs)
                group.ckpts[k].save(step, per_run[k], group.metas[k], metrics)
            group.workdirs[k].metrics.append(records[k])
            training = {name: v for name, v in records[k].items() if not name.startswith("val_")}
            group.writers[k].scalars(step, scalar_tags(training))
        best = [b for b in self.best if b is not None]
        shown = {"val": min(best)} if best else {}
        progress.update(step, force=True, loss=float(np.mean([r["train_loss"] for r in records])), **shown)

    def _stop(self, step: int, state: dict) -> None:
        """Every run's records since the last one and a checkpoint at `step`, even where none was due."""
        group = self.group
        records = self._training_records(step) if self.pending else [None] * group.runs
        saved = group.parallel.state_to_save(state)
        per_run = _unbind({"params": saved["params"], "opt_state": saved["opt_state"]}, group.runs)
        for k in range(group.runs):
            if records[k] is not None:
                group.workdirs[k].metrics.append(records[k])
            group.ckpts[k].save(step, per_run[k], group.metas[k], {})
        for ckpt in group.ckpts:
            ckpt.wait()

    def _training_records(self, step: int) -> list[dict[str, Any]]:
        """Per run: mean training loss and gradient norm since the last record; stops at a non-finite step."""
        host = [self.group.parallel.metrics_to_host(m) for m in self.pending]
        for i, m in enumerate(host):
            bad = np.flatnonzero(~np.asarray(m["finite"], bool))
            if bad.size:
                for ckpt in self.group.ckpts:
                    ckpt.wait()
                s = step - len(host) + i + 1
                names = [self.group.workdirs[k].path for k in bad]
                raise NonFiniteError(
                    f"non-finite training loss or gradient at step {s} in packed run(s) {names}; the update was "
                    "skipped and the group stopped with its last good checkpoints. Check the data for NaN/Inf or "
                    "lower their config.train.learning_rate."
                )
        t_window, window_start = self.window
        elapsed = time.perf_counter() - t_window
        records = []
        for k in range(self.group.runs):
            records.append(
                {
                    "step": step,
                    "train_loss": float(np.mean([m["loss"][k] for m in host])),
                    "grad_norm": float(np.mean([m["grad_norm"][k] for m in host])),
                    "learning_rate": float(host[-1]["learning_rate"][k]),
                    "steps_per_s": (step - window_start) / elapsed if elapsed > 0 else None,
                }
            )
        self.pending.clear()
        self.window = (time.perf_counter(), step)
        return records


def _final_evaluation(group: _Group, state: dict) -> list[dict[str, Any]]:
    """Each run's test metrics with its own best-validation params, as its summary."""
    per_run = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), state["params"])
    abstract = abstract_arrays(per_run, group.parallel.replicated)
    best_steps = [int(ckpt.best_step()) for ckpt in group.ckpts]
    params = _stack([ckpt.restore_params(s, abstract) for ckpt, s in zip(group.ckpts, best_steps, strict=True)])
    params = jax.device_get(params)
    evaluated = group.parallel.eval_params(group.parallel.put_state({"params": params}))
    test_data = group.evaluator.put(group.splits[0].test)
    test = group.evaluator(evaluated, test_data)
    _log_evaluations(group, group.cadence.num_steps, "test", test, evaluated, test_data)
    count = num_params(params) // group.runs
    summaries = []
    for k, c in enumerate(group.configs):
        best = group.ckpts[k].best_metrics() or {}
        summaries.append(
            {
                "task": c.task,
                "layout": group.metas[k].layout,
                "mode": group.mode,
                "num_train": int(c.data.num_train),
                "model": group.metas[k].model,
                "num_params": count,
                **split_record("test", test[k]),  # test_rel_l2, test_loss, ... (training.metrics)
                "val_rel_l2": best.get("val_rel_l2"),
                "val_loss": best.get("val_loss"),
                "select_by": c.train.select_by,
                "best_step": best_steps[k],
                "learning_rate": float(c.train.learning_rate),
                "steps": group.cadence.num_steps,
                "seed": int(c.seed),
                "task_spec": group.metas[k].task_spec,
                "init_from": c.init_from,
                "devices": group.parallel.num_devices,
                "packed_runs": group.runs,
            }
        )
    return summaries


# ---- memory ---------------------------------------------------------------------------------------------------
def plan_parts(configs: Sequence[ml_collections.ConfigDict], memory_limit_bytes: int | None) -> list[list[int]]:
    """The group's runs in parts that fit the memory limit (one part when no limit is known)."""
    k = len(configs)
    limit = memory_limit_bytes if memory_limit_bytes is not None else _device_memory_limit()
    c0 = configs[0]
    n = c0.data.resolution
    resident = k * c0.data.num_train * (2 * n * n + channels.num_channels(layout_of(c0))) * 4
    if c0.data.source != "stream" and resident > DEVICE_RESIDENT_MAX_BYTES:
        raise ConfigError(
            f"packing {k} runs of data.num_train={c0.data.num_train} at {n} x {n} would keep {resident / 2**30:.1f} "
            "GiB of training data on every device; run them one at a time (study.pack=False) or in smaller groups."
        )
    if limit is None or k == 1:
        return [list(range(k))]
    per_run = packed_step_bytes(c0)
    most = max(1, min(k, int(MEMORY_FRACTION * limit // per_run)))
    if most < k:
        logging.info("packing %d runs in parts of %d: one run's step needs %.3g GB of %.3g GB", k, most, per_run / 1e9,
                     limit / 1e9)  # fmt: skip
    return [list(range(i, min(i + most, k))) for i in range(0, k, most)]


def _device_memory_limit() -> int | None:
    stats = jax.local_devices()[0].memory_stats()
    return int(stats["bytes_limit"]) if stats and "bytes_limit" in stats else None


def packed_step_bytes(config: ml_collections.ConfigDict) -> int:
    """Bytes one run adds to a packed group's train step (arguments, outputs not aliased, temporaries), by XLA's
    memory analysis of the compiled program of one packed run, traced with abstract inputs only."""
    layout = layout_of(config)
    n, c = config.data.resolution, channels.num_channels(layout)
    model = model_from_config(config)
    dummy = jax.ShapeDtypeStruct((1, n, n, c), jnp.float32)
    params = jax.eval_shape(lambda k: model.init(k, jnp.zeros(dummy.shape, dummy.dtype))["params"], jax.random.key(0))
    optimizer = optimizer_from_config(config, params, num_steps=1, steps_per_decay=1)  # its state, not its schedule
    state = {"params": params, "opt_state": jax.eval_shape(optimizer.init, params), "step": jnp.int32(0)}
    state = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct((1, *np.shape(x)), jnp.result_type(x)), state)
    b, num = config.train.batch_size, config.data.num_train
    batch = {
        "source": jax.ShapeDtypeStruct((1, b, n, n), jnp.float32),
        "coeffs": jax.ShapeDtypeStruct((1, b, c - 1), jnp.float32),
        "solution": jax.ShapeDtypeStruct((1, b, n, n), jnp.float32),
    }
    one = functools.partial(steps.train_step, model=model, optimizer=optimizer, norm=_unit_stats(c), length=1.0)
    compiled = jax.jit(jax.vmap(one), donate_argnums=(0,)).lower(state, batch).compile()
    memory = compiled.memory_analysis()
    data = num * (2 * n * n + c - 1) * 4 if config.data.source != "stream" else 0
    total = memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
    return int(total - memory.alias_size_in_bytes + data)


def _unit_stats(num_channels: int):
    from fno_jax.model.normalization import NormStats

    return NormStats(source_scale=1.0, coeff_scale=(1.0,) * (num_channels - 1))
