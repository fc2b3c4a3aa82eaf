"""Dataset splits made on the devices from a task and a seed.

Split `s` of a run is a function of (seed, s) alone: chunk `c` of `chunk` samples is `task.sample(fold_in(key_s, c),
chunk, n)`, and a split of `num` samples is the first `num` samples of the concatenated chunks. So a bigger split
extends a smaller one (nested pools), the result does not depend on how many devices made it (chunks are dealt
round-robin to the local devices and gathered back in order), and the same seed at another resolution gives the same
continuum sources and coefficients.
"""

import functools

import jax
import ml_collections
import numpy as np

SPLITS = ("train", "val", "test")
_SPLIT_SALT = {"train": 0, "val": 1, "test": 2, "stream": 3, "unlabelled": 4}


def pool_seed(config: ml_collections.ConfigDict) -> int:
    """The seed of a run's generated training pool: `data.pool_seed`, or the data seed when that is -1."""
    return int(config.data.pool_seed) if config.data.pool_seed >= 0 else data_seed(config)


def data_seed(config: ml_collections.ConfigDict) -> int:
    """The seed of a run's data splits: `data.seed`, or `seed` when that is -1."""
    return int(config.data.seed) if config.data.seed >= 0 else int(config.seed)


def split_key(seed: int, split: str) -> jax.Array:
    if split not in _SPLIT_SALT:
        raise ValueError(f"split={split!r} is not one of {tuple(_SPLIT_SALT)}.")
    return jax.random.fold_in(jax.random.PRNGKey(seed), 1000 + _SPLIT_SALT[split])


@functools.lru_cache(maxsize=16)
def _sampler(task, chunk: int, resolution: int):
    return jax.jit(lambda key: task.sample(key, chunk, resolution))


def generate_split(
    task, seed: int, split: str, num: int, resolution: int, *, chunk: int = 512, start: int = 0, devices=None
) -> dict[str, np.ndarray]:
    """Samples [start, start + num) of a split as a host batch dict (see module docstring for the scheme)."""
    if num < 1:
        raise ValueError(f"num={num} samples requested for split {split!r}; ask for at least 1.")
    devices = list(devices) if devices is not None else jax.local_devices()
    key = split_key(seed, split)
    sample = _sampler(task, chunk, resolution)
    first, last = start // chunk, (start + num - 1) // chunk
    pending = []
    for c in range(first, last + 1):
        chunk_key = jax.device_put(jax.random.fold_in(key, c), devices[c % len(devices)])
        pending.append(sample(chunk_key))  # dispatched asynchronously; devices work concurrently
    chunks = [jax.device_get(p) for p in pending]
    batch = {k: np.concatenate([ch[k] for ch in chunks]) for k in chunks[0]}
    offset = start - first * chunk
    batch = {k: v[offset : offset + num] for k, v in batch.items()}
    bad = ~np.isfinite(batch["solution"]).all(axis=(1, 2))
    if bad.any():
        # Under jit a sampler cannot raise; a sample whose rejection sampling gave up comes back as NaN.
        raise ValueError(
            f"{int(bad.sum())} of {num} generated {split!r} samples of task {task.spec()} are not finite (first: "
            f"sample {start + int(np.argmax(bad))}); the task found no admissible sample there (e.g. a Helmholtz "
            "omega_range whose solutions all exceed the amplitude limit). Choose another coefficient range."
        )
    return batch


def stream_batch(task, seed: int, step: jax.Array, batch_size: int, resolution: int) -> dict[str, jax.Array]:
    """A fresh batch for training step `step` (traceable: call inside jit). Same (seed, step) -> same batch."""
    key = jax.random.fold_in(split_key(seed, "stream"), step)
    return task.sample(key, batch_size, resolution)
