"""Optimizer: Adam(W) with linear warmup and cosine decay (the paper's schedule), optional frozen subtrees, and
non-finite updates skipped (`optax.apply_if_finite`).

The run's peak learning rate lives in the optimizer state (`RunLearningRateState.learning_rate`), not in a closure:
runs that differ only in their rate then share one optimizer and one compiled step, and K of them train as one
program with a leading run axis on their states (`fno_jax.training.packing`). The step size is computed as
-(rate * unit_schedule(count)), bit for bit the value optax's own `adam(schedule)` would use.
"""

import re
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

# apply_if_finite applies an update anyway after this many non-finite ones in a row; the run loop stops at the
# first, so "never".
_NEVER = int(np.iinfo(np.int32).max)


def learning_rate_schedule(
    learning_rate: float, num_steps: int, warmup_steps: int = 0, steps_per_decay: int = 1
) -> optax.Schedule:
    """Linear warmup from 0 over `warmup_steps`, then cosine decay to 0 at `num_steps`.

    With `steps_per_decay` > 1 the rate changes only every `steps_per_decay` steps, keeping the value of the first
    step of each span: the paper steps its cosine once per epoch (PyTorch's `CosineAnnealingLR` stepped per
    epoch), so with `steps_per_decay` = steps per epoch, epoch e of E runs at lr * (1 + cos(pi e / E)) / 2.
    """
    num_steps = max(int(num_steps), 1)
    warmup_steps = min(int(warmup_steps), num_steps - 1) if num_steps > 1 else 0
    if warmup_steps > 0:
        schedule = optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=learning_rate,
            warmup_steps=warmup_steps,
            decay_steps=num_steps,
            end_value=0.0,
        )
    else:
        schedule = optax.cosine_decay_schedule(learning_rate, decay_steps=num_steps)
    if steps_per_decay <= 1:
        return schedule
    return lambda count: schedule((count // steps_per_decay) * steps_per_decay)


class RunLearningRateState(NamedTuple):
    """count: updates applied; learning_rate: the run's peak rate; step_size: the last update's rate."""

    count: jax.Array
    learning_rate: jax.Array
    step_size: jax.Array


def scale_by_run_learning_rate(learning_rate: float, unit_schedule: optax.Schedule) -> optax.GradientTransformation:
    """Multiply updates by -(learning_rate * unit_schedule(count)), with `learning_rate` kept in the state."""

    def init(params):
        del params
        rate = jnp.asarray(learning_rate, jnp.float32)
        return RunLearningRateState(jnp.zeros([], jnp.int32), rate, jnp.zeros([], jnp.float32))

    def update(updates, state, params=None):
        del params
        rate = state.learning_rate * unit_schedule(state.count)
        step_size = -1 * rate
        updates = jax.tree_util.tree_map(lambda g: jnp.array(step_size, dtype=g.dtype) * g, updates)
        return updates, RunLearningRateState(optax.safe_increment(state.count), state.learning_rate, rate)

    return optax.GradientTransformation(init, update)


def current_learning_rate(opt_state) -> jax.Array:
    """The rate of the last update (0 before the first) from an optimizer state of `make_optimizer`."""
    is_rate = lambda x: isinstance(x, RunLearningRateState)
    (state,) = [x for x in jax.tree_util.tree_leaves(opt_state, is_leaf=is_rate) if is_rate(x)]
    return state.step_size


def param_path(path: tuple) -> str:
    """'/'-joined names of a pytree key path, e.g. 'spectral_0/weights1'."""
    return jax.tree_util.keystr(path, simple=True, separator="/")


def freeze_labels(params, patterns: Sequence[str]):
    """'frozen' for every leaf whose path matches one of the regexes `patterns`, else 'trainable'."""
    compiled = [re.compile(p) for p in patterns]

    def label(path, _):
        name = param_path(path)
        return "frozen" if any(c.search(name) for c in compiled) else "trainable"

    return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(
    learning_rate: float,
    num_steps: int,
    *,
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
    freeze: Sequence[str] = (),
    params=None,
    steps_per_decay: int = 1,
    labels=None,
) -> optax.GradientTransformation:
    """Adam with the schedule above; leaves matching `freeze`, or labelled "frozen" in `labels` (a tree like
    `params`, e.g. a fine-tuning mode's, `fno_jax.training.tuning`), get exactly zero updates and no Adam state.

    The outermost transform is `optax.apply_if_finite`: an update whose gradient holds NaN or Inf leaves params
    and optimizer state unchanged, and its state's `last_finite` says so (the train step reports it).
    `params` is needed only when `freeze` is given (to label the leaves). `steps_per_decay`: see
    `learning_rate_schedule`.
    """
    unit = learning_rate_schedule(1.0, num_steps, warmup_steps, steps_per_decay)
    rate = scale_by_run_learning_rate(learning_rate, unit)
    if weight_decay > 0:
        base = optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(weight_decay), rate)
    else:
        base = optax.chain(optax.scale_by_adam(), rate)
    if not freeze and labels is None:
        return optax.apply_if_finite(base, max_consecutive_errors=_NEVER)
    if freeze:
        if params is None:
            raise ValueError("make_optimizer: `params` is required to label leaves when `freeze` is set.")
        by_pattern = freeze_labels(params, freeze)
        labels = by_pattern if labels is None else jax.tree_util.tree_map(_either_frozen, labels, by_pattern)
    if "trainable" not in jax.tree_util.tree_leaves(labels):
        raise ValueError(
            f"finetune.freeze={tuple(freeze)} matches every parameter, so nothing would train; "
            "use narrower patterns (e.g. 'spectral_.*' to freeze the Fourier layers only)."
        )
    frozen = optax.multi_transform({"trainable": base, "frozen": optax.set_to_zero()}, labels)
    return optax.apply_if_finite(frozen, max_consecutive_errors=_NEVER)


def _either_frozen(a: str, b: str) -> str:
    return "frozen" if "frozen" in (a, b) else "trainable"


def optimizer_from_config(
    config, params, *, num_steps: int, steps_per_decay: int, labels=None
) -> optax.GradientTransformation:
    """The run's optimizer: `make_optimizer` with `config.train`'s rate, warmup and weight decay, `finetune.freeze`
    (labelled on `params`) and the fine-tuning mode's `labels`, decaying over `num_steps` (at least 1) in stairs of
    `steps_per_decay`."""
    return make_optimizer(
        config.train.learning_rate,
        max(num_steps, 1),
        warmup_steps=config.train.warmup_steps,
        weight_decay=config.train.weight_decay,
        freeze=tuple(config.finetune.freeze),
        params=params,
        steps_per_decay=steps_per_decay,
        labels=labels,
    )
