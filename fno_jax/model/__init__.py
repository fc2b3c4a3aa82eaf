"""The operator itself: the FNO (`fno`: lift, Fourier layers, head), its spectral convolution and fused layer,
its input channels (`channels`: the layout of source and coefficient channels), the per-instance normalization
(`normalization`) and the model on raw physical inputs (`inference`: `predict`, and the FNO of a run config).

May import: jax, flax, numpy, jaxtyping, ml_collections and `solvers` (the family table). Nothing else of fno_jax:
a user who only wants the model imports no orbax, tensorstore or training code.
"""

from fno_jax.model.fno import FNO, INITS, LAYER_IMPLS, default_layer_impl, num_params
from fno_jax.model.inference import SIZE_KEYS, from_config, model_inputs, predict

__all__ = [
    "FNO",
    "INITS",
    "LAYER_IMPLS",
    "SIZE_KEYS",
    "default_layer_impl",
    "from_config",
    "model_inputs",
    "num_params",
    "predict",
]
