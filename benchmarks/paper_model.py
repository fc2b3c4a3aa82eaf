"""Times the paper's own PyTorch FNO (``models/fno.py`` of its released code) in this process.

    PYTHON_WITH_TORCH benchmarks/paper_model.py --repo /path/to/neuraloperators-TL-scaling \
        train|infer --resolution 128 --batch 32 --width 16 --modes 8 [--depth 4] [--fc-dim 128] \
        [--channels 4] [--steps 10] [--warmup 2] [--threads N]

Run by `benchmarks.baseline` as a separate process with the reference's own interpreter (torch, numpy:
none of this project's packages are imported), so the two frameworks never share a process. The model
is the paper's ``FNN2d`` built as its ``fno(params)`` builds it (``layers = [width] * (depth + 1)``,
``modes1 = modes2 = [modes] * depth``, exact GELU), channels-first inputs ``[batch, channels, y, x]``.
``train`` times the core of its trainer's step: ``zero_grad``, forward, the ``loss_style: sum`` loss
(sum of squared errors over the batch divided by the batch size), ``backward`` and ``Adam.step``
(the trainer's per-step gradient norm and training error are left out, to the reference's
advantage); ``infer`` the forward pass under ``torch.no_grad``. The last line printed is one JSON
object with ``samples_per_s`` and ``step_ms_median``, as `benchmarks.throughput` prints.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", required=True, help="checkout of the paper's released code")
    parser.add_argument("mode", choices=("train", "infer"))
    for flag, default in (("resolution", 128), ("batch", 32), ("width", 16), ("modes", 8), ("depth", 4)):
        parser.add_argument(f"--{flag}", type=int, default=default)
    parser.add_argument("--fc-dim", type=int, default=128)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    sys.path.insert(0, args.repo)
    import torch
    from models.fno import FNN2d  # the paper's model, from --repo

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(args.seed)
    model = FNN2d(
        [args.modes] * args.depth,
        [args.modes] * args.depth,
        width=args.width,
        fc_dim=args.fc_dim,
        layers=[args.width] * (args.depth + 1),
        in_dim=args.channels,
        out_dim=1,
        activation="gelu",
    ).to(device)
    n = args.resolution
    inputs = torch.randn(args.batch, args.channels, n, n, device=device)
    targets = torch.randn(args.batch, 1, n, n, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def train_step() -> None:
        model.zero_grad()
        pred = model(inputs)
        loss = torch.sum((targets - pred) ** 2) / pred.shape[0]
        loss.backward()
        optimizer.step()
        sync()

    def infer_step() -> None:
        with torch.no_grad():
            model(inputs)
        sync()

    step = train_step if args.mode == "train" else infer_step
    start = time.perf_counter()
    step()
    first_s = time.perf_counter() - start
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    result = {
        "benchmark": f"paper_{args.mode}",
        "samples_per_s": args.batch / step_s,
        "step_ms_median": 1e3 * step_s,
        "step_ms_min": 1e3 * min(times),
        "first_step_s": first_s,
        "device": f"torch:{device}",
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "num_params": sum(p.numel() for p in model.parameters()),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
