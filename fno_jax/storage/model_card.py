"""The README.md of a pretrained bundle: its card.json in words (what it was trained on, how well it does, what it
is for and not for, and how to load it)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fno_jax.training.metrics import BAND_EDGES_WORDS, BANDS, METRICS
from solvers.families import FAMILIES

__all__ = ["model_card"]


def _cell(text: str) -> str:
    """Markdown table cell text: a literal | is written \\|."""
    return text.replace("|", "\\|")


def _equations(task_spec: Mapping[str, Any] | None) -> list[str]:
    """One line per PDE family of the task: its equation as its sampler states it."""
    if not task_spec:
        return ["not recorded (a bundle converted from another code's weights)"]
    specs = task_spec.get("tasks", [task_spec])
    lines = []
    for spec in specs:
        family = FAMILIES.get(spec.get("name"))
        ranges = {k: v for k, v in spec.items() if k.endswith("_range")}
        equation = family.sampler.__doc__.strip().splitlines()[0] if family else "unknown family"
        lines.append(f"`{spec.get('name')}`: {equation} Ranges: {json.dumps(ranges)}.")
    return lines


def _trained_on(card: Mapping[str, Any]) -> list[str]:
    data, training = card.get("training_data") or {}, card.get("training") or {}
    out = ["## Trained on", ""]
    out += [f"- {line}" for line in _equations(card.get("task_spec"))]
    if data:
        pool = f" (a nested subset of a pool of {data['num_train_pool']})" if data.get("num_train_pool") else ""
        out += [
            f"- {data.get('num_train')} training problems{pool}, made by fno-jax's solvers from data seed "
            f"{data.get('data_seed')} on a {data.get('resolution')} x {data.get('resolution')} grid of the periodic "
            f"square [0, {card['length']})^2; validated on {data.get('num_val')} and tested on "
            f"{data.get('num_test')} further problems of the same distribution (data source: {data.get('source')}).",
        ]
    if training:
        start = f"fine-tuned from {training['init_from']}" if training.get("init_from") else "trained from scratch"
        out.append(
            f"- {start}: {training.get('steps')} Adam steps of batch {training.get('batch_size')}, peak learning rate "
            f"{training.get('learning_rate')} with cosine decay; the weights are those of step {training.get('step')}"
            f" (the run's best by {training.get('select_by')}: step {training.get('best_step')})."
        )
    return [*out, ""]


def _how_well(card: Mapping[str, Any]) -> list[str]:
    metrics = card.get("test_metrics") or {}
    out = ["## How well", ""]
    if not metrics:
        return [*out, "Not measured for these weights (no test evaluation of the exported step).", ""]
    num_test = (card.get("training_data") or {}).get("num_test")
    out += [f"Mean over {num_test} test problems from the training distribution:", ""]
    out += ["| metric | value |", "|---|---|"]
    for metric in METRICS:
        value = metrics.get(f"test_{metric.name}")
        if value is None:
            continue
        if not metric.banded:
            out.append(f"| {_cell(metric.words)} | {value:.4g} |")
            continue
        for band in (b for b in BANDS if b in value):
            words = metric.words.format(band=band, edges=BAND_EDGES_WORDS[band])
            out.append(f"| {_cell(words)} | {value[band]:.4g} |")
    return [*out, "", "Definitions: `fno_jax/training/metrics.py`.", ""]


def _use_and_limits(card: Mapping[str, Any]) -> list[str]:
    names = ", ".join(card.get("channels") or [])
    resolution = (card.get("training_data") or {}).get("resolution")
    return [
        "## Intended use and limits",
        "",
        f"- Input: the source f and the PDE's coefficients as constant channels, in the order {names} "
        f"(layout `{card['layout']}`), normalized per instance with the card's `norm_stats` "
        "(`fno_jax.model.predict` does it); output: the solution u on the same grid.",
        "- Intended for research on operator learning and transfer: a starting point for fine-tuning on a related "
        "PDE (`--config.init_from=BUNDLE`), or a fast approximate solver inside the ranges above.",
        "- Accuracy is measured only inside the coefficient ranges above"
        + (f" and at {resolution} x {resolution}" if resolution else "")
        + "; outside them (other anisotropy, advection ratio, frequency, resolution or source shapes) expect larger "
        "errors and measure them first. Periodic boundary conditions only.",
        "- Not validated for engineering or safety-relevant decisions.",
        "",
    ]


def _how_to_load(card: Mapping[str, Any]) -> list[str]:
    return [
        "## How to load",
        "",
        "```python",
        "import fno_jax.pretrained",
        "",
        'op = fno_jax.pretrained.operator("BUNDLE")  # a directory or a shipped name; checks the sha256 below',
        "u = op(batch)  # a solvers task batch (source [B, n, n] and its coefficients) -> u [B, n, n]",
        "u = op(source, diffusion=K)  # or physical inputs: diffusion, velocity, omega, permeability as the task has",
        'model, params, card = op.model, op.params, op.card  # or fno_jax.pretrained.load("BUNDLE")',
        "```",
        "",
        "Check it against this card: `python -m fno_jax.verify BUNDLE`.",
        "",
        "Fine-tune it: `python -m experiments.main --config=experiments/configs/finetune.py:TASK --workdir=DIR "
        "--config.init_from=BUNDLE`.",
        "",
    ]


def model_card(card: Mapping[str, Any]) -> str:
    """The README.md text of a bundle with card.json `card`."""
    model, weights, provenance = card["model"], card["weights"], card.get("provenance") or {}
    title = f"# FNO for `{card.get('task') or card['layout']}` (fno-jax pretrained bundle)"
    intro = (
        f"A Fourier Neural Operator (Li et al., 2021) in the configuration of Subramanian et al. (NeurIPS 2023): width "
        f"{model['width']}, {model['modes']} modes, {model['depth']} Fourier layers, head {model['fc_dim']}; "
        f"{card['num_params']:,} parameters. It maps a source and PDE coefficients on a periodic grid to the "
        f"solution. Made with fno-jax {card.get('fno_jax_version')}."
    )
    files = [
        "## Files",
        "",
        f"- `params.safetensors`: the weights ({weights['dtype']}), sha256 `{weights['sha256']}`.",
        "- `card.json`: everything above as data (model, channels, normalization, task, data, training, metrics).",
        f"- Provenance: {json.dumps(provenance, sort_keys=True)}.",
        "",
    ]
    lines = [title, "", intro, "", *_trained_on(card), *_how_well(card), *_use_and_limits(card)]
    return "\n".join([*lines, *_how_to_load(card), *files])
