"""The one grid and wavenumber convention used by every solver in `solvers`.

Convention (stated once, used everywhere):

* Domain: the periodic square [0, L)^2 sampled at n x n points x_j = j * L / n, j = 0..n-1 (n even).
* Arrays are indexed [..., y, x]; x runs along the last axis, y along the second-to-last.
* Tensors and vectors are indexed (x, y) = (0, 1): K[..., 0, 0] = K11 multiplies d2/dx2 (last array axis),
  K[..., 1, 1] = K22 multiplies d2/dy2 (second-to-last axis), K12 = K21 the mixed derivative; a velocity
  v[..., 0] = vx is along x (last axis), v[..., 1] = vy along y.
* Fourier transforms are `jnp.fft.rfft2` over the last two axes: the x axis keeps the n // 2 + 1
  non-negative frequencies, the y axis keeps all n frequencies in `fftfreq` order.
* Wavenumbers are angular: k = 2 * pi * m / L for the integer mode m, so d/dx <-> i * kx.
* Nyquist (m = n / 2): a real field's Nyquist mode is cos(pi * n * x / L), whose odd derivatives
  vanish on the grid.  Terms of the symbol that are *even* in a wavenumber component (kx^2, ky^2)
  use the full Nyquist wavenumber |k| = pi * n / L; terms *odd* in a component (d/dx, d/dy and the
  mixed derivative d2/dxdy) use the "odd" wavenumbers, where the Nyquist entry is set to 0.  This
  keeps every symbol Hermitian on the rfft grid, so solves map real fields to real fields exactly.

Darcy flow (`solvers.darcy`, second-order finite volumes) has two grids, named by its boundary mode `bc`:

* bc="periodic": the grid above, x_j = j L / n (n even), spacing h = L / n; f's mean is removed and u has zero
  mean, as for the spectral solvers.
* bc="dirichlet": the square [0, L]^2 with u = 0 on its boundary.  Arrays hold only the n x n interior nodes
  x_i = (i + 1) h, h = L / (n + 1), i = 0..n-1 (`dirichlet_points`; the grid of the sine transform DST-I), any
  n >= 3; the boundary nodes x = 0 and x = L are not stored.  Grids n and 2n + 1 are nested: node i of the
  coarse grid is node 2i + 1 of the fine one.

`Domain(n, length)` is this grid as a value: a frozen dataclass and a JAX pytree whose `length` is a leaf, so
it can be traced (jit, vmap over a batch of lengths, grad with respect to L); `n` is static.  The module-level
functions are the same quantities for a static length.
"""

from __future__ import annotations

import dataclasses
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = [
    "Domain",
    "grid_points",
    "dirichlet_points",
    "wavenumbers",
    "odd_wavenumbers",
    "mode_numbers",
    "rfft_weights",
]


def _is_static(length) -> bool:
    return isinstance(length, numbers.Real) or (isinstance(length, np.ndarray) and length.ndim == 0)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Domain:
    """The periodic square [0, L)^2 sampled at n x n points (convention in the module docstring).

    Properties:
      n: points per side, a static int (even, >= 4 for the solvers).
      length: side L; a Python float (wavenumbers computed once in float64 and baked in as constants) or a
        scalar array, which may be a tracer: `jax.vmap(lambda d: ...)(Domain(n, lengths))` solves for every
        length of a batch, `jax.grad` differentiates with respect to L.
    """

    n: int = dataclasses.field(metadata={"static": True})
    length: float | Float[Array, ""] = 1.0

    @property
    def spacing(self) -> float | Float[Array, ""]:
        """Grid spacing dx = dy = L / n."""
        return self.length / self.n

    def points(self, dtype=None) -> Float[Array, " n"]:
        """The n sample positions j * L / n along one axis (same for x and y).

        Written as (j / n) * L so that the shared points of resolutions n and 2n are bitwise equal.
        """
        if _is_static(self.length):
            return jnp.asarray((np.arange(self.n) / self.n) * float(self.length), dtype=dtype)
        return jnp.asarray(np.arange(self.n) / self.n, dtype) * jnp.asarray(self.length, dtype)

    def wavenumbers(self, dtype=None) -> tuple[Float[Array, "n 1"], Float[Array, "1 m"]]:
        """Angular wavenumbers (ky [n, 1], kx [1, n // 2 + 1]) of the rfft2 grid, Nyquist kept.

        Use these for terms even in a component (kx**2, ky**2).  The y-Nyquist entry is -pi * n / L
        (`fftfreq` order); its sign never matters for even terms.
        """
        my, mx = mode_numbers(self.n)
        return self._scale(my, dtype), self._scale(mx, dtype)

    def odd_wavenumbers(self, dtype=None) -> tuple[Float[Array, "n 1"], Float[Array, "1 m"]]:
        """Like `wavenumbers` but with the Nyquist entries set to 0, for terms odd in a component."""
        my, mx = mode_numbers(self.n)
        my, mx = my.copy(), mx.copy()
        my[self.n // 2] = 0.0
        mx[0, self.n // 2] = 0.0
        return self._scale(my, dtype), self._scale(mx, dtype)

    def _scale(self, modes: np.ndarray, dtype) -> jax.Array:
        if _is_static(self.length):
            # The float64 numpy expression of `np.fft.fftfreq(n, d=L / n)`, so static lengths give the same
            # constants as before the domain could be traced.
            return jnp.asarray(2 * np.pi * (modes * (1.0 / (self.n * (float(self.length) / self.n)))), dtype=dtype)
        dtype = dtype or jnp.result_type(self.length, 0.0)
        return jnp.asarray(modes, dtype) * (2 * np.pi / jnp.asarray(self.length, dtype))


def mode_numbers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer modes (my [n, 1] in `fftfreq` order, mx [1, n // 2 + 1]) of the rfft2 grid, float64 numpy."""
    half = (n - 1) // 2 + 1
    my = np.concatenate([np.arange(half), np.arange(-(n // 2), 0)]).astype(np.float64)
    mx = np.arange(n // 2 + 1, dtype=np.float64)
    return my[:, None], mx[None, :]


def grid_points(n: int, length: float = 1.0, dtype=None) -> Float[Array, " n"]:
    """`Domain(n, length).points(dtype)`."""
    return Domain(n, length).points(dtype)


def dirichlet_points(n: int, length: float = 1.0, dtype=None) -> Float[Array, " n"]:
    """The n interior nodes x_i = (i + 1) L / (n + 1) of the Dirichlet grid (same for x and y).

    Written as ((i + 1) / (n + 1)) * L so that the shared nodes of grids n and 2n + 1 are bitwise equal.
    """
    return jnp.asarray((np.arange(1, n + 1) / (n + 1)) * float(length), dtype=dtype)


def wavenumbers(n: int, length: float = 1.0, dtype=None) -> tuple[Float[Array, "n 1"], Float[Array, "1 m"]]:
    """`Domain(n, length).wavenumbers(dtype)`."""
    return Domain(n, length).wavenumbers(dtype)


def odd_wavenumbers(n: int, length: float = 1.0, dtype=None) -> tuple[Float[Array, "n 1"], Float[Array, "1 m"]]:
    """`Domain(n, length).odd_wavenumbers(dtype)`."""
    return Domain(n, length).odd_wavenumbers(dtype)


def rfft_weights(n: int, dtype=None) -> Float[Array, "1 m"]:
    """Parseval weights of the rfft x axis: 1 for the kx = 0 and Nyquist columns, 2 otherwise.

    sum(|u|^2) == sum(w * |rfft2(u)|^2) / n**2 for a real n x n field u.
    """
    w = np.full(n // 2 + 1, 2.0)
    w[0] = 1.0
    w[n // 2] = 1.0
    return jnp.asarray(w[None, :], dtype=dtype)
