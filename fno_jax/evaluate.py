"""The test metrics of a model's params over a split, computed on the devices, and a few predictions to look at.

    evaluator = Evaluator(model, norm_stats, layout="poisson", length=1.0, parallel=parallel, batch_size=128)
    data = evaluator.put(split)                # {"source", "coeffs", "solution"} on the devices, once per split
    evaluator(params, data)                    # {"rel_l2", "loss", "rel_h1", "rel_linf", "rel_residual",
                                               #  "rel_l2_bands": {"low", "mid", "high"}}
    evaluator.examples(params, data, count=2)  # host arrays [count, n, n]: source, solution, prediction

Every metric is the mean over the split's samples of a per-sample value (`fno_jax.metrics`; `rel_l2` is the paper's
test metric, `loss` the training loss). The split is evaluated in batches of `batch_size` by one compiled program
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

from fno_jax import steps
from fno_jax.metrics import BANDS
from fno_jax.normalization import NormStats
from fno_jax.parallel import DataParallel

__all__ = ["Evaluator"]


class Evaluator:
    """Mean per-sample metrics of params over a split (see the module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        norm_stats: NormStats,
        *,
        layout: str,
        length: float,
        parallel: DataParallel,
        batch_size: int,
    ):
        self.parallel = parallel
        # A multiple of the device count: every device gets an equal block of each batch.
        self.batch = -(-int(batch_size) // parallel.num_devices) * parallel.num_devices
        self._predict = functools.partial(steps.predict, model=model, norm=norm_stats, length=length)
        eval_fn = functools.partial(steps.eval_step, model=model, norm=norm_stats, length=length, layout=layout)
        self._sums = parallel.compile_eval(eval_fn, self.batch)
        self._examples: dict[int, Any] = {}

    def put(self, split: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """A split's arrays `{"source", "coeffs", "solution"}` on the devices, as `__call__` reads them."""
        return self.parallel.put_eval_data(split)

    def __call__(self, params, data: Mapping[str, jax.Array]) -> dict[str, Any]:
        """Mean metrics of `params` (laid out by `DataParallel.eval_params`) over the split `data` (from `put`)."""
        num = int(data["source"].shape[0])
        totals = jax.device_get([self._sums(params, data, jnp.int32(s)) for s in range(0, num, self.batch)])
        count = sum(float(t["count"]) for t in totals)
        means = {
            key.removesuffix("_sum"): sum(np.asarray(t[key], np.float64) for t in totals) / count
            for key in totals[0]
            if key.endswith("_sum")
        }
        bands = means.pop("rel_l2_bands")
        out: dict[str, Any] = {"loss": float(means.pop("sse"))}
        out.update({name: float(value) for name, value in means.items()})
        out["rel_l2_bands"] = {band: float(value) for band, value in zip(BANDS, bands, strict=True)}
        return out

    def examples(self, params, data: Mapping[str, jax.Array], count: int) -> dict[str, np.ndarray]:
        """The first `count` samples of a split with the model's prediction: host arrays `{"source", "solution",
        "prediction"}` of shape [count, n, n]."""
        count = min(int(count), int(data["source"].shape[0]))
        if count not in self._examples:

            def first(params, data):
                batch = {key: value[:count] for key, value in data.items()}
                prediction = self._predict(params, batch).astype(batch["solution"].dtype)
                return {"source": batch["source"], "solution": batch["solution"], "prediction": prediction}

            self._examples[count] = jax.jit(first, out_shardings=self.parallel.replicated)
        return {key: np.asarray(value) for key, value in jax.device_get(self._examples[count](params, data)).items()}
