"""Cost of the data-parallel train step: sharded step vs a plain jitted step, and samples/s vs device count.

    python -m benchmarks.parallel_overhead [--resolution 32] [--batch 16] [--width 16] [--modes 8] [--depth 4] \
        [--steps 10] [--devices 1,2,4] [--mode shard_map|pmap] [--json]

Each device count runs in its own subprocess with `XLA_FLAGS=--xla_force_host_platform_device_count=N` on the CPU
(the flag is read when JAX starts). The 1-device run also times the plain `jax.jit(steps.train_step)` (no mesh, no
`pmean`) on the same sizes, so the difference is the overhead of the sharded form itself. Forced host devices share
the machine's cores: more of them splits the same compute, so samples/s on the CPU measures overhead, not speed-up.
Timing excludes compilation (`compile_s`) and ends every step in `block_until_ready`; `step_ms_median` is the median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

__all__ = ["measure", "main"]


def _time(fns: dict, steps: int) -> dict[str, tuple[float, float]]:
    """{name: (compile_s, median step ms)} of each `fn()` (returns something to block on).

    The functions are timed in turns, step by step, so that load from other processes on a shared machine falls
    on all of them alike.
    """
    import jax

    compile_s, times = {}, {name: [] for name in fns}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        compile_s[name] = time.perf_counter() - t0
    for _ in range(steps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t0)
    return {name: (compile_s[name], 1e3 * statistics.median(times[name])) for name in fns}


def measure(args: argparse.Namespace) -> dict:
    """Time the sharded train step over all visible devices (and, on one device, the plain jitted step)."""
    import functools

    import jax
    import jax.numpy as jnp
    import numpy as np

    from fno_jax.model import FNO
    from fno_jax.model.normalization import NormStats
    from fno_jax.runtime.parallel import make_parallel
    from fno_jax.training import steps
    from fno_jax.training.optim import make_optimizer

    n, b = args.resolution, args.batch
    model = FNO(width=args.width, modes=args.modes, depth=args.depth, fc_dim=args.fc_dim, out_dim=1)
    rng = np.random.default_rng(0)
    batch = {
        "source": rng.standard_normal((b, n, n)).astype(np.float32),
        "coeffs": rng.uniform(0.01, 0.05, (b, 3)).astype(np.float32),
        "solution": rng.standard_normal((b, n, n)).astype(np.float32),
    }
    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, n, n, 4)))["params"]
    optimizer = make_optimizer(1e-3, 1000, warmup_steps=0, weight_decay=0.0, freeze=(), params=params)
    state = {"params": params, "opt_state": optimizer.init(params), "step": jnp.int32(0)}
    norm = NormStats(source_scale=1.0, coeff_scale=(1.0, 1.0, 1.0))
    per_device = functools.partial(steps.train_step, model=model, optimizer=optimizer, norm=norm, length=1.0)

    parallel = make_parallel(args.mode)
    parallel.check_batch_size(b, "--batch")
    step_fn = parallel.compile_train(per_device, lambda step, data: data)
    data = parallel.put_train_data(batch)
    holder = {"state": parallel.put_state(state)}

    def sharded():
        holder["state"], metrics = step_fn(holder["state"], data)
        return metrics

    fns = {"sharded": sharded}
    if parallel.num_devices == 1:
        plain_fn = jax.jit(per_device, donate_argnums=(0,))
        device_batch = jax.device_put(batch)
        holder["plain"] = jax.device_put(jax.device_get(state))

        def plain():
            holder["plain"], metrics = plain_fn(holder["plain"], device_batch)
            return metrics

        fns["plain"] = plain
    timed = _time(fns, args.steps)
    compile_s, step_ms = timed["sharded"]
    out = {
        "devices": parallel.num_devices,
        "mode": args.mode,
        "compile_s": compile_s,
        "step_ms_median": step_ms,
        "samples_per_s": b / (step_ms / 1e3),
        "device": jax.devices()[0].device_kind,
    }
    if "plain" in timed:
        plain_ms = timed["plain"][1]
        out.update(plain_step_ms_median=plain_ms, overhead=step_ms / plain_ms - 1.0)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--batch", type=int, default=16, help="global batch, split across devices")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--modes", type=int, default=8)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--fc-dim", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--devices", default="1,2,4", help="comma-separated forced host device counts")
    p.add_argument("--mode", default="shard_map", choices=("shard_map", "pmap"))
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args)))
        return
    counts = [int(c) for c in args.devices.split(",")]
    if any(c < 1 or args.batch % c for c in counts):
        raise SystemExit(f"--devices={args.devices}: each count must be >= 1 and divide --batch={args.batch}.")
    flags = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--json"]
    runs = []
    for count in counts:
        env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={count}")
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.parallel_overhead", *flags, "--worker"],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode:
            raise SystemExit(f"{count} device(s) failed:\n{proc.stderr[-3000:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    sizes = f"resolution {args.resolution}, batch {args.batch}, width {args.width}, modes {args.modes}"
    print(f"# parallel_overhead ({args.mode}; {sizes}, depth {args.depth}; CPU cores: {os.cpu_count()})")
    for r in runs:
        line = f"devices {r['devices']}: step {r['step_ms_median']:.1f} ms, {r['samples_per_s']:.1f} samples/s"
        if "plain_step_ms_median" in r:
            line += f"; plain jit step {r['plain_step_ms_median']:.1f} ms (overhead {100 * r['overhead']:+.1f}%)"
        print(line)
    if args.json:
        print(json.dumps({"mode": args.mode, "runs": runs, **runs[0]}))


if __name__ == "__main__":
    main()
