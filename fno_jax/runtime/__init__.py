"""The process a run lives in: data parallelism over the device mesh (`parallel`), multi-process start-up and
collectives (`distributed`), preemption (`preemption`: SIGTERM/SIGINT -> a checkpoint and a clean exit), logging
set-up (`log_setup`), the progress line (`progress`) and one-line command-line errors (`cli_errors`).

May import: jax, numpy, absl. Nothing else of fno_jax at import time (`cli_errors` asks each error for its kind,
it does not import the modules that raise them). Submodules are imported by name.
"""
