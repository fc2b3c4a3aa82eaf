"""Check a pretrained bundle against its own card: its weights must give the test metrics the card claims.

    python -m fno_jax.verify BUNDLE_OR_NAME [--num N]

The card's test data is made again from its data spec (the task and its ranges, the data seed, the resolution, the
generation chunk: `fno_jax.data.generate`), on the device, and the bundle's operator is evaluated on it. Exit status
0 with a one-line summary when every test metric the card states is reproduced, 1 naming each that differs, 2 when
the bundle cannot be checked (no card metrics, data the card does not say how to make, a damaged bundle).

Tolerances. On the whole test set (the default) the card's numbers are reproduced up to float32 summation order:
1e-4 relative. On the first N samples (`--num N`) the mean of N per-sample values stands for the mean of all
num_test of them; the check allows 4 standard errors of that subsample mean (sample standard deviation / sqrt(N),
times the finite-population factor sqrt(1 - N / num_test)), and still the 1e-4 at N = num_test.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from fno_jax import pretrained
from fno_jax.runtime.cli_errors import exit_on_expected_errors
from solvers.schema import FIELDS

__all__ = ["card_test_data", "main", "per_sample_test_metrics", "verify"]

EXACT_RTOL = 1e-4
STANDARD_ERRORS = 4.0
EXIT_MISMATCH = 1
CHUNK = 256  # test samples evaluated at a time


def card_test_data(card: dict[str, Any], num: int) -> dict[str, np.ndarray]:
    """The card's first `num` test samples, made again from its data spec."""
    from fno_jax.data.generate import generate_split
    from solvers.families import task_from_spec

    data = card.get("training_data") or {}
    spec = card.get("task_spec")
    generate_chunk = ((card.get("run_config") or {}).get("data") or {}).get("generate_chunk", 512)
    if not spec or data.get("data_seed") is None or not data.get("resolution"):
        raise pretrained.BundleError(
            "this bundle's card does not say how its test data was made (task spec, data seed, resolution); it "
            "cannot be checked against its metrics."
        )
    if data.get("source") not in (None, "generate", "stream"):
        raise pretrained.BundleError(
            f"this bundle was tested on the stored dataset {data.get('source')!r}, which verify does not make again."
        )
    task = task_from_spec(spec)
    return generate_split(task, int(data["data_seed"]), "test", num, int(data["resolution"]), chunk=generate_chunk)


def per_sample_test_metrics(op: pretrained.Operator, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every metric of the catalogue per sample (and the loss), of the operator on a task batch."""
    import jax

    from fno_jax.model import channels
    from fno_jax.training import metrics

    @jax.jit
    def evaluate(op, batch):
        prediction = op(batch)
        inputs = {"coeffs": channels.coefficients(batch, op.layout), "fields": channels.fields(batch, op.layout)}
        coefficients = channels.residual_coefficients(inputs, op.layout)
        out = metrics.per_sample_metrics(prediction, batch["solution"], batch["source"], coefficients, length=op.length)
        diff = (prediction - batch["solution"]).reshape(prediction.shape[0], -1)
        out["loss"] = (diff * diff).sum(axis=-1)
        return out

    keys = [k for k in ("source", "solution", "diffusion", "velocity", "omega", *FIELDS) if k in batch]
    num = len(batch["source"])
    parts = [evaluate(op, {k: batch[k][s : s + CHUNK] for k in keys}) for s in range(0, num, CHUNK)]
    return {k: np.concatenate([np.asarray(p[k], np.float64) for p in parts]) for k in parts[0]}


def verify(path_or_name: str, num: int | None = None) -> tuple[bool, list[str]]:
    """(ok, lines): whether the bundle's weights give its card's test metrics on its own test data; one line per
    metric (measured, claimed, tolerance)."""
    op = pretrained.operator(path_or_name)
    card = op.card
    claimed = card.get("test_metrics") or {}
    if not claimed:
        raise pretrained.BundleError(f"bundle {path_or_name} has no test metrics on its card; nothing to verify.")
    total = int((card.get("training_data") or {}).get("num_test") or 0)
    num = total if num is None else min(int(num), total)
    if num < 2:
        raise pretrained.BundleError(f"--num must be at least 2 (the card's test set has {total} samples).")
    values = per_sample_test_metrics(op, card_test_data(card, num))
    ok, lines = True, []
    for key, value in claimed.items():
        name = key.removeprefix("test_")
        if name not in values:
            continue
        per_sample = values[name]
        measured = per_sample.mean(axis=0)
        spread = per_sample.std(axis=0, ddof=1) / math.sqrt(num) * math.sqrt(max(1.0 - num / total, 0.0))
        for part, claim, got, se in _parts(value, measured, spread):
            tolerance = max(EXACT_RTOL * abs(claim), STANDARD_ERRORS * se)
            good = abs(got - claim) <= tolerance
            ok &= good
            label = f"{key}{'/' + part if part else ''}"
            verdict = "" if good else " DIFFERS"
            lines.append(f"{label}: {got:.6g} (card {claim:.6g}, tolerance {tolerance:.2g}){verdict}")
    return ok, lines


def _parts(claim, measured, spread):
    """(part, claimed, measured, standard error) per scalar of a metric (a banded one: per band)."""
    from fno_jax.training.metrics import BANDS

    if isinstance(claim, dict):
        return [(band, float(claim[band]), float(measured[i]), float(spread[i])) for i, band in enumerate(BANDS)
                if band in claim]  # fmt: skip
    return [("", float(claim), float(measured), float(spread))]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fno_jax.verify", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="a bundle directory, or the name of a shipped bundle (fno_jax.pretrained)")
    parser.add_argument("--num", type=int, default=None, help="test samples to make again (default: all of them)")
    args = parser.parse_args(argv)
    with exit_on_expected_errors(parser.prog):
        ok, lines = verify(args.bundle, args.num)
    headline = next((line for line in lines if line.startswith("test_rel_l2:")), lines[0])
    if ok:
        print(f"{args.bundle}: verified, {len(lines)} metrics as its card states ({headline})")
        return
    for line in lines:
        if line.endswith("DIFFERS"):
            print(f"{args.bundle}: {line}", file=sys.stderr)
    sys.exit(EXIT_MISMATCH)


if __name__ == "__main__":
    main(sys.argv[1:])
