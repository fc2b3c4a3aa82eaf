"""Pure, per-device train and eval steps.

The train state is a plain dict `{"params", "opt_state", "step"}`. A batch is a dict of raw physical arrays
`{"source": [B, n, n], "coeffs": [B, C-1], "solution": [B, n, n]}`; normalization and channel assembly happen inside
the step (`fno_jax.model.predict`), so datasets hold no broadcast coefficient fields. The normalization scales are an
argument (`ScaleArrays`), not a constant, so runs with other statistics share one compiled step. Functions here are
written for one run on one device: with `axis_name` set they average over that mesh axis (`lax.pmean`), which is all
data parallelism needs; K runs at once map them over a run axis (`fno_jax.training.runs`).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from fno_jax.model import channels, predict
from fno_jax.model.normalization import ScaleArrays
from fno_jax.training import metrics
from fno_jax.training.losses import sum_squared_error
from fno_jax.training.optim import current_learning_rate
from fno_jax.training.tuning import Tuning

FULL = Tuning()  # every weight trains, params are the model's

State = dict[str, Any]
Batch = dict[str, jax.Array]


def residual_loss(
    params, inputs: Batch, *, model: nn.Module, norm: ScaleArrays, length: float, layout: str
) -> jax.Array:
    """The mean over a batch of unlabelled inputs `{"source", "coeffs"}` of the relative PDE residual of the model's
    prediction, ||A u_pred - P f|| / ||P f|| with A rebuilt from the raw coefficient channels of `layout`
    (`fno_jax.training.metrics.relative_residual`): a loss that needs no solutions, 0 on the solver's solutions."""
    prediction = predict(params, inputs, model=model, norm=norm, length=length)
    coefficients = channels.residual_coefficients(inputs, layout)
    return jnp.mean(metrics.residual_of(prediction, inputs["source"], coefficients, length=length))


def train_step(
    state: State,
    batch: Batch,
    norm: ScaleArrays,
    loss_weights: jax.Array | None = None,
    *,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    length: float,
    terms: tuple[str, ...] = ("data",),
    layout: str | None = None,
    tuning: Tuning = FULL,
    axis_name: str | None = None,
) -> tuple[State, dict[str, jax.Array]]:
    """One optimizer step on the run's loss.

    `terms` are the loss's parts: "data", the sum of squared errors against `batch["solution"]` (the paper's), and
    "residual", `residual_loss` on `batch["unlabelled"]` (needs `layout`); with both, `loss_weights` [2] weighs them
    (data, residual). `tuning` maps the state's params to the model's (`fno_jax.training.tuning`: adapters).
    `optimizer` is `fno_jax.training.optim.make_optimizer`'s, whose outermost `optax.apply_if_finite` leaves params
    and optimizer state unchanged after a non-finite gradient. Returns the new state and `{"loss", "grad_norm",
    "finite", "learning_rate"}` (loss and gradient averaged over `axis_name` when given); the outer loop stops at its
    next check on `finite` false.
    """

    def loss_fn(params):
        model_params = tuning.model_params(params)
        parts = []
        if "data" in terms:
            prediction = predict(model_params, batch, model=model, norm=norm, length=length)
            parts.append(sum_squared_error(prediction, batch["solution"]))
        if "residual" in terms:
            unlabelled = batch["unlabelled"]
            parts.append(residual_loss(model_params, unlabelled, model=model, norm=norm, length=length, layout=layout))
        if len(parts) == 1:
            return parts[0]
        return loss_weights[0] * parts[0] + loss_weights[1] * parts[1]

    loss, grads = jax.value_and_grad(loss_fn)(state["params"])
    if axis_name is not None:
        loss, grads = jax.lax.pmean((loss, grads), axis_name)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    new_state = {
        "params": optax.apply_updates(state["params"], updates),
        "opt_state": opt_state,
        "step": state["step"] + 1,
    }
    finite = jnp.isfinite(loss) & opt_state.last_finite
    metrics = {"loss": loss, "grad_norm": _global_norm(grads), "finite": finite}
    return new_state, {**metrics, "learning_rate": current_learning_rate(opt_state)}


def _global_norm(tree) -> jax.Array:
    """The L2 norm of all leaves together (optax's own helper moved between releases)."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree)))


def eval_step(
    params,
    batch: Batch,
    mask: jax.Array,
    norm: ScaleArrays,
    *,
    model: nn.Module,
    length: float,
    layout: str | None = None,
    axis_name: str | None = None,
) -> dict[str, jax.Array]:
    """Sums over the samples where `mask` [B] is true of every per-sample metric, and their count.

    Returns `{"<metric>_sum", "sse_sum", "count"}` for the metrics of `fno_jax.training.metrics.per_sample_metrics`
    (rel_l2, rel_h1, rel_linf, rel_residual: scalars; rel_l2_bands: [3]) and the loss (sum of squared errors per
    sample);
    a split's metric is the sum over its batches divided by the count. `layout` names the channels of
    `batch["coeffs"]`, from which the residual's operator is rebuilt (`fno_jax.model.channels.physical_coefficients`);
    without it there is no `rel_residual_sum`.
    """
    target = batch["solution"]
    prediction = predict(params, batch, model=model, norm=norm, length=length).astype(target.dtype)
    if layout is None:
        per_sample = metrics.per_sample_metrics(prediction, target, batch["source"], None, length=length)
    else:
        coefficients = channels.residual_coefficients(batch, layout)
        per_sample = metrics.per_sample_metrics(prediction, target, batch["source"], coefficients, length=length)
    diff = (prediction - target).reshape(target.shape[0], -1)
    per_sample["sse"] = jnp.sum(diff * diff, axis=-1)
    # where, not a product: a masked-out row (a repeat of the split's last sample) never contributes, even as NaN.
    out = {
        f"{name}_sum": jnp.sum(jnp.where(mask.reshape(-1, *[1] * (v.ndim - 1)), v, 0), axis=0)
        for name, v in per_sample.items()
    }
    out["count"] = jnp.sum(mask.astype(target.dtype))
    if axis_name is not None:
        out = jax.lax.psum(out, axis_name)
    return out
