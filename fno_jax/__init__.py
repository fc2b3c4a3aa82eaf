"""fno-jax: pre-training and fine-tuning Fourier Neural Operators on families of PDEs.

fno_jax.FNO                          the model (flax.linen)
fno_jax.train_and_evaluate           one run: data -> training -> checkpoints -> summary.json
fno_jax.checkpoint.load_params       a trained params pytree from a workdir
fno_jax.interop                      the reference PyTorch state_dict, in and out
"""

from fno_jax import channels, checkpoint, finetune, interop, normalization
from fno_jax.config import ConfigError, default_config, validate_config
from fno_jax.model import FNO
from fno_jax.normalization import NormStats
from fno_jax.train import train_and_evaluate

__all__ = [
    "FNO",
    "ConfigError",
    "NormStats",
    "channels",
    "checkpoint",
    "default_config",
    "finetune",
    "interop",
    "normalization",
    "train_and_evaluate",
    "validate_config",
]
