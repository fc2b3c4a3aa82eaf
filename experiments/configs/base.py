"""The full key set of one run, with the paper's defaults; every config file starts here.

python -m experiments.main --config=experiments/configs/base.py --workdir=runs/base
"""

from fno_jax.config import default_config


def get_config(arg: str | None = None):
    del arg
    return default_config()
