"""The test metrics of a group's params over a split, computed on the devices, and a few predictions to look at.

    evaluator = Evaluator(model, norm, layout="poisson", length=1.0, parallel=parallel, batch_size=128)
    data = evaluator.put(split)                # {"source", "coeffs", "solution"} on the devices, once per split
    evaluator(params, data)                    # [{"rel_l2", "loss", "rel_h1", "rel_linf", "rel_residual",
                                               #   "rel_l2_bands": {"low", "mid", "high"}}]: one dict per run
    evaluator.examples(params, data, count=2)  # [{"source", "solution", "prediction"}]: host arrays [count, n, n]

The params are those of the K runs of a group (`axis`, a `fno_jax.training.runs.RunAxis`; leaves [K, ...] when
K > 1), `norm` their normalization scales (one `NormStats`, or the group's stacked `ScaleArrays`); one compiled
program evaluates all K over a split that they share. One run is K = 1.

Every metric is the mean over the split's samples of a per-sample value (`fno_jax.training.metrics`; `rel_l2` is the
paper's test metric, `loss` the training loss). The split is evaluated in batches of `batch_size` by one compiled
program (`steps.eval_step` under `DataParallel.compile_eval`), the last batch masked past the split's end, and the
batch sums are added on the host in float64. Every process of a multi-process job must make the same calls (they
are collective); the results are the same on every process.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fno_jax.model import predict
from fno_jax.model.normalization import NormStats, ScaleArrays, scale_arrays
from fno_jax.runtime.parallel import DataParallel
from fno_jax.training import metrics, steps
from fno_jax.training.runs import ONE_RUN, RunAxis

__all__ = ["Evaluator"]


class Evaluator:
    """Mean per-sample metrics of the runs' params over a split (see the module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        norm: NormStats | ScaleArrays,
        *,
        layout: str,
        length: float,
        parallel: DataParallel,
        batch_size: int,
        axis: RunAxis = ONE_RUN,
    ):
        self.parallel, self.axis = parallel, axis
        # A multiple of the device count: every device gets an equal block of each batch.
        self.batch = -(-int(batch_size) // parallel.num_devices) * parallel.num_devices
        self._norm = parallel.put_eval_data(scale_arrays(norm))
        self._predict = axis.map(lambda p, b, n: predict(p, b, model=model, norm=n, length=length), (0, None, 0))
        eval_fn = functools.partial(steps.eval_step, model=model, length=length, layout=layout)
        self._sums = parallel.compile_eval(axis.map(eval_fn, in_axes=(0, None, None, 0)), self.batch)
        self._examples: dict[int, Any] = {}

    def put(self, split: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """A split's arrays `{"source", "coeffs", "solution"}` on the devices, as `__call__` reads them."""
        return self.parallel.put_eval_data(dict(split))

    def __call__(self, params, data: Mapping[str, jax.Array]) -> list[dict[str, Any]]:
        """Each run's mean metrics of `params` (laid out by `DataParallel.eval_params`) over the split `data`."""
        num = int(data["source"].shape[0])
        totals = jax.device_get([self._sums(params, data, jnp.int32(s), self._norm) for s in range(0, num, self.batch)])
        sums = {key: np.sum([np.asarray(t[key], np.float64) for t in totals], axis=0) for key in totals[0]}
        return [_means(run) for run in self.axis.runs_of(sums)]

    def examples(self, params, data: Mapping[str, jax.Array], count: int) -> list[dict[str, np.ndarray]]:
        """Per run, the first `count` samples of a split with the run's prediction: host arrays `{"source",
        "solution", "prediction"}` of shape [count, n, n]."""
        count = min(int(count), int(data["source"].shape[0]))
        if count not in self._examples:

            def first(params, data, norm):
                batch = {key: value[:count] for key, value in data.items()}
                prediction = self._predict(params, batch, norm).astype(batch["solution"].dtype)
                return {"source": batch["source"], "solution": batch["solution"], "prediction": prediction}

            self._examples[count] = jax.jit(first, out_shardings=self.parallel.replicated)
        out = jax.device_get(self._examples[count](params, data, self._norm))
        out = {key: np.asarray(value) for key, value in out.items()}
        predictions = self.axis.runs_of(out["prediction"])
        return [{**out, "prediction": prediction} for prediction in predictions]


def _means(sums: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """{"loss", "rel_l2", ..., "rel_l2_bands": {"low", "mid", "high"}} from a split's `eval_step` sums."""
    count = float(sums["count"])
    means = {key.removesuffix("_sum"): np.asarray(value) / count for key, value in sums.items() if key != "count"}
    out: dict[str, Any] = {"loss": float(means.pop("sse"))}
    banded = {m.name for m in metrics.METRICS if m.banded}
    for name, value in means.items():
        out[name] = dict(zip(metrics.BANDS, map(float, value), strict=True)) if name in banded else float(value)
    return out
