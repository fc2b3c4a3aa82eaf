"""Read throughput of stored datasets through the prefetching reader.

    python -m benchmarks.reader [--resolution 128] [--samples 2048] [--chunk 64] \
        [--batch 32 128] [--shuffle] [--device-put] [--json]

Writes a synthetic dataset (random float32 fields, zstd-compressed zarr v3) into a temporary
directory, then times one pass over the train split in consecutive (or, with --shuffle, random)
batches through the host feed's read path: `TrainingSet.read` in a `Prefetcher` (background
thread, bounded queue), with --device-put placed on the devices by `DataParallel.put_batch` as in
training. Reported: samples/s and MB/s of decoded source + solution data, per batch size; the
write time is reported too.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from typing import Any

import numpy as np

from fno_jax.data import Prefetcher, TrainingSet, open_dataset, write_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--samples", type=int, default=2048, help="train samples to write")
    parser.add_argument("--chunk", type=int, default=64, help="samples per stored chunk")
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--buffer", type=int, default=2, help="prefetch queue size")
    parser.add_argument("--repeats", type=int, default=2, help="passes per batch size (best)")
    parser.add_argument("--shuffle", action="store_true", help="batches of random indices (gather reads)")
    parser.add_argument("--device-put", action="store_true", help="jax.device_put each batch to device 0")
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON line at the end")


def _synthetic(resolution: int):
    def make_batch(split: str, start: int, count: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([start, count])
        return {
            # Smooth-ish fields compress like real solutions rather than like white noise.
            "source": np.cumsum(rng.standard_normal((count, resolution, resolution)), -1).astype(np.float32),
            "solution": np.cumsum(rng.standard_normal((count, resolution, resolution)), -2).astype(np.float32),
            "diffusion": rng.standard_normal((count, 2, 2)).astype(np.float32),
            "velocity": np.zeros((count, 2), np.float32),
            "omega": np.zeros((count,), np.float32),
            "pde": np.zeros((count,), np.int32),
            "volume_fraction": rng.choice([0.2, 0.4, 0.6, 0.8], count).astype(np.float32),
        }

    return make_batch


def run(args: argparse.Namespace) -> dict[str, Any]:
    parallel = None
    if args.device_put:
        from fno_jax.runtime.parallel import make_parallel

        parallel = make_parallel("shard_map")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = f"{tmp}/ds"
        counts = {"train": args.samples, "val": 0, "test": 0}
        t0 = time.perf_counter()
        write_dataset(
            path,
            _synthetic(args.resolution),
            spec={"name": "poisson", "synthetic": True},
            resolution=args.resolution,
            counts=counts,
            seed=0,
            chunk=args.chunk,
        )
        write_s = time.perf_counter() - t0
        train = TrainingSet("poisson", np.arange(args.samples), dataset=open_dataset(path))
        bytes_per_sample = 2 * args.resolution**2 * 4
        results = []
        for batch in args.batch:
            best = float("inf")
            for r in range(args.repeats):
                order = np.random.default_rng(r).permutation(args.samples) if args.shuffle else np.arange(args.samples)

                def fetch(i: int, order=order, batch=batch) -> dict:
                    rows = train.read(order[i * batch : (i + 1) * batch])
                    return parallel.put_batch(rows, batch) if parallel is not None else rows

                t0 = time.perf_counter()
                n = 0
                with Prefetcher(fetch, range(args.samples // batch), buffer_size=args.buffer) as it:
                    for b in it:
                        if parallel is not None:
                            b["source"].block_until_ready()
                        n += b["source"].shape[0]
                best = min(best, time.perf_counter() - t0)
            results.append(
                {
                    "batch": batch,
                    "samples_per_s": n / best,
                    "mb_per_s": n * bytes_per_sample / best / 1e6,
                    "pass_s": best,
                }
            )
    device = "host"
    if parallel is not None:
        device = f"{parallel.num_devices} x {parallel.devices[0].device_kind}"
    return {
        "resolution": args.resolution,
        "samples": args.samples,
        "chunk": args.chunk,
        "shuffle": args.shuffle,
        "write_s": write_s,
        "write_samples_per_s": args.samples / write_s,
        "device": device,
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()})",
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reader", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args()
    out = run(args)
    for r in out["results"]:
        print(
            f"batch {r['batch']:4d}: {r['samples_per_s']:9.0f} samples/s "
            f"({r['mb_per_s']:7.1f} MB/s decoded source+solution)"
        )
    print(f"write: {out['write_samples_per_s']:.0f} samples/s ({out['write_s']:.2f} s)")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
