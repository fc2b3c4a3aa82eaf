"""Training and evaluation: the one trainer for a group of K >= 1 runs (one run is K = 1), the pure train and
eval steps, the optimizer and its schedule, the run's cadence of periodic actions, losses, the metric catalogue and
the metrics themselves, the evaluator, fine-tuning (pretrained params into a fresh state) and packing (which runs
train as one program).

May import: jax, flax, optax, numpy, `solvers`, and fno_jax's `model`, `config`, `runtime`, `data`, `storage` and
`checkpoint`. Submodules are imported by name (`from fno_jax.training import steps`); importing the package loads
nothing heavy.
"""
