"""The operator itself: the FNO (`fno.py`: lift, Fourier layers, head), its spectral convolution and fused layer,
its input channels (`channels`: the layout of source and coefficient channels), the per-instance normalization
(`normalization`) and inference on a raw batch (`predict`).

May import: jax, flax, numpy, jaxtyping and `solvers` (the family table). Nothing else of fno_jax: a user who only
wants the model imports no orbax, tensorstore or training code.
"""

from fno_jax.model.fno import FNO, INITS, LAYER_IMPLS, default_layer_impl, num_params

__all__ = ["FNO", "INITS", "LAYER_IMPLS", "default_layer_impl", "num_params"]
