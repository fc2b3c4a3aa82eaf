"""Per-sample numpy reference generator: the straightforward way to make the same data.

One sample at a time: draw with numpy, build the source as one full-grid `np.exp` per switched-on
bump, divide by its max, solve with a numpy FFT.  Used only as the baseline of
`benchmarks.generate --baseline`; the statistics match `solvers.tasks` (not the random streams).
"""

from __future__ import annotations

import time

import numpy as np

SIGMA = 1.0 / 32
CENTRES = 0.5 + (np.arange(12) - 5.5) / 16


def poisson_sample(rng: np.random.Generator, n: int, length: float = 1.0):
    """(source, solution, K) for one Poisson sample at resolution n."""
    x = np.arange(n) / n * length
    xx, yy = np.meshgrid(x, x)
    vf = rng.choice([0.2, 0.4, 0.6, 0.8])
    f = np.zeros((n, n))
    any_on = False
    for cy in CENTRES * length:
        for cx in CENTRES * length:
            if rng.random() < 1 - vf:
                amplitude = rng.uniform(1e-3, 1.0)
                f += amplitude * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (SIGMA * length) ** 2))
                any_on = True
    if not any_on:
        cx, cy = rng.choice(CENTRES * length, 2)
        f += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (SIGMA * length) ** 2))
    f = f / f.max()
    f = f - f.mean()
    e, t = rng.uniform(1, 5), rng.uniform(0, 2 * np.pi)
    c, s = np.cos(t), np.sin(t)
    rot = np.array([[c, -s], [s, c]])
    k = 0.01 * rot.T @ np.diag([1.0, e]) @ rot
    kx = 2 * np.pi * np.fft.fftfreq(n, d=length / n)
    ky = kx[:, None]
    kx = kx[None, :]
    symbol = k[0, 0] * kx**2 + 2 * k[0, 1] * kx * ky + k[1, 1] * ky**2
    symbol[0, 0] = 1.0
    u_hat = np.fft.fft2(f) / symbol
    u_hat[0, 0] = 0.0
    u = np.real(np.fft.ifft2(u_hat))
    return f, u, k


def samples_per_s(pde: str, resolution: int, num_samples: int, seed: int = 0) -> float:
    """Samples per second of the per-sample numpy generator (one warm-up sample excluded)."""
    if pde != "poisson":
        raise ValueError(f"the numpy reference covers pde='poisson' only, got {pde!r}.")
    rng = np.random.default_rng(seed)
    poisson_sample(rng, resolution)
    start = time.perf_counter()
    for _ in range(num_samples):
        poisson_sample(rng, resolution)
    return num_samples / (time.perf_counter() - start)
