"""Physics for fno-jax: grids, Gaussian-bump sources, coefficient samplers, spectral solves, Darcy flow.

Depends on jax/numpy only.  The grid and wavenumber convention (x is the last array axis; K11 and vx go with x)
is stated once, in `solvers.grid`; what is checked where, and how checks reach code under jit/vmap/grad
(`jax.experimental.checkify`), in `solvers._checks`; the Helmholtz resonance rule in `solvers.symbols`.
"""

from solvers import families, grid, tasks
from solvers.coefficients import rotated_diffusion
from solvers.darcy_flow import DarcyInfo, darcy, darcy_residual
from solvers.families import FAMILIES
from solvers.grid import Domain
from solvers.residual import advection_diffusion_residual, helmholtz_residual, poisson_residual
from solvers.solve import (
    RESONANT_SOURCE_RTOL,
    advection_diffusion,
    helmholtz,
    helmholtz_dropped_fraction,
    poisson,
)
from solvers.symbols import RESONANCE_RTOL, resonant_omegas

__all__ = [
    "poisson",
    "advection_diffusion",
    "helmholtz",
    "poisson_residual",
    "advection_diffusion_residual",
    "helmholtz_residual",
    "darcy",
    "darcy_residual",
    "DarcyInfo",
    "helmholtz_dropped_fraction",
    "resonant_omegas",
    "RESONANCE_RTOL",
    "RESONANT_SOURCE_RTOL",
    "rotated_diffusion",
    "Domain",
    "grid",
    "tasks",
    "families",
    "FAMILIES",
]
