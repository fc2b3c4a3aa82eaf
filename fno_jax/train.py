"""One run: validate -> open the workdir -> data -> init or transfer -> restore -> loop -> final evaluation.

`train_and_evaluate(config, workdir)` is the whole job; `experiments/main.py` is a thin CLI around it. Everything a
step depends on (batch order, stream samples, init) is a function of (seed, step), so rerunning the same command on
the same workdir resumes from the newest good checkpoint and ends with the same parameters as an uninterrupted run.
The workdir's files are described in `fno_jax.storage.workdir`, its checkpoints in `fno_jax.checkpoint`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from fno_jax.checkpoint import Checkpointer
from fno_jax.config import MODEL_SIZE_KEYS, layout_of, matmul_precision, model_size, validate_config
from fno_jax.data import Splits, batch_indices, load_splits, make_feed, open_checked_dataset
from fno_jax.data.generate import task_from_config
from fno_jax.model import FNO, channels, num_params
from fno_jax.runtime.parallel import DataParallel, make_parallel
from fno_jax.runtime.preemption import Preempted, PreemptionGuard
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
from fno_jax.training import steps
from fno_jax.training.cadence import Cadence
from fno_jax.training.evaluate import Evaluator
from fno_jax.training.finetune import Pretrained, load_pretrained, transfer_params, transfer_stats
from fno_jax.training.optim import optimizer_from_config

__all__ = ["NonFiniteError", "Preempted", "model_from_config", "train_and_evaluate"]


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss or gradient."""


def model_from_config(config: ml_collections.ConfigDict) -> FNO:
    """The run's FNO: its sizes, compute dtype, remat and initialization (`model.init`)."""
    dtype = jnp.bfloat16 if config.train.dtype == "bfloat16" else jnp.float32
    m = config.model
    sizes = {k: m[k] for k in MODEL_SIZE_KEYS}
    return FNO(**sizes, out_dim=1, dtype=dtype, remat=m.remat, param_init=m.init)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Train (or, with num_steps=0 and init_from, only evaluate) one run in `workdir`; returns the summary.

    On SIGTERM or SIGINT during training the run finishes its step, saves a checkpoint of it and raises
    `Preempted` (`fno_jax.runtime.preemption`; its `exit_code` is 143 or 130); the same call again resumes from there.
    """
    validate_config(config)
    with matmul_precision(config):
        return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    t_start = time.perf_counter()
    task, layout = task_from_config(config), layout_of(config)
    # Everything that can be refused is checked before the workdir is touched.
    stored = config.data.source not in ("generate", "stream")
    dataset = open_checked_dataset(config, task, layout) if stored else None
    pretrained = None
    if config.init_from:
        pretrained = load_pretrained(config.init_from, config.init_step, model=model_size(config), layout=layout)
    parallel = make_parallel(config.train.parallel)
    parallel.check_batch_size(config.train.batch_size)

    with Workdir(workdir, config) as wd:
        ckpt = Checkpointer(wd.path, max_to_keep=config.train.max_to_keep)
        writer = None
        try:
            ckpt.check_architecture(model_size(config), layout)  # refused before any data is made
            splits = load_splits(config, task, layout, dataset)
            run = _Run(config, Cadence.from_config(config), parallel, model_from_config(config), wd, ckpt, splits)
            state, meta = _initial_state(run, task, layout, pretrained)
            state, meta, start = _restore(run, state, meta)
            run.evaluator = _Evaluator(run, meta)
            run.writer = writer = open_writer(config, wd.path, start_step=start)
            summary_extra = {}
            if start < run.cadence.num_steps:
                state, summary_extra = _TrainLoop(run, meta, task).train(state, start)
            summary = _final_evaluation(run, meta, state)
            summary.update(summary_extra, wall_s=time.perf_counter() - t_start)
            wd.write_summary(summary)
            logging.info("test rel L2 %.4g (best step %s)", summary["test_rel_l2"], summary["best_step"])
            return summary
        finally:
            if writer is not None:
                writer.close()
            ckpt.close()


@dataclasses.dataclass
class _Run:
    """What the phases of one run share."""

    config: ml_collections.ConfigDict
    cadence: Cadence
    parallel: DataParallel
    model: FNO
    workdir: Workdir
    ckpt: Checkpointer
    splits: Splits
    evaluator: _Evaluator | None = None
    optimizer: Any = None
    writer: MetricWriter | None = None

    @property
    def mode(self) -> str:
        if not self.config.init_from:
            return "scratch"
        return "zeroshot" if self.cadence.num_steps == 0 else "finetune"


def _initial_state(run: _Run, task, layout: str, pretrained: Pretrained | None) -> tuple[dict, RunMeta]:
    """Fresh init (seeded), the pretrained params swapped in, a fresh optimizer; and the run's metadata."""
    c, stats = run.config, run.splits.stats
    init_key = jax.random.fold_in(jax.random.PRNGKey(c.seed), 3000)
    dummy = jnp.zeros((1, c.data.resolution, c.data.resolution, channels.num_channels(layout)), jnp.float32)
    params = jax.jit(lambda k: run.model.init(k, dummy)["params"])(init_key)
    if pretrained is not None:
        params = transfer_params(pretrained.params, params, pretrained.meta.layout, layout)
        if c.finetune.norm_stats == "pretrained":
            stats = transfer_stats(pretrained.meta.norm_stats, stats, pretrained.meta.layout, layout)
    params = jax.tree_util.tree_map(jnp.asarray, params)
    run.optimizer = optimizer_from_config(
        c, params, num_steps=run.cadence.num_steps, steps_per_decay=run.cadence.steps_per_decay(c)
    )
    state = {"params": params, "opt_state": run.optimizer.init(params), "step": jnp.int32(0)}
    meta = RunMeta(
        model=model_size(c),
        layout=layout,
        norm_stats=stats,
        task_spec=task.spec(),
        config=json.loads(c.to_json()),
        provenance=provenance(c, pretrained.step if pretrained else None),
    )
    return state, meta


def _restore(run: _Run, state: dict, meta: RunMeta) -> tuple[dict, RunMeta, int]:
    """The newest restorable checkpoint's state and metadata, laid out for this run's devices whatever topology
    wrote it, or the fresh ones when the workdir has no checkpoint (then metrics.jsonl starts over). Checkpoints
    that exist but cannot be restored stop the run (`Checkpointer.restore_latest`), never a restart from step 0."""
    saved = {"params": state["params"], "opt_state": state["opt_state"]}
    restored = run.ckpt.restore_latest(run.parallel.abstract_state(saved))
    if restored is None:
        run.workdir.metrics.clear()
        return state, meta, 0
    step, saved, saved_meta = restored
    run.workdir.metrics.keep_until(step)
    logging.info("resuming %s from step %d", run.workdir.path, step)
    return {**saved, "step": jnp.int32(step)}, saved_meta, step


class _Evaluator(Evaluator):
    """The run's `Evaluator`, with its validation split on the devices (`val`)."""

    def __init__(self, run: _Run, meta: RunMeta):
        c = run.config
        super().__init__(
            run.model,
            meta.norm_stats,
            layout=meta.layout,
            length=c.data.length,
            parallel=run.parallel,
            batch_size=c.train.eval_batch_size,
        )
        self.val = self.put(run.splits.val)


def _log_evaluation(run: _Run, step: int, split: str, metrics: dict[str, Any], params, data) -> None:
    """A split's metrics in the run's writer, with images of its first `logging.images` samples (validation: at the
    evaluations `image_cadence` picks). Collective: every process computes the predictions; process 0 writes."""
    logging_config = run.config.logging
    due = split != "val" or image_cadence(run.cadence, logging_config.image_evals).due(step)
    examples = run.evaluator.examples(params, data, logging_config.images) if logging_config.images and due else None
    log_evaluation(run.writer, step, split, metrics, examples)


class _TrainLoop:
    """Steps [start, num_steps), with logging, evaluation and checkpointing as periodic actions (`Cadence`)."""

    def __init__(self, run: _Run, meta: RunMeta, task):
        self.run, self.meta = run, meta
        c = run.config
        per_device = functools.partial(
            steps.train_step, model=run.model, optimizer=run.optimizer, norm=meta.norm_stats, length=c.data.length
        )
        self.task, self.per_device = task, per_device
        best = run.ckpt.best_metrics() or {}
        self.best: float | None = best.get("selection")
        self.pending: list[tuple[int, dict]] = []
        self.window = (time.perf_counter(), 0)
        self.compile_s: float | None = None

    def train(self, state: dict, start: int) -> tuple[dict, dict[str, Any]]:
        run = self.run
        num_steps = run.cadence.num_steps
        feed = make_feed(run.config, run.splits, self.task, run.parallel, start=start, stop=num_steps)
        step_fn = run.parallel.compile_train(self.per_device, feed.select)
        state = run.parallel.put_state(state)
        progress = Progress(num_steps, start=start)
        self.window = (time.perf_counter(), start)
        # SIGTERM/SIGINT: finish the step, checkpoint it, raise Preempted; several processes agree at logging steps.
        guard = PreemptionGuard(sync_every=run.cadence.log.steps).install()
        try:
            for step in range(start + 1, num_steps + 1):
                t0 = time.perf_counter()
                state, metrics = step_fn(state, feed.data(step - 1))
                if self.compile_s is None:
                    jax.block_until_ready(metrics)
                    self.compile_s = time.perf_counter() - t0
                    self.window = (time.perf_counter(), step)
                self.pending.append((step, metrics))
                if run.cadence.due_any(step):
                    self._periodic(step, state, progress)
                else:
                    progress.update(step)
                if guard.should_stop(step):
                    if self.pending:  # the steps since the last record: checked finite before they are saved
                        run.workdir.metrics.append(self._training_record(step))
                    run.ckpt.save(step, run.parallel.state_to_save(state), self.meta, {})
                    run.ckpt.wait()
                    raise guard.preempted(step, f"checkpoint in {run.ckpt.directory}/{step}")
        finally:
            guard.uninstall()
            progress.close()
            feed.close()  # stops the prefetch thread on every exit, errors included
        run.ckpt.wait()
        return run.parallel.state_to_save(state), {"compile_s": self.compile_s}

    def _periodic(self, step: int, state: dict, progress: Progress) -> None:
        """The actions due at `step`: a metrics record (metrics.jsonl, the writer) always, then evaluation and a
        checkpoint when due."""
        run, cadence = self.run, self.run.cadence
        record = self._training_record(step)
        metrics = None
        if cadence.evaluate.due(step):
            params = run.parallel.eval_params(state)
            val = run.evaluator(params, run.evaluator.val)
            record.update(split_record("val", val))
            metrics = {"val_rel_l2": val["rel_l2"], "val_loss": val["loss"]}
            metrics["selection"] = metrics[run.config.train.select_by]
            if self.best is None or metrics["selection"] < self.best:
                self.best, record["best"] = metrics["selection"], True
            _log_evaluation(run, step, "val", val, params, run.evaluator.val)
        if cadence.checkpoint.due(step) or record.get("best"):
            run.ckpt.save(step, run.parallel.state_to_save(state), self.meta, metrics if metrics else {})
        run.workdir.metrics.append(record)
        run.writer.scalars(step, scalar_tags({k: v for k, v in record.items() if not k.startswith("val_")}))
        shown = {"val": self.best} if self.best is not None else {}
        progress.update(step, force=True, loss=record["train_loss"], **shown)

    def _training_record(self, step: int) -> dict[str, Any]:
        """Mean training loss and gradient norm since the last record; stops the run at a non-finite step."""
        host = [self.run.parallel.metrics_to_host(m) for _, m in self.pending]
        for (s, _), m in zip(self.pending, host, strict=True):
            if not bool(m["finite"]):
                self.run.ckpt.wait()  # the last good (asynchronous) save must be on disk before the run stops
                raise NonFiniteError(_nonfinite_message(self.run, s, m))
        t_window, window_start = self.window
        elapsed = time.perf_counter() - t_window
        record = {
            "step": step,
            "train_loss": float(np.mean([m["loss"] for m in host])),
            "grad_norm": float(np.mean([m["grad_norm"] for m in host])),
            "learning_rate": float(host[-1]["learning_rate"]),
            "steps_per_s": (step - window_start) / elapsed if elapsed > 0 else None,
        }
        self.pending.clear()
        self.window = (time.perf_counter(), step)
        return record


def _final_evaluation(run: _Run, meta: RunMeta, state: dict) -> dict[str, Any]:
    """Test metrics of the best-validation params (zero-shot: of the given params) as the run's summary."""
    c, parallel = run.config, run.parallel
    if run.cadence.num_steps == 0:
        best_step, params = 0, state["params"]
    else:
        best_step = int(run.ckpt.best_step())
        abstract = parallel.abstract_state({"params": state["params"]})["params"]
        params = run.ckpt.restore_params(best_step, abstract)
    eval_params = parallel.eval_params(parallel.put_state({"params": params}))
    if run.cadence.num_steps == 0:
        val = run.evaluator(eval_params, run.evaluator.val)
    else:
        best = run.ckpt.best_metrics() or {}
        val = {"rel_l2": best.get("val_rel_l2"), "loss": best.get("val_loss")}
    test_data = run.evaluator.put(run.splits.test)
    test = run.evaluator(eval_params, test_data)
    _log_evaluation(run, run.cadence.num_steps, "test", test, eval_params, test_data)
    # Distinct training samples seen: a stream draws fresh ones every step.
    seen = run.cadence.num_steps * c.train.batch_size if c.data.source == "stream" else c.data.num_train
    return {
        "task": c.task,
        "layout": meta.layout,
        "mode": run.mode,
        "num_train": 0 if run.mode == "zeroshot" else int(seen),
        "model": meta.model,
        "num_params": num_params(params),
        **split_record("test", test),  # test_rel_l2 (the paper's metric), test_loss, ... (training.metrics)
        "val_rel_l2": val["rel_l2"],
        "val_loss": val["loss"],
        "select_by": c.train.select_by,
        "best_step": best_step,
        "learning_rate": float(c.train.learning_rate),
        "steps": run.cadence.num_steps,
        "seed": int(c.seed),
        "task_spec": meta.task_spec,
        "init_from": c.init_from,
        "devices": parallel.num_devices,
    }


def _nonfinite_message(run: _Run, step: int, metrics: dict) -> str:
    c, train = run.config, run.splits.train
    last = run.ckpt.latest_step()
    path = run.workdir.path
    where = f"the last good checkpoint is step {last} in {path}/checkpoints" if last else "no checkpoint was written"
    if train is not None:
        index = batch_indices(jnp.int32(step - 1), num=train.num, batch_size=c.train.batch_size, seed=c.seed)
        sample = train.indices[np.asarray(index)]
        batch = f" (batch of train samples {sorted(int(i) for i in sample)[:16]})"
    else:
        batch = f" (stream batch of step {step - 1})"
    return (
        f"non-finite training loss or gradient at step {step}{batch}: loss={float(metrics['loss'])}, "
        f"grad_norm={float(metrics['grad_norm'])}. The update was skipped and the run stopped; {where}. "
        "Check the data for NaN/Inf or lower config.train.learning_rate."
    )
