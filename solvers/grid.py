"""The one grid and wavenumber convention used by every solver in `solvers`.

Convention (stated once, used everywhere):

* Domain: the periodic square [0, L)^2 sampled at n x n points x_j = j * L / n, j = 0..n-1 (n even).
* Arrays are indexed [..., y, x]; x runs along the last axis.
* Fourier transforms are `jnp.fft.rfft2` over the last two axes: the x axis keeps the n // 2 + 1
  non-negative frequencies, the y axis keeps all n frequencies in `fftfreq` order.
* Wavenumbers are angular: k = 2 * pi * m / L for the integer mode m, so d/dx <-> i * kx.
* Nyquist (m = n / 2): a real field's Nyquist mode is cos(pi * n * x / L), whose odd derivatives
  vanish on the grid.  Terms of the symbol that are *even* in a wavenumber component (kx^2, ky^2)
  use the full Nyquist wavenumber |k| = pi * n / L; terms *odd* in a component (d/dx, d/dy and the
  mixed derivative d2/dxdy) use the "odd" wavenumbers, where the Nyquist entry is set to 0.  This
  keeps every symbol Hermitian on the rfft grid, so solves map real fields to real fields exactly.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = ["grid_points", "wavenumbers", "odd_wavenumbers", "rfft_weights"]


def grid_points(n: int, length: float = 1.0, dtype=None) -> Float[Array, " n"]:
    """The n sample positions j * L / n along one axis (same for x and y).

    Written as (j / n) * L so that the shared points of resolutions n and 2n are bitwise equal.
    """
    return jnp.asarray((np.arange(n) / n) * length, dtype=dtype)


def wavenumbers(n: int, length: float = 1.0, dtype=None) -> tuple[Float[Array, "n 1"], Float[Array, "1 m"]]:
    """Angular wavenumbers (ky [n, 1], kx [1, n // 2 + 1]) of the rfft2 grid, Nyquist kept.

    Use these for terms even in a component (kx**2, ky**2).  The y-Nyquist entry is -pi * n / L
    (`fftfreq` order); its sign never matters for even terms.
    """
    ky = 2 * np.pi * np.fft.fftfreq(n, d=length / n)
    kx = 2 * np.pi * np.fft.rfftfreq(n, d=length / n)
    return jnp.asarray(ky[:, None], dtype=dtype), jnp.asarray(kx[None, :], dtype=dtype)


def odd_wavenumbers(n: int, length: float = 1.0, dtype=None) -> tuple[Float[Array, "n 1"], Float[Array, "1 m"]]:
    """Like `wavenumbers` but with the Nyquist entries set to 0, for terms odd in a component."""
    ky = 2 * np.pi * np.fft.fftfreq(n, d=length / n)
    kx = 2 * np.pi * np.fft.rfftfreq(n, d=length / n)
    ky[n // 2] = 0.0
    kx[n // 2] = 0.0
    return jnp.asarray(ky[:, None], dtype=dtype), jnp.asarray(kx[None, :], dtype=dtype)


def rfft_weights(n: int, dtype=None) -> Float[Array, "1 m"]:
    """Parseval weights of the rfft x axis: 1 for the kx = 0 and Nyquist columns, 2 otherwise.

    sum(|u|^2) == sum(w * |rfft2(u)|^2) / n**2 for a real n x n field u.
    """
    w = np.full(n // 2 + 1, 2.0)
    w[0] = 1.0
    w[n // 2] = 1.0
    return jnp.asarray(w[None, :], dtype=dtype)
