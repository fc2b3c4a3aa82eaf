"""fno-jax: pre-training and fine-tuning Fourier Neural Operators on families of PDEs."""

from fno_jax import channels, checkpoint, interop, normalization
from fno_jax.model import FNO
from fno_jax.normalization import NormStats

__all__ = ["FNO", "NormStats", "channels", "checkpoint", "interop", "normalization"]
