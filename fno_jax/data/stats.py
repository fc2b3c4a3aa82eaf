"""The normalization statistics of a split's inputs: one function for generated, stored and streamed data."""

from collections.abc import Iterable, Mapping

import numpy as np

from fno_jax.model import channels
from fno_jax.model.normalization import NormStats, source_norms, stats_from_norms


def input_stats(chunks: Iterable[Mapping[str, np.ndarray]], layout: str, length: float) -> NormStats:
    """`NormStats` of the inputs of a split given as raw batch chunks (source, diffusion, velocity, omega, pde).

    Only the inputs are read (no solutions); each coefficient's median is over the samples whose family has it
    (`fno_jax.model.channels.presence`); a field coefficient's (Darcy's a(x)) is the median over samples of each
    sample's median magnitude on the grid. Chunks keep memory bounded: a chunk is reduced to its [B] source norms and
    [B, C-1] coefficients before the next is read. The norms are summed in float64 on the host, sample by sample,
    so the statistics do not depend on how the split is chunked (a stored dataset's and the in-memory pool's agree
    bit for bit).
    """
    norms, coeffs, present = [], [], []
    for chunk in chunks:
        source = np.asarray(chunk["source"], np.float64)
        norms.append(np.asarray(source_norms(source, length, xp=np)))
        columns = np.asarray(channels.coefficients(chunk, layout))
        fields = channels.fields(chunk, layout)
        if fields is not None:  # a field channel's per-sample value: its median magnitude over the grid
            columns = np.concatenate([columns, np.median(np.abs(np.asarray(fields)), axis=(1, 2))], axis=1)
        coeffs.append(columns)
        present.append(channels.presence(chunk["pde"], layout))
    if not norms:
        raise ValueError("input_stats needs at least one sample; the split is empty.")
    return stats_from_norms(np.concatenate(norms), np.concatenate(coeffs), np.concatenate(present))
