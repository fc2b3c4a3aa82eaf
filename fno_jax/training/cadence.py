"""A run's length and its periodic actions (logging, evaluation, checkpointing), resolved from the config.

Length: `train.num_steps` steps, or, when that is -1, `train.num_epochs` epochs of floor(num_train / batch_size)
steps (drop-last: the paper's loader). Each periodic action is due every `train.<action>_every` steps (0 = once per
epoch) and at the last step; evaluation is thinned to at most `train.max_evals` per run, a bound for very long runs.
"""

from __future__ import annotations

import dataclasses
import math

import ml_collections


def epoch_size(config: ml_collections.ConfigDict) -> int:
    """The samples one epoch visits: the labelled training set; for a residual-only loss the unlabelled inputs (the
    test inputs under test-time adaptation)."""
    t, d = config.train, config.data
    if t.loss == "residual":
        return int(d.num_test if t.test_time else d.num_unlabelled)
    return int(d.num_train)


@dataclasses.dataclass(frozen=True)
class Every:
    """Due at every multiple of `steps` and at the run's `last` step: the one rule all periodic actions share."""

    steps: int
    last: int

    def due(self, step: int) -> bool:
        return step % self.steps == 0 or step == self.last


@dataclasses.dataclass(frozen=True)
class Cadence:
    """Properties:
    num_steps: steps the run trains (0: evaluation only).
    steps_per_epoch: floor(num_train / batch_size) (drop-last).
    log, evaluate, checkpoint: when each periodic action is due.
    """

    num_steps: int
    steps_per_epoch: int
    log: Every
    evaluate: Every
    checkpoint: Every

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> Cadence:
        t = config.train
        per_epoch = max(epoch_size(config) // int(t.batch_size), 1)
        num_steps = int(t.num_steps) if t.num_steps >= 0 else int(t.num_epochs) * per_epoch

        def every(value: int, at_least: int = 1) -> Every:
            steps = int(value) if value > 0 else per_epoch
            return Every(max(steps, at_least), max(num_steps, 1))

        return cls(
            num_steps=num_steps,
            steps_per_epoch=per_epoch,
            log=every(t.log_every),
            evaluate=every(t.eval_every, at_least=math.ceil(num_steps / t.max_evals)),
            checkpoint=every(t.checkpoint_every),
        )

    def steps_per_decay(self, config: ml_collections.ConfigDict) -> int:
        """How many steps the learning rate stays constant (`train.lr_decay`): one epoch, or one step."""
        return self.steps_per_epoch if config.train.lr_decay == "epoch" else 1

    def due_any(self, step: int) -> bool:
        return self.log.due(step) or self.evaluate.due(step) or self.checkpoint.due(step)


def image_cadence(cadence: Cadence, image_evals: int) -> Every:
    """The evaluations that also draw images: every m-th one, m the least that keeps them to `image_evals` a run,
    and the last."""
    evaluate = cadence.evaluate
    every = evaluate.steps * math.ceil(math.ceil(max(cadence.num_steps, 1) / image_evals) / evaluate.steps)
    return Every(every, evaluate.last)
