"""What a run shows in TensorBoard (and, when asked, Weights & Biases): scalars and images, written by process 0.

    writer = open_writer(config, workdir, start_step=0)   # a no-op writer on processes other than 0
    writer.scalars(step, {"train/loss": 0.12, "val/rel_l2": 0.3})
    writer.images(step, {"val/0/prediction": rgb})        # rgb: uint8 [H, W, 3], e.g. from `field_images`
    writer.close()

TensorBoard event files (`events.out.tfevents.*`) go into the workdir beside metrics.jsonl, written by tensorboardX
(a maintained writer of TensorBoard's format without a TensorFlow dependency); in a `gs://` workdir they are
uploaded whole at most every 30 s and at the end (`fno_jax.storage.gcs_events`): `tensorboard --logdir WORKDIR`, or
`--logdir SWEEP_DIR/runs` for every run of a sweep side by side. A resumed run passes the step it resumed from as
`start_step`: TensorBoard then hides what the interrupted run had logged after that step (`purge_step`), just as
metrics.jsonl drops those records.

Weights & Biases (`config.logging.wandb`) logs the same scalars and images to a W&B run named after the workdir,
with the run config; it needs the `wandb` package, which fno-jax does not depend on (`pip install wandb`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import ml_collections
import numpy as np

from fno_jax.runtime.distributed import is_main_process
from fno_jax.storage import paths

__all__ = [
    "MetricWriter",
    "field_images",
    "log_evaluation",
    "open_writer",
    "scalar_tags",
    "split_record",
]

_SPLITS = ("train", "val", "test")
_NOT_SCALARS = ("step", "best")

# Images are enlarged (nearest neighbour) to at least this many pixels per side: a 16 x 16 field is a speck in
# TensorBoard otherwise.
_MIN_IMAGE_PIXELS = 128


class MetricWriter(Protocol):
    """The writer interface the run loop uses (one writer per run)."""

    def scalars(self, step: int, values: Mapping[str, float | None]) -> None: ...

    def images(self, step: int, images: Mapping[str, np.ndarray]) -> None: ...

    def close(self) -> None: ...


class _NullWriter:
    """Writes nothing (processes other than 0, or logging switched off)."""

    def scalars(self, step: int, values: Mapping[str, float | None]) -> None:
        del step, values

    def images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        del step, images

    def close(self) -> None:
        pass


class _TensorBoardWriter:
    """Event files in `logdir` (tensorboardX)."""

    def __init__(self, logdir: str, start_step: int):
        from tensorboardX import SummaryWriter

        if paths.is_remote(logdir):
            from fno_jax.storage import gcs_events

            gcs_events.use_path_layer(min_interval_s=30.0)
        # Event files are named by the second they were opened in; the start step after it keeps a resumed run's
        # file apart from (and sorted after) one opened in the same second, which it would otherwise overwrite.
        self._writer = SummaryWriter(
            logdir, purge_step=start_step + 1, flush_secs=30, filename_suffix=f".start{start_step:010d}"
        )

    def scalars(self, step: int, values: Mapping[str, float | None]) -> None:
        for name, value in values.items():
            if value is not None:
                self._writer.add_scalar(name, float(value), global_step=int(step))
        self._writer.flush()

    def images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        for name, image in images.items():
            self._writer.add_image(name, image, global_step=int(step), dataformats="HWC")
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class _WandbWriter:
    """A Weights & Biases run (offline or online, per `mode`)."""

    def __init__(self, workdir: str, project: str, mode: str, run_config: dict[str, Any]):
        import wandb

        self._wandb = wandb
        name = paths.basename(workdir)
        local_dir = None if paths.is_remote(workdir) else workdir  # W&B keeps its files locally
        self._run = wandb.init(project=project, name=name, dir=local_dir, config=run_config, mode=mode or None)

    def scalars(self, step: int, values: Mapping[str, float | None]) -> None:
        self._run.log({k: float(v) for k, v in values.items() if v is not None}, step=int(step))

    def images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        self._run.log({k: self._wandb.Image(v) for k, v in images.items()}, step=int(step))

    def close(self) -> None:
        self._run.finish()


class _Writers:
    """Every configured writer at once."""

    def __init__(self, writers: list[MetricWriter]):
        self._writers = writers

    def scalars(self, step: int, values: Mapping[str, float | None]) -> None:
        for writer in self._writers:
            writer.scalars(step, values)

    def images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        for writer in self._writers:
            writer.images(step, images)

    def close(self) -> None:
        for writer in self._writers:
            writer.close()


def open_writer(config: ml_collections.ConfigDict, workdir: str, *, start_step: int = 0) -> MetricWriter:
    """The writers `config.logging` asks for, into `workdir`; `start_step` is the step the run resumes from (0 for a
    fresh run): steps after it logged by an earlier, interrupted run are hidden in TensorBoard."""
    if not is_main_process():
        return _NullWriter()
    writers: list[MetricWriter] = []
    if config.logging.tensorboard:
        writers.append(_TensorBoardWriter(workdir, int(start_step)))
    if config.logging.wandb:
        run_config = config.to_dict()
        writers.append(_WandbWriter(workdir, config.logging.wandb_project, config.logging.wandb_mode, run_config))
    return _Writers(writers)


def split_record(split: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """An evaluation's metrics as record keys: {"rel_l2": x, ...} -> {"val_rel_l2": x, ...} (metrics.jsonl,
    summary.json)."""
    return {f"{split}_{name}": value for name, value in metrics.items()}


def log_evaluation(
    writer: MetricWriter, step: int, split: str, metrics: Mapping[str, Any], examples: Mapping | None = None
) -> None:
    """An evaluation of `split` ("val", "test") in a writer: its metrics as scalars and, when given, its `examples`
    (`fno_jax.training.evaluate.Evaluator.examples`) as images."""
    writer.scalars(step, scalar_tags(split_record(split, metrics)))
    if examples is not None:
        writer.images(step, field_images(examples, split))


def scalar_tags(record: Mapping[str, Any]) -> dict[str, float | None]:
    """TensorBoard tags of a metrics.jsonl / summary record: `train_loss` -> `train/loss`, `val_rel_h1` ->
    `val/rel_h1`, `test_rel_l2_bands` {"low", ...} -> `test/rel_l2_band_low`, ...; keys without a split prefix
    (`grad_norm`, `learning_rate`, `steps_per_s`) are the training's: `train/grad_norm`."""
    out: dict[str, float | None] = {}
    for key, value in record.items():
        if key in _NOT_SCALARS:
            continue
        split, _, name = key.partition("_")
        if split not in _SPLITS:
            split, name = "train", key
        if isinstance(value, Mapping):
            out.update({f"{split}/{name.removesuffix('s')}_{part}": v for part, v in value.items()})
        else:
            out[f"{split}/{name}"] = value
    return out


def _colors(field: np.ndarray, low: float, high: float, cmap: str) -> np.ndarray:
    """uint8 [H, W, 3]: `field` [n, n] through a matplotlib colormap over [low, high], enlarged for viewing; row 0
    (y = 0) at the bottom, as in a plot of the domain."""
    import matplotlib

    scaled = (np.asarray(field, np.float64) - low) / (high - low) if high > low else np.zeros(np.shape(field))
    rgb = matplotlib.colormaps[cmap](np.clip(scaled, 0.0, 1.0))[..., :3]
    factor = max(1, -(-_MIN_IMAGE_PIXELS // max(np.shape(field))))
    rgb = np.repeat(np.repeat(rgb[::-1], factor, axis=0), factor, axis=1)
    return np.round(255 * rgb).astype(np.uint8)


def field_images(examples: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """Images of each sample of `examples` ({"source", "solution", "prediction"}, each [count, n, n]):
    `{prefix}/{i}/source`, `/target`, `/prediction` (target and prediction on the target's color scale, so they
    compare by eye) and `/error` (prediction - target, diverging colors symmetric about 0)."""
    out = {}
    for i, (source, target, prediction) in enumerate(
        zip(examples["source"], examples["solution"], examples["prediction"], strict=True)
    ):
        error = prediction - target
        bound = float(np.max(np.abs(error)))
        low, high = float(np.min(target)), float(np.max(target))
        out[f"{prefix}/{i}/source"] = _colors(source, float(np.min(source)), float(np.max(source)), "viridis")
        out[f"{prefix}/{i}/target"] = _colors(target, low, high, "viridis")
        out[f"{prefix}/{i}/prediction"] = _colors(prediction, low, high, "viridis")
        out[f"{prefix}/{i}/error"] = _colors(error, -bound, bound, "RdBu_r")
    return out
