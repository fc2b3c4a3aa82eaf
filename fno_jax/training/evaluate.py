"""The test metrics of a model's params over a split, computed on the devices, and a few predictions to look at.

    evaluator = Evaluator(model, norm_stats, layout="poisson", length=1.0, parallel=parallel, batch_size=128)
    data = evaluator.put(split)                # {"source", "coeffs", "solution"} on the devices, once per split
    evaluator(params, data)                    # {"rel_l2", "loss", "rel_h1", "rel_linf", "rel_residual",
                                               #  "rel_l2_bands": {"low", "mid", "high"}}
    evaluator.examples(params, data, count=2)  # host arrays [count, n, n]: source, solution, prediction

`Evaluator(..., runs=K)` evaluates the params of K packed runs ([K, ...] leaves) in one program.

Every metric is the mean over the split's samples of a per-sample value (`fno_jax.training.metrics`; `rel_l2` is the
paper's test metric, `loss` the training loss). The split is evaluated in batches of `batch_size` by one compiled
program
(`steps.eval_step` under `DataParallel.compile_eval`), the last batch masked past the split's end, and the batch sums
are added on the host in float64. Every process of a multi-process job must make the same calls (they are
collective); the results are the same on every process.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fno_jax.model.normalization import NormStats
from fno_jax.runtime.parallel import DataParallel
from fno_jax.training import steps
from fno_jax.training.metrics import BANDS

__all__ = ["Evaluator"]


class Evaluator:
    """Mean per-sample metrics of params over a split (see the module docstring).

    With `runs=K` the params carry a leading run axis ([K, ...], packed runs: `fno_jax.training.packed`): one program
    evaluates all K, `__call__` returns a list of K metric dicts and `examples` a list of K example dicts.
    """

    def __init__(
        self,
        model: nn.Module,
        norm_stats: NormStats,
        *,
        layout: str,
        length: float,
        parallel: DataParallel,
        batch_size: int,
        runs: int | None = None,
    ):
        self.parallel, self.runs = parallel, runs
        # A multiple of the device count: every device gets an equal block of each batch.
        self.batch = -(-int(batch_size) // parallel.num_devices) * parallel.num_devices
        self._predict = functools.partial(steps.predict, model=model, norm=norm_stats, length=length)
        eval_fn = functools.partial(steps.eval_step, model=model, norm=norm_stats, length=length, layout=layout)
        if runs is not None:
            eval_fn = jax.vmap(eval_fn, in_axes=(0, None, None))
        self._sums = parallel.compile_eval(eval_fn, self.batch)
        self._examples: dict[int, Any] = {}

    def put(self, split: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """A split's arrays `{"source", "coeffs", "solution"}` on the devices, as `__call__` reads them."""
        return self.parallel.put_eval_data(split)

    def __call__(self, params, data: Mapping[str, jax.Array]) -> dict[str, Any] | list[dict[str, Any]]:
        """Mean metrics of `params` (laid out by `DataParallel.eval_params`) over the split `data` (from `put`)."""
        num = int(data["source"].shape[0])
        totals = jax.device_get([self._sums(params, data, jnp.int32(s)) for s in range(0, num, self.batch)])
        sums = {key: np.sum([np.asarray(t[key], np.float64) for t in totals], axis=0) for key in totals[0]}
        if self.runs is None:
            return _means(sums)
        return [_means({key: value[k] for key, value in sums.items()}) for k in range(self.runs)]

    def examples(self, params, data: Mapping[str, jax.Array], count: int) -> dict[str, np.ndarray] | list[dict]:
        """The first `count` samples of a split with the model's prediction: host arrays `{"source", "solution",
        "prediction"}` of shape [count, n, n] (a list of K such dicts with `runs=K`)."""
        count = min(int(count), int(data["source"].shape[0]))
        if count not in self._examples:
            predict = self._predict if self.runs is None else jax.vmap(self._predict, in_axes=(0, None))

            def first(params, data):
                batch = {key: value[:count] for key, value in data.items()}
                prediction = predict(params, batch).astype(batch["solution"].dtype)
                return {"source": batch["source"], "solution": batch["solution"], "prediction": prediction}

            self._examples[count] = jax.jit(first, out_shardings=self.parallel.replicated)
        out = {key: np.asarray(value) for key, value in jax.device_get(self._examples[count](params, data)).items()}
        if self.runs is None:
            return out
        return [{**out, "prediction": out["prediction"][k]} for k in range(self.runs)]


def _means(sums: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """{"loss", "rel_l2", ..., "rel_l2_bands": {"low", "mid", "high"}} from a split's `eval_step` sums."""
    count = float(sums["count"])
    means = {key.removesuffix("_sum"): np.asarray(value) / count for key, value in sums.items() if key != "count"}
    out: dict[str, Any] = {"loss": float(means.pop("sse"))}
    bands = means.pop("rel_l2_bands")
    out.update({name: float(value) for name, value in means.items()})
    out["rel_l2_bands"] = {band: float(value) for band, value in zip(BANDS, bands, strict=True)}
    return out
