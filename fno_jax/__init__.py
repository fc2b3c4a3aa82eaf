"""fno-jax: pre-training and fine-tuning Fourier Neural Operators on families of PDEs.

fno_jax.FNO                          the model (flax.linen)
fno_jax.train_and_evaluate           one run: data -> training -> checkpoints -> summary.json
fno_jax.train_and_evaluate_packed    K runs that differ in seed and learning rate, as one program
fno_jax.pretrained.load              a pretrained bundle (python -m fno_jax.export) as (model, params, card)
fno_jax.checkpoint.load_params       a trained params pytree from a workdir
fno_jax.interop                      the reference PyTorch state_dict, in and out

The run machinery (training, checkpoints, data) is imported on first use, so `import fno_jax.model` stays light
(no orbax or tensorstore).
"""

import importlib
from typing import Any

from fno_jax.config import ConfigError, default_config, validate_config
from fno_jax.model import FNO, channels, normalization
from fno_jax.model.normalization import NormStats

_LAZY = {
    "train_and_evaluate": ("fno_jax.train", "train_and_evaluate"),
    "checkpoint": ("fno_jax.checkpoint", None),
    "finetune": ("fno_jax.training.finetune", None),
    "interop": ("fno_jax.interop", None),
    "pretrained": ("fno_jax.pretrained", None),
    "train_and_evaluate_packed": ("fno_jax.train", "train_and_evaluate_packed"),
}

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
    "pretrained",
    "train_and_evaluate",
    "train_and_evaluate_packed",
    "validate_config",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'fno_jax' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = importlib.import_module(module)
    return getattr(value, attr) if attr else value
