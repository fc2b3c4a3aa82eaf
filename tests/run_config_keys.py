"""Run-config keys of the paper's protocol that `fno_jax.config.default_config()` defines.

Studies set them in every expanded run config (train.num_epochs, train.select_by, data.seed, ...). A checkout whose
fno_jax predates them still expands studies in tests through the `protocol_run_keys` fixture, which adds the
missing ones to base.py's config with fno_jax's defaults; where fno_jax defines them it adds nothing.
"""

import ml_collections
import pytest

# dotted key -> fno_jax's default.
PROTOCOL_KEYS = {
    "train.num_epochs": 500,
    "train.max_evals": 1000,
    "train.select_by": "val_loss",
    "train.matmul_precision": "highest",
    "model.init": "torch",
    "data.seed": -1,
}


def with_protocol_keys(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with every PROTOCOL_KEYS key it lacks added at its default."""
    for path, default in PROTOCOL_KEYS.items():
        section, key = path.split(".")
        if key not in config[section]:
            with config[section].unlocked():
                config[section][key] = default
    return config


@pytest.fixture
def protocol_run_keys(monkeypatch):
    from experiments.configs import base as base_config

    get_config = base_config.get_config
    monkeypatch.setattr(base_config, "get_config", lambda arg=None: with_protocol_keys(get_config(arg)))
