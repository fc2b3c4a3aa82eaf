"""Export a run's checkpoint as a pretrained bundle (`fno_jax.pretrained`): weights, card.json and a model card.

    python -m fno_jax.export --workdir runs/pretrain_poisson --out bundles/poisson [--step best|latest|N]
    python -m fno_jax.export --workdir runs/lora --out bundles/lora [--base bundles/poisson]

`--step best` (the default) exports the checkpoint the run selected by validation, whose test metrics are in the
run's summary.json and go into the card; another step is exported without test metrics.

A run fine-tuned with adapters (`finetune.mode` lora or band_adapter) exports as a small adapter bundle: only the
adapters' weights, and a card naming its base bundle (the pretrained model the adapters sit on) by path and by the
sha256 of its weights. The base is the bundle the run was fine-tuned from (`init_from`), or `--base`, a bundle of
exactly those pretrained weights (export the pretraining run first when the run started from a workdir).
`fno_jax.pretrained.load` loads an adapter bundle on top of its base.
"""

from __future__ import annotations

import argparse
import logging as std_logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import logging

from fno_jax import checkpoint, pretrained
from fno_jax.model import channels
from fno_jax.runtime.cli_errors import exit_on_expected_errors
from fno_jax.storage import paths
from fno_jax.storage.workdir import SUMMARY_FILE, RunMeta
from fno_jax.training.metrics import METRICS

__all__ = ["export_bundle", "main"]

# The test metrics a card carries: every metric of the catalogue, and the loss.
_TEST_KEYS = (*(f"test_{m.name}" for m in METRICS), "test_loss")


def _read_summary(workdir: str) -> dict[str, Any]:
    path = paths.join(workdir, SUMMARY_FILE)
    if not paths.exists(path):
        return {}
    return paths.read_json(path)


def _card(meta: RunMeta, step: int, summary: dict[str, Any], workdir: str) -> dict[str, Any]:
    """The card fields of a run's checkpoint at `step` (see `fno_jax.pretrained`)."""
    config = meta.config
    data, train = config.get("data", {}), config.get("train", {})
    tested = summary.get("best_step") == step
    return {
        "model": {**meta.model, "out_dim": 1, "padding": int(config.get("model", {}).get("padding", 0))},
        "layout": meta.layout,
        "channels": list(channels.LAYOUTS[meta.layout]),
        "norm_stats": meta.norm_stats.to_dict(),
        "length": meta.task_spec.get("length", data.get("length", 1.0)),
        "task": config.get("task"),
        "task_spec": meta.task_spec,
        "task_ranges": config.get("task_ranges"),
        "training_data": {
            "source": data.get("source"),
            "seed": config.get("seed"),
            "data_seed": config.get("seed") if data.get("seed", -1) == -1 else data.get("seed"),
            **{key: data.get(key) for key in ("num_train", "num_train_pool", "num_val", "num_test", "resolution")},
            "length": data.get("length"),
        },
        "training": {
            "mode": summary.get("mode"),
            "steps": summary.get("steps"),
            "step": step,
            "best_step": summary.get("best_step"),
            **{key: train.get(key) for key in ("batch_size", "learning_rate", "select_by")},
            "init_from": config.get("init_from") or None,
        },
        "test_metrics": {key: summary[key] for key in _TEST_KEYS if key in summary} if tested else {},
        "fno_jax_version": meta.provenance.get("package_version"),
        "provenance": {**meta.provenance, "workdir": paths.abspath(workdir), "step": step},
        "run_config": config,
    }


def export_bundle(
    workdir: str | os.PathLike, out: str | os.PathLike, step: int | str = "best", base: str | None = None
) -> dict[str, Any]:
    """Write the checkpoint `step` ("best", "latest" or a step number) of the run in `workdir` as a bundle in the
    new directory `out` (an adapter run: an adapter bundle on `base`, see the module docstring); returns its card. A
    CheckpointError or BundleError says what is missing."""
    workdir = os.fspath(workdir)
    if not paths.isdir(workdir):
        raise checkpoint.CheckpointError(f"--workdir {workdir} is not a directory; give the workdir of a run.")
    resolved, meta = checkpoint.load_meta(workdir, None if step == "latest" else step)
    params = checkpoint.load_params(workdir, resolved)
    card = _card(meta, resolved, _read_summary(workdir), workdir)
    tuning = meta.config.get("finetune", {})
    if tuning.get("mode") in ("lora", "band_adapter"):
        return _export_adapters(out, params, card, tuning, base or meta.config.get("init_from"))
    return pretrained.write_bundle(out, params, card)


def _export_adapters(out, params: dict, card: dict, tuning: dict, base: str | None) -> dict[str, Any]:
    """An adapter bundle: the adapters of `params` ({"base", "adapters"}), on the base bundle `base`."""
    if not base or not pretrained.is_bundle(base):
        raise pretrained.BundleError(
            f"an adapter run exports on top of a base bundle of its pretrained weights, and {base!r} is none; export "
            "the pretraining run (python -m fno_jax.export --workdir PRETRAINED --out BASE) and pass --base BASE."
        )
    _, base_params, base_card = pretrained.load(base)
    mine, theirs = pretrained.flatten_params(params["base"]), pretrained.flatten_params(base_params)
    if mine.keys() != theirs.keys() or any(not np.array_equal(mine[k], theirs[k]) for k in mine):
        raise pretrained.BundleError(
            f"bundle {base} holds other weights than the pretrained model this run's adapters sit on; pass the "
            "bundle exported from the run it was fine-tuned from."
        )
    out = paths.abspath(out)
    base = paths.abspath(base)
    card["adapter"] = {
        "mode": tuning["mode"],
        "rank": int(tuning["rank"]),
        "targets": list(tuning["lora_targets"]),
        "base": {
            "sha256": base_card["weights"]["sha256"],
            "path": base,
            "relative_path": paths.relpath(base, out),
            "num_params": base_card["num_params"],
        },
    }
    return pretrained.write_bundle(out, params["adapters"], card)


def _step(value: str) -> int | str:
    if value in ("best", "latest"):
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--step must be 'best', 'latest' or a step number, got {value!r}") from None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fno_jax.export", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="the run's workdir")
    parser.add_argument("--out", required=True, help="the bundle directory to create")
    parser.add_argument("--step", type=_step, default="best", help="best (default), latest, or a step number")
    parser.add_argument("--base", default=None, help="an adapter run's base bundle (default: its init_from)")
    args = parser.parse_args(argv)
    # Orbax warns that it opens the checkpoints read-only, which is the point here.
    # Set back afterwards: main may be called in-process (a notebook, a script, the tests).
    absl_logger = logging.get_absl_logger()
    level = absl_logger.level
    absl_logger.setLevel(std_logging.ERROR)
    try:
        with exit_on_expected_errors(parser.prog):
            card = export_bundle(args.workdir, args.out, args.step, args.base)
    finally:
        absl_logger.setLevel(level)
    metric = card["test_metrics"].get("test_rel_l2")
    tested = f", test rel L2 {metric:.4g}" if metric is not None else ""
    print(f"wrote {paths.abspath(args.out)} (step {card['training']['step']}, {card['num_params']:,} params{tested})")


if __name__ == "__main__":
    main(sys.argv[1:])
