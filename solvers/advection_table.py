"""Make the advection-strength table: lam -> dataset-mean advection/diffusion ratio.

    python -m solvers.advection_table [--samples 4096] [--seed 0] [--eigenvalue-range 1 5] [--out PATH]

The paper's generator (`utils/gen_data_advdiff.py` in the public repository
ShashankSubramanian/neuraloperators-TL-scaling) draws a target ratio r ~ U(r1, r2) per sample and takes the
advection strength lam from a fixed table (its `utils/lambda.npy`, `utils/ads.npy`): the lam whose mean ratio
over a set of problems is nearest r.  The ratio of one problem is ||lam v . grad u|| / ||(1 - lam) div(K0 grad u)||
with v a unit vector, K0 = 0.01 R(-t) diag(1, e) R(t), u the solution.  This script makes our table by the same
procedure from our own problems:

  * lam on the paper's grid of 59 values: 20 log-spaced in [1e-3, 1e-1], 0.14 to 0.90 in steps of 0.04, then
    0.9 + the first 19 log-spaced values again (0.901 ... 0.978);
  * `--samples` problems drawn as `solvers.tasks.AdvectionDiffusion` draws them (sources, vf, K0, direction), at
    the paper's resolution 128 in float64, the same problems for every lam (so the table is monotone);
  * each problem's ratio evaluated exactly in Fourier space (`solvers.coefficients.advection_ratio`) and averaged.

The result is written as JSON to solvers/advection_table.json (the committed table that
`solvers.coefficients.table_strength` reads).  About a minute on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from solvers.coefficients import ADVECTION_TABLE_PATH, advection_ratio

RESOLUTION = 128
CHUNK = 256


def paper_lambda_grid() -> np.ndarray:
    """The 59 lam values of the paper's table (see the module docstring)."""
    log = np.logspace(-3, -1, 20)
    return np.concatenate([log, 0.14 + 0.04 * np.arange(20), 0.9 + log[:-1]])


def mean_ratios(lam: np.ndarray, samples: int, seed: int, eigenvalue_range: tuple[float, float]) -> np.ndarray:
    """Mean over `samples` problems of each lam's ratio (float64; needs jax_enable_x64)."""
    from solvers.sources import gaussian_source_and_spectrum
    from solvers.tasks import draw_advection_diffusion

    key = jax.random.key(seed)
    lam_row = jnp.asarray(lam, jnp.float64)

    @jax.jit
    def chunk_sums(indices):
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)
        draw = lambda k: draw_advection_diffusion(k, eigenvalue_range, (0.0, 1.0), jnp.float64)
        amplitudes, _, diffusion0, direction, _, _ = jax.vmap(draw)(keys)
        _, f_hat = gaussian_source_and_spectrum(amplitudes, RESOLUTION, remove_mean=True)

        def one(lam_value):
            return jnp.sum(advection_ratio(f_hat, diffusion0, direction, jnp.full(indices.shape, lam_value)))

        return jax.lax.map(one, lam_row)

    total = np.zeros(lam.shape)
    for start in range(0, samples, CHUNK):
        total += np.asarray(chunk_sums(jnp.arange(start, min(start + CHUNK, samples), dtype=jnp.int32)))
    return total / samples


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4096, help="problems averaged per lam")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eigenvalue-range", type=float, nargs=2, default=(1.0, 5.0), metavar=("LOW", "HIGH"))
    parser.add_argument("--out", default=str(ADVECTION_TABLE_PATH))
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    lam = paper_lambda_grid()
    start = time.perf_counter()
    means = mean_ratios(lam, args.samples, args.seed, tuple(args.eigenvalue_range))
    table = {
        "description": (
            "lam -> mean of ||lam v.grad u|| / ||(1 - lam) div(K0 grad u)|| over the same problems for every lam "
            "(sources, K0 = 0.01 R(-t) diag(1, e) R(t), unit v drawn as solvers.tasks.AdvectionDiffusion does, "
            "length 1); solvers.coefficients.table_strength picks the lam whose mean is nearest the target ratio."
        ),
        "command": " ".join(["python -m solvers.advection_table", *(sys.argv[1:] if argv is None else argv)]),
        "resolution": RESOLUTION,
        "samples_per_lambda": args.samples,
        "seed": args.seed,
        "eigenvalue_range": list(args.eigenvalue_range),
        "lambda": [float(x) for x in lam],
        "mean_ratio": [float(x) for x in means],
    }
    with open(args.out, "w") as f:
        json.dump(table, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}: {lam.size} lam values, {args.samples} problems each, {time.perf_counter() - start:.0f} s")
    return table


if __name__ == "__main__":
    main()
