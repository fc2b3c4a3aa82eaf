"""Physics for fno-jax: grids, Gaussian-bump sources, coefficient samplers, spectral solves.

Depends on jax/numpy only.  The wavenumber convention is stated once, in `solvers.grid`.
"""

from solvers import families, grid, tasks
from solvers.families import FAMILIES
from solvers.residual import advection_diffusion_residual, helmholtz_residual, poisson_residual
from solvers.solve import advection_diffusion, helmholtz, poisson

__all__ = [
    "poisson",
    "advection_diffusion",
    "helmholtz",
    "poisson_residual",
    "advection_diffusion_residual",
    "helmholtz_residual",
    "grid",
    "tasks",
    "families",
    "FAMILIES",
]
