"""The one training path: a group of K >= 1 runs, from their configs to their summaries.

    validate -> open the workdirs -> data -> init or transfer -> restore -> loop -> final evaluation

One run is K = 1 (`fno_jax.train.train_and_evaluate`); K runs that differ only in seed and learning rate
(`fno_jax.training.packing.pack_key`) train as one compiled program (`fno_jax.train.train_and_evaluate_packed`), their
values stacked along a run axis (`fno_jax.training.runs.RunAxis`; K = 1 carries none, so a lone run is exactly
itself). Every mode works for any K: scratch, fine-tuning from a workdir or a bundle, zero-shot (no steps),
generated, stored and streamed data, device-resident or host-fed batches, every parallel form.

Each run keeps its own init (from its seed), training subset, data order, normalization statistics, best-validation
checkpoint and workdir (config.json, metrics.jsonl, TensorBoard event files, checkpoints/, summary.json, as
`fno_jax.storage.workdir` describes). Everything a step depends on is a function of (seed, step), so running the same
group again on the same workdirs resumes from the newest step every run can restore
(`fno_jax.checkpoint.restore_latest`) and ends with the parameters of an uninterrupted group.
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

from fno_jax.checkpoint import Checkpointer, restore_latest
from fno_jax.config import layout_of, model_size, task_of
from fno_jax.data import Splits, batch_indices, load_splits_for_runs, make_feed, open_checked_dataset
from fno_jax.model import FNO, channels, from_config, num_params
from fno_jax.model.normalization import ScaleArrays, scale_arrays
from fno_jax.runtime.cli_errors import UserError
from fno_jax.runtime.parallel import DataParallel, make_parallel
from fno_jax.runtime.preemption import PreemptionGuard
from fno_jax.runtime.progress import Progress
from fno_jax.storage.metric_writer import MetricWriter, log_evaluation, open_writer, scalar_tags, split_record
from fno_jax.storage.workdir import RunMeta, Workdir, provenance
from fno_jax.training import steps
from fno_jax.training.cadence import Cadence, image_cadence
from fno_jax.training.evaluate import Evaluator
from fno_jax.training.finetune import Pretrained, load_pretrained, transfer_params, transfer_stats
from fno_jax.training.optim import optimizer_from_config
from fno_jax.training.runs import RunAxis
from fno_jax.training.steps import FULL
from fno_jax.training.tuning import Tuning

__all__ = ["NonFiniteError", "train_group"]

# The validation metrics saved with a checkpoint (orbax metrics); `train.select_by` picks one as its "selection".
SAVED_VAL_METRICS = ("val_rel_l2", "val_loss", "val_rel_residual")


class NonFiniteError(UserError, FloatingPointError):
    """Training produced a non-finite loss or gradient."""


@dataclasses.dataclass
class _Group:
    """What the phases of one group share. `config` is the first run's: the settings every run shares."""

    configs: list[ml_collections.ConfigDict]
    axis: RunAxis
    cadence: Cadence
    parallel: DataParallel
    model: FNO
    task: Any
    layout: str
    workdirs: list[Workdir]
    ckpts: list[Checkpointer]
    splits: list[Splits]
    tuning: Tuning = FULL
    metas: list[RunMeta] = dataclasses.field(default_factory=list)
    optimizer: Any = None
    trainable_params: int = 0
    before: list[dict] | None = None  # test-time adaptation: each run's test metrics before it
    evaluator: Evaluator | None = None
    val: Any = None
    writers: list[MetricWriter] = dataclasses.field(default_factory=list)

    @property
    def config(self) -> ml_collections.ConfigDict:
        return self.configs[0]

    @property
    def mode(self) -> str:
        if not self.config.init_from:
            return "scratch"
        return "zeroshot" if self.cadence.num_steps == 0 else "finetune"

    @property
    def norm(self) -> ScaleArrays:
        """The runs' normalization scales, stacked along the run axis."""
        return self.axis.stack_host([scale_arrays(meta.norm_stats) for meta in self.metas])

    @property
    def terms(self) -> tuple[str, ...]:
        """The loss terms of the group's runs (`steps.train_step`): "data" and/or "residual"."""
        losses = {c.train.loss for c in self.configs}
        terms = [t for t, losses_with in (("data", {"data", "hybrid"}), ("residual", {"residual", "hybrid"}))
                 if losses & losses_with]  # fmt: skip
        return tuple(terms)

    @property
    def consts(self) -> dict[str, Any]:
        """What each run's step reads besides its state and batch: its normalization scales and loss weights
        (data, residual), stacked along the run axis."""
        weights = {"data": (1.0, 0.0), "residual": (0.0, 1.0)}
        per_run = [weights.get(c.train.loss, (1.0, float(c.train.residual_weight))) for c in self.configs]
        return {"norm": self.norm, "weights": self.axis.stack_host([np.float32(w) for w in per_run])}

    def model_params(self, params) -> Any:
        """The runs' model params from their state params (adapters merged), stacked."""
        if not self.tuning.adapted:
            return params
        return jax.jit(self.axis.map(self.tuning.model_params))(params)


def train_group(configs: Sequence[ml_collections.ConfigDict], paths: Sequence[str]) -> list[dict[str, Any]]:
    """Train (or, with num_steps=0 and init_from, only evaluate) the runs `configs` in the workdirs `paths`, as one
    program; returns their summaries. The configs are validated and share a pack key (`fno_jax.train`)."""
    t_start = time.perf_counter()
    configs, c0 = list(configs), configs[0]
    task, layout = task_of(c0), layout_of(c0)
    # Everything that can be refused is checked before a workdir is touched.
    dataset = open_checked_dataset(c0, task, layout) if c0.data.source not in ("generate", "stream") else None
    pretrained = None
    if c0.init_from:
        pretrained = load_pretrained(c0.init_from, c0.init_step, model=model_size(c0), layout=layout)
    parallel = make_parallel(c0.train.parallel)
    parallel.check_batch_size(c0.train.batch_size)
    axis = RunAxis(len(configs))
    with contextlib.ExitStack() as stack:
        workdirs = [stack.enter_context(Workdir(p, c)) for p, c in zip(paths, configs, strict=True)]
        # A group keeps at least two newest steps: one killed while saving its K checkpoints keeps a step all have.
        keep = [c.train.max_to_keep if not axis.stacked else max(c.train.max_to_keep, 2) for c in configs]
        ckpts = [Checkpointer(w.path, max_to_keep=k) for w, k in zip(workdirs, keep, strict=True)]
        for ckpt in ckpts:
            stack.callback(ckpt.close)
            ckpt.check_architecture(model_size(c0), layout)  # refused before any data is made
        splits = load_splits_for_runs(configs, task, layout, dataset)
        group = _Group(configs, axis, Cadence.from_config(c0), parallel, from_config(c0), task, layout, workdirs,
                       ckpts, splits, Tuning.from_config(c0))  # fmt: skip
        state = _initial_state(group, pretrained)
        group.evaluator = Evaluator(group.model, group.norm, layout=layout, length=c0.data.length, parallel=parallel,
                                    batch_size=c0.train.eval_batch_size, axis=axis)  # fmt: skip
        if c0.train.test_time:  # what the test inputs' residual is to improve on: the model before adaptation
            params = group.model_params(parallel.eval_params(parallel.put_state({"params": state["params"]})))
            group.before = group.evaluator(params, group.evaluator.put(splits[0].test))
        state, start = _restore(group, state)
        group.val = group.evaluator.put(splits[0].val)
        group.writers = [open_writer(c, w.path, start_step=start) for c, w in zip(configs, workdirs, strict=True)]
        for writer in group.writers:
            stack.callback(writer.close)
        extra: dict[str, Any] = {"compile_s": None}
        if start < group.cadence.num_steps:
            state, extra = _TrainLoop(group).train(state, start)
        summaries = _final_evaluation(group, state)
        for wd, summary in zip(workdirs, summaries, strict=True):
            summary.update(extra, wall_s=time.perf_counter() - t_start)
            wd.write_summary(summary)
        best = ", ".join(f"{s['test_rel_l2']:.4g} (best step {s['best_step']})" for s in summaries)
        logging.info("test rel L2 %s", best)
        return summaries


def _initial_state(group: _Group, pretrained: Pretrained | None) -> dict:
    """Each run's fresh init (seeded) or the pretrained params swapped in, its own fresh optimizer state, stacked;
    and the runs' metadata (`group.metas`, with their normalization statistics)."""
    c0, axis = group.config, group.axis
    n = c0.data.resolution
    dummy = jnp.zeros((1, n, n, channels.num_channels(group.layout)), jnp.float32)
    keys = [jax.random.fold_in(jax.random.PRNGKey(c.seed), 3000) for c in group.configs]
    init = lambda key: group.model.init(key, dummy)["params"]
    runs = axis.unstack(jax.jit(axis.map(init))(axis.stack(keys)))
    stats = [s.stats for s in group.splits]
    if pretrained is not None:
        runs = [transfer_params(pretrained.params, p, pretrained.meta.layout, group.layout) for p in runs]
        if c0.finetune.norm_stats == "pretrained":
            stats = [transfer_stats(pretrained.meta.norm_stats, s, pretrained.meta.layout, group.layout) for s in stats]
    runs = [jax.tree_util.tree_map(jnp.asarray, p) for p in runs]
    if group.tuning.mode != "full":
        keys = [jax.random.fold_in(jax.random.PRNGKey(c.seed), 3001) for c in group.configs]
        runs = [group.tuning.init(key, p) for key, p in zip(keys, runs, strict=True)]
    states = []
    for c, params in zip(group.configs, runs, strict=True):
        steps_per_decay = group.cadence.steps_per_decay(c)
        labels = group.tuning.labels(params) if group.tuning.mode != "full" else None
        optimizer = optimizer_from_config(
            c, params, num_steps=group.cadence.num_steps, steps_per_decay=steps_per_decay, labels=labels
        )
        states.append({"params": params, "opt_state": optimizer.init(params), "step": jnp.int32(0)})
    group.trainable_params = group.tuning.trainable_count(runs[0])
    # The runs' optimizers differ only in the rate each keeps in its state: one update function serves them all.
    group.optimizer = optimizer
    pretrained_step = pretrained.step if pretrained else None
    group.metas = [
        RunMeta(model_size(c), group.layout, s, group.task.spec(), json.loads(c.to_json()),
                {**provenance(c, pretrained_step), "packed_runs": axis.size})
        for c, s in zip(group.configs, stats, strict=True)
    ]  # fmt: skip
    return axis.stack(states)


def _restore(group: _Group, state: dict) -> tuple[dict, int]:
    """The newest step every run restores (their states and metadata laid out for this group's devices, whatever
    topology wrote them), or the fresh state at step 0 when no run has a checkpoint (metrics.jsonl then starts over).
    One policy for one run and a group: `fno_jax.checkpoint.restore_latest`; never a silent restart from step 0."""
    saved = {"params": state["params"], "opt_state": state["opt_state"]}
    restored = restore_latest(group.ckpts, group.parallel.abstract_state(group.axis.per_run(saved)))
    if restored is None:
        for wd in group.workdirs:
            wd.metrics.clear()
        return state, 0
    step, states, metas = restored
    for wd in group.workdirs:
        wd.metrics.keep_until(step)
    group.metas = metas
    logging.info("resuming %s from step %d", ", ".join(wd.path for wd in group.workdirs), step)
    return group.axis.stack([{**s, "step": jnp.int32(step)} for s in states]), step


def _log_evaluations(group: _Group, step: int, split: str, metrics: list[dict], params, data) -> None:
    """Each run's metrics of a split in its writer, with images of its first `logging.images` samples (validation:
    at the evaluations `image_cadence` picks). Collective: every process computes the predictions; process 0
    writes."""
    logging_config = group.config.logging
    due = split != "val" or image_cadence(group.cadence, logging_config.image_evals).due(step)
    count = logging_config.images if due else 0
    examples = group.evaluator.examples(params, data, count) if count else [None] * group.axis.size
    for writer, run_metrics, run_examples in zip(group.writers, metrics, examples, strict=True):
        log_evaluation(writer, step, split, run_metrics, run_examples)


class _TrainLoop:
    """Steps [start, num_steps) of the group, with logging, evaluation and checkpointing as periodic actions
    (`Cadence`), per run."""

    def __init__(self, group: _Group):
        self.group = group
        one = functools.partial(
            steps.train_step,
            model=group.model,
            optimizer=group.optimizer,
            length=group.config.data.length,
            terms=group.terms,
            layout=group.layout,
            tuning=group.tuning,
        )

        def per_device(state, batch, consts, axis_name):
            run = lambda s, b, c: one(s, b, c["norm"], c["weights"], axis_name=axis_name)
            return group.axis.map(run)(state, batch, consts)

        self.per_device = per_device
        self.best: list[float | None] = [(ckpt.best_metrics() or {}).get("selection") for ckpt in group.ckpts]
        self.pending: list[tuple[int, dict]] = []
        self.window = (time.perf_counter(), 0)
        self.compile_s: float | None = None

    def train(self, state: dict, start: int) -> tuple[dict, dict[str, Any]]:
        group = self.group
        num_steps, parallel = group.cadence.num_steps, group.parallel
        feed = make_feed(group.configs, group.splits, group.task, parallel, group.axis, start=start, stop=num_steps,
                         terms=group.terms)  # fmt: skip
        step_fn = parallel.compile_train(self.per_device, feed.select, batch_axis=group.axis.batch_axis)
        state, consts = parallel.put_state(state), parallel.put_consts(group.consts)
        label = "train" if not group.axis.stacked else f"train x{group.axis.size}"
        progress = Progress(num_steps, start=start, label=label)
        self.window = (time.perf_counter(), start)
        # SIGTERM/SIGINT: finish the step, checkpoint it, raise Preempted; several processes agree at logging steps.
        guard = PreemptionGuard(sync_every=group.cadence.log.steps).install()
        try:
            for step in range(start + 1, num_steps + 1):
                t0 = time.perf_counter()
                state, metrics = step_fn(state, feed.data(step - 1), consts)
                if self.compile_s is None:
                    jax.block_until_ready(metrics)
                    self.compile_s = time.perf_counter() - t0
                    self.window = (time.perf_counter(), step)
                self.pending.append((step, metrics))
                if group.cadence.due_any(step):
                    self._periodic(step, state, progress)
                else:
                    progress.update(step)
                if guard.should_stop(step):
                    self._stop(step, state)
                    where = ", ".join(f"{ckpt.directory}/{step}" for ckpt in group.ckpts)
                    raise guard.preempted(step, f"checkpoint in {where}")
        finally:
            guard.uninstall()
            progress.close()
            feed.close()  # stops the prefetch thread on every exit, errors included
        for ckpt in group.ckpts:
            ckpt.wait()
        return parallel.state_to_save(state), {"compile_s": self.compile_s}

    def _periodic(self, step: int, state: dict, progress: Progress) -> None:
        """The actions due at `step`: a metrics record per run (metrics.jsonl, the writer) always, then evaluation
        and a checkpoint when due."""
        group, cadence = self.group, self.group.cadence
        records = self._training_records(step)
        val = [None] * group.axis.size
        if cadence.evaluate.due(step):
            params = group.model_params(group.parallel.eval_params(state))
            val = group.evaluator(params, group.val)
            _log_evaluations(group, step, "val", val, params, group.val)
        per_run = None  # the runs' states, split once when the first of them is saved
        for k, record in enumerate(records):
            metrics = {}
            if val[k] is not None:
                record.update(split_record("val", val[k]))
                metrics = {name: val[k][name.removeprefix("val_")] for name in SAVED_VAL_METRICS}
                metrics["selection"] = metrics[group.configs[k].train.select_by]
                if self.best[k] is None or metrics["selection"] < self.best[k]:
                    self.best[k], record["best"] = metrics["selection"], True
            saved = cadence.checkpoint.due(step) or record.get("best")
            if saved:
                per_run = per_run or self._runs_to_save(state)
                group.ckpts[k].save(step, per_run[k], group.metas[k], metrics)
            group.workdirs[k].metrics.append(record)
            if saved:  # GCS: the records a resume from this step keeps, written while the checkpoint is (async)
                group.workdirs[k].metrics.flush()
            group.writers[k].scalars(step, scalar_tags({name: v for name, v in record.items() if name[:4] != "val_"}))
        best = [b for b in self.best if b is not None]
        shown = {"val": min(best)} if best else {}
        progress.update(step, force=True, loss=float(np.mean([r["train_loss"] for r in records])), **shown)

    def _runs_to_save(self, state: dict) -> list[dict]:
        saved = self.group.parallel.state_to_save(state)
        return self.group.axis.unstack({"params": saved["params"], "opt_state": saved["opt_state"]})

    def _stop(self, step: int, state: dict) -> None:
        """Every run's records since the last one and a checkpoint at `step`, even where none was due."""
        group = self.group
        if self.pending:  # the steps since the last record: checked finite before they are saved
            for wd, record in zip(group.workdirs, self._training_records(step), strict=True):
                wd.metrics.append(record)
        for wd in group.workdirs:
            wd.metrics.flush()
        for ckpt, run_state, meta in zip(group.ckpts, self._runs_to_save(state), group.metas, strict=True):
            ckpt.save(step, run_state, meta, {})
        for ckpt in group.ckpts:
            ckpt.wait()

    def _training_records(self, step: int) -> list[dict[str, Any]]:
        """Per run: mean training loss and gradient norm since the last record; stops the group at a non-finite
        step (after the last good checkpoints are on disk)."""
        group = self.group
        host = [group.axis.runs_of(group.parallel.metrics_to_host(m)) for _, m in self.pending]
        for (s, _), runs in zip(self.pending, host, strict=True):
            bad = [k for k, m in enumerate(runs) if not bool(m["finite"])]
            if bad:
                for ckpt in group.ckpts:
                    ckpt.wait()
                raise NonFiniteError(_nonfinite_message(group, s, bad, runs[bad[0]]))
        t_window, window_start = self.window
        elapsed = time.perf_counter() - t_window
        records = [
            {
                "step": step,
                "train_loss": float(np.mean([runs[k]["loss"] for runs in host])),
                "grad_norm": float(np.mean([runs[k]["grad_norm"] for runs in host])),
                "learning_rate": float(host[-1][k]["learning_rate"]),
                "steps_per_s": (step - window_start) / elapsed if elapsed > 0 else None,
            }
            for k in range(group.axis.size)
        ]
        self.pending.clear()
        self.window = (time.perf_counter(), step)
        return records


def _nonfinite_message(group: _Group, step: int, bad: list[int], metrics: dict) -> str:
    """What went wrong at `step` in runs `bad` (the first one's loss, gradient norm and batch), and what to do."""
    k, c = bad[0], group.config
    last = group.ckpts[k].latest_step()
    path = group.workdirs[k].path
    where = f"the last good checkpoint is step {last} in {path}/checkpoints" if last else "no checkpoint was written"
    train = group.splits[k].train
    if train is not None:
        index = batch_indices(jnp.int32(step - 1), num=train.num, batch_size=c.train.batch_size,
                              seed=group.configs[k].seed)  # fmt: skip
        sample = train.indices[np.asarray(index)]
        batch = f" (batch of train samples {sorted(int(i) for i in sample)[:16]})"
    else:
        batch = f" (stream batch of step {step - 1})"
    runs = "" if not group.axis.stacked else f" in run(s) {[group.workdirs[i].path for i in bad]}"
    return (
        f"non-finite training loss or gradient at step {step}{runs}{batch}: loss={float(metrics['loss'])}, "
        f"grad_norm={float(metrics['grad_norm'])}. The update was skipped and the run stopped; {where}. "
        "Check the data for NaN/Inf or lower config.train.learning_rate."
    )


def _final_evaluation(group: _Group, state: dict) -> list[dict[str, Any]]:
    """Each run's test metrics with its best-validation params (zero-shot: the given params), as its summary."""
    parallel, axis = group.parallel, group.axis
    zeroshot = group.cadence.num_steps == 0
    if zeroshot:
        best_steps, params = [0] * axis.size, state["params"]
    else:
        best_steps = [int(ckpt.best_step()) for ckpt in group.ckpts]
        abstract = parallel.abstract_state(axis.per_run({"params": state["params"]}))["params"]
        params = axis.stack([ckpt.restore_params(s, abstract) for ckpt, s in zip(group.ckpts, best_steps, strict=True)])
    eval_params = group.model_params(parallel.eval_params(parallel.put_state({"params": params})))
    if zeroshot:
        val = group.evaluator(eval_params, group.val)
    else:
        val = [ckpt.best_metrics() or {} for ckpt in group.ckpts]
        val = [{name.removeprefix("val_"): v.get(name) for name in SAVED_VAL_METRICS} for v in val]
    test_data = group.evaluator.put(group.splits[0].test)
    test = group.evaluator(eval_params, test_data)
    _log_evaluations(group, group.cadence.num_steps, "test", test, eval_params, test_data)
    count = num_params(eval_params) // axis.size
    summaries = [_summary(group, k, test[k], val[k], best_steps[k], count) for k in range(axis.size)]
    if group.config.train.test_time:
        for summary, before in zip(summaries, group.before, strict=True):
            summary["before"] = split_record("test", before)
    return summaries


def _summary(group: _Group, k: int, test: dict, val: dict, best_step: int, count: int) -> dict[str, Any]:
    c, meta, mode = group.configs[k], group.metas[k], group.mode
    # Distinct training samples seen: a stream draws fresh ones every step.
    seen = group.cadence.num_steps * c.train.batch_size if c.data.source == "stream" else c.data.num_train
    return {
        "task": c.task,
        "layout": meta.layout,
        "mode": mode,
        "num_train": 0 if mode == "zeroshot" else int(seen),
        "model": meta.model,
        "num_params": count,
        **split_record("test", test),  # test_rel_l2 (the paper's metric), test_loss, ... (training.metrics)
        "val_rel_l2": val["rel_l2"],
        "val_loss": val["loss"],
        "val_rel_residual": val.get("rel_residual"),
        "select_by": c.train.select_by,
        "best_step": best_step,
        "learning_rate": float(c.train.learning_rate),
        "steps": group.cadence.num_steps,
        "seed": int(c.seed),
        "task_spec": meta.task_spec,
        "init_from": c.init_from,
        "devices": group.parallel.num_devices,
        "packed_runs": group.axis.size,
        "finetune_mode": group.tuning.mode,
        "loss": c.train.loss,
        "trainable_params": int(group.trainable_params),
    }
