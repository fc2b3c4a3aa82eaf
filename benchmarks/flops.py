"""FLOP and minimum-memory-traffic model of one FNO training step, per sample, printed as a table.

    python -m benchmarks.flops [--resolution 128] [--width 64] [--modes 32] [--depth 4] [--fc-dim 128] \
        [--channels 4] [--dtype-bytes 4] [--peak-tflops 67] [--bandwidth-tbs 3.35] [--samples-per-s X]

Counting rules (one multiply-add = 2 FLOPs; ``N = ny * nx``, ``c`` = width, ``m`` = modes, ``F`` = fc_dim):

- Dense on ``N`` points: ``2 N c_in c_out`` forward; backward is twice that (input and weight
  gradients), except the lift, whose input needs no gradient.
- Spectral, ``impl="fft"`` (separable): real FFT along x of ``ny * c`` lines (``2.5 nx log2 nx``
  each) and complex FFT along y of only the ``m * c`` kept columns (``5 ny log2 ny``), forward and
  inverse; backward = the same transforms once more (input gradient only).
- Spectral, ``impl="dft"``: x stage ``4 m N c``, y stage ``16 ny m^2 c`` each way; backward = the
  same products once more (the DFT matrices are constants: input gradient only).
- Mode mixing: ``2 m^2`` modes of a complex ``c x c`` product = ``16 m^2 c^2``; backward twice.
- GELU (exact, erf): ~``20`` FLOPs per element forward, ~``30`` backward (not matrix-unit work).

Minimum bytes assume each Fourier layer (spectral + pointwise + GELU) and the head are fused so
that only layer boundaries touch memory: forward reads the layer input and writes its output
(``2 N c``), backward reads the saved input, the saved pre-activation and the upstream gradient and
writes the downstream gradient (``4 N c``); the head reads ``N c`` and ``N F`` once each way.
Real executions move several times this; the ratio of measured time to these bounds says how far
a run is from the roofline.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

__all__ = ["train_step_cost"]


def train_step_cost(
    resolution: int,
    width: int,
    modes: int,
    depth: int = 4,
    fc_dim: int = 128,
    channels: int = 4,
    impl: str = "fft",
    dtype_bytes: int = 4,
) -> list[dict[str, Any]]:
    """Rows ``{"part", "fwd_flops", "train_flops", "min_bytes"}`` per sample for one train step."""
    if impl not in ("fft", "dft"):
        raise ValueError(f"impl must be 'fft' or 'dft', got {impl!r}.")
    for name, value in (("resolution", resolution), ("width", width), ("modes", modes), ("depth", depth)):
        if value <= 0:
            raise ValueError(f"{name} must be > 0, got {value}.")
    n, c, m, f = resolution, width, modes, fc_dim
    points = n * n
    log_n = math.log2(n)
    rows = []

    def add(part: str, fwd: float, bwd_factor: float, min_bytes: float) -> None:
        rows.append({"part": part, "fwd_flops": fwd, "train_flops": fwd * (1 + bwd_factor), "min_bytes": min_bytes})

    layer_bytes = 6 * points * c * dtype_bytes
    add("lift", 2 * points * channels * c, 1, points * (channels + c) * dtype_bytes)
    add(f"pointwise x{depth}", depth * 2 * points * c * c, 2, depth * layer_bytes)
    if impl == "fft":
        transform = 2 * (2.5 * points * c * log_n + 5 * n * m * c * log_n)
    else:
        transform = 2 * (4 * m * points * c + 16 * n * m * m * c)
    add(f"spectral {impl} transforms x{depth}", depth * transform, 1, 0)
    add(f"mode mixing x{depth}", depth * 16 * m * m * c * c, 2, 0)
    add(f"gelu x{depth - 1} + head", ((depth - 1) * points * c + points * f) * 20, 1.5, 0)
    add("fc1 + fc2", 2 * points * c * f + 2 * points * f, 2, 2 * points * (c + f) * dtype_bytes)
    total = {
        "part": "total",
        "fwd_flops": sum(r["fwd_flops"] for r in rows),
        "train_flops": sum(r["train_flops"] for r in rows),
        "min_bytes": sum(r["min_bytes"] for r in rows),
    }
    return [*rows, total]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--modes", type=int, default=32)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--fc-dim", type=int, default=128)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--dtype-bytes", type=int, default=4)
    parser.add_argument("--peak-tflops", type=float, default=67.0, help="device FLOP/s peak (H100 SXM fp32: 67)")
    parser.add_argument("--bandwidth-tbs", type=float, default=3.35, help="memory TB/s (H100 SXM: 3.35)")
    parser.add_argument("--samples-per-s", type=float, default=None, help="a measured rate to compare")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    out = []
    for impl in ("fft", "dft"):
        rows = train_step_cost(
            args.resolution, args.width, args.modes, args.depth, args.fc_dim, args.channels, impl, args.dtype_bytes
        )
        print(
            f"\nFNO train step per sample: {args.resolution}^2, width {args.width}, {args.modes} modes, "
            f"depth {args.depth}, fc {args.fc_dim}, {args.channels} channels, spectral {impl}"
        )
        print(f"{'part':<28}{'fwd GFLOP':>11}{'train GFLOP':>13}{'min MB':>9}")
        for r in rows:
            print(
                f"{r['part']:<28}{r['fwd_flops'] / 1e9:>11.3f}"
                f"{r['train_flops'] / 1e9:>13.3f}{r['min_bytes'] / 1e6:>9.1f}"
            )
        total = rows[-1]
        flop_bound = args.peak_tflops * 1e12 / total["train_flops"]
        byte_bound = args.bandwidth_tbs * 1e12 / total["min_bytes"] if total["min_bytes"] else float("inf")
        print(
            f"bounds at {args.peak_tflops} TFLOP/s and {args.bandwidth_tbs} TB/s: compute {flop_bound:,.0f} samples/s, "
            f"memory {byte_bound:,.0f} samples/s; arithmetic intensity {total['train_flops'] / total['min_bytes']:.1f} "
            "FLOP/byte"
        )
        if args.samples_per_s:
            achieved = args.samples_per_s * total["train_flops"] / 1e12
            print(f"measured {args.samples_per_s:,.0f} samples/s = {achieved:.2f} TFLOP/s of model FLOPs")
        out.append({"impl": impl, "rows": rows, "compute_bound": flop_bound, "memory_bound": byte_bound})
    if args.json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
