"""Fine-tuning modes: which weights of a pretrained FNO train, and low-rank adapters on its weights.

    tuning = Tuning.from_config(config)               # finetune.mode, finetune.rank, finetune.lora_targets
    params = tuning.init(key, pretrained_params)      # the train state's params
    model_params = tuning.model_params(params)        # the FNO params of the forward pass (pure: traced in the step)
    labels = tuning.labels(params)                    # "trainable" / "frozen" per leaf, for optax.multi_transform
    tuning.trainable_count(params)                    # the scalars that train

Modes (`finetune.mode`):

  full          every weight trains (the paper's fine-tuning); params are the FNO's.
  head          the projection head (fc1, fc2) trains, every other weight stays the pretrained one; params are the
                FNO's.
  lora          params = {"base": the pretrained FNO params, frozen, "adapters": ...}; every targeted weight W is
                used as W + Delta (`finetune.lora_targets`: "spectral", "pointwise", "head"):
                  a dense kernel W [in, out] (pointwise_i, fc1, fc2):  Delta = B A,  B [in, r], A [r, out], r capped
                  at min(in, out);
                  a spectral weight W [in, out, m, m, 2] (spectral_i weights1 and weights2: the modes' real and
                  imaginary parts):  Delta[i, o, ky, kx, c] = sum_j B[i, j] S[j, ky, kx, c] A[j, o],
                  B [in, r], S [r, m, m, 2], A [r, out]: at every retained mode a rank-r update of the [in x out]
                  channel mixing, B S_k A, whose channel subspaces (B, A) are shared by all modes and whose
                  mode dependence is the diagonal S_k (r(in + out + 2 m^2) scalars instead of in out 2 m^2).
  band_adapter  the spectral weights' modes split into three frequency bands by |k| = (kx^2 + ky^2)^1/2 in integer
                modes: low |k| < m/3, mid m/3 <= |k| < 2m/3, high |k| >= 2m/3 (ky of weights2 is the negative
                row index); band b has its own B_b, S_b (its modes only), A_b of rank 2r, r and max(r // 2, 1):
                more capacity at the low frequencies, in the spirit of frequency-adaptive adapters (F-Adapter);
                dense weights as in lora.

B is zero-initialised, so at step 0 every adapted weight is the pretrained one and the model the pretrained
function; A is drawn from N(0, 1/max(in, out)) with the run's seed, S starts at one. The frozen base weights are
never updated (their optimizer transform is `optax.set_to_zero`) and stay bitwise the pretrained ones.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fno_jax.training.optim import param_path

__all__ = ["MODES", "TARGETS", "Tuning", "band_masks"]

MODES = ("full", "head", "lora", "band_adapter")
TARGETS = ("spectral", "pointwise", "head")
HEAD = ("fc1", "fc2")
# band_adapter: the bands' edges as fractions of the retained modes m, and each band's rank as a function of r.
BAND_EDGES = (1 / 3, 2 / 3)
BAND_RANKS = (lambda r: 2 * r, lambda r: r, lambda r: max(r // 2, 1))
ADAPTED = ("lora", "band_adapter")


def _target_of(module: str) -> str:
    if module.startswith("spectral_"):
        return "spectral"
    if module.startswith("pointwise_"):
        return "pointwise"
    return "head" if module in HEAD else ""


def band_masks(shape: tuple[int, ...], block: str) -> np.ndarray:
    """[3, m, m] bool: which retained modes of a spectral weight block ("weights1": ky >= 0, "weights2": ky < 0)
    lie in each band (low, mid, high)."""
    m = shape[2]
    ky = np.arange(m) if block == "weights1" else np.arange(m) - m
    kx = np.arange(shape[3])
    radius = np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    edges = [0.0, *(f * m for f in BAND_EDGES), np.inf]
    return np.stack([(radius >= lo) & (radius < hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)])


@dataclasses.dataclass(frozen=True)
class Tuning:
    """A fine-tuning mode (see the module docstring). Properties: mode, rank, targets."""

    mode: str = "full"
    rank: int = 4
    targets: tuple[str, ...] = TARGETS

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> Tuning:
        f = config.finetune
        return cls(str(f.mode), int(f.rank), tuple(f.lora_targets))

    @property
    def adapted(self) -> bool:
        """Whether the params are {"base", "adapters"} (lora, band_adapter) rather than the FNO's."""
        return self.mode in ADAPTED

    # ---- params ------------------------------------------------------------------------------------------------
    def init(self, key: jax.Array, base: Any) -> Any:
        """The train state's params for the pretrained (or fresh) FNO params `base`."""
        if not self.adapted:
            return base
        adapters: dict[str, dict[str, Any]] = {}
        for path, weight in jax.tree_util.tree_leaves_with_path(base):
            module, leaf = param_path(path).split("/")
            target = _target_of(module)
            if target not in self.targets or leaf not in ("kernel", "weights1", "weights2"):
                continue
            key, sub = jax.random.split(key)
            adapters.setdefault(module, {})[leaf] = self._adapter(sub, np.shape(weight), leaf, weight.dtype)
        return {"base": base, "adapters": adapters}

    def _adapter(self, key, shape: tuple[int, ...], leaf: str, dtype) -> dict:
        if leaf == "kernel":
            return _low_rank(key, shape[0], shape[1], min(self.rank, shape[0], shape[1]), None, dtype)
        if self.mode == "lora":
            return _low_rank(key, shape[0], shape[1], self.rank, shape[2:], dtype)
        keys = jax.random.split(key, len(BAND_RANKS))
        bands = ("low", "mid", "high")
        return {
            band: _low_rank(k, shape[0], shape[1], rank(self.rank), shape[2:], dtype)
            for band, rank, k in zip(bands, BAND_RANKS, keys, strict=True)
        }

    def model_params(self, params: Any) -> Any:
        """The FNO params the forward pass uses: the params themselves, or each adapted weight W + Delta."""
        if not self.adapted:
            return params
        base, adapters = params["base"], params["adapters"]
        out = {module: dict(leaves) for module, leaves in base.items()}
        for module, leaves in adapters.items():
            for leaf, adapter in leaves.items():
                weight = base[module][leaf]
                out[module][leaf] = weight + _delta(adapter, np.shape(weight), leaf).astype(weight.dtype)
        return out

    # ---- what trains -------------------------------------------------------------------------------------------
    def labels(self, params: Any) -> Any:
        """ "trainable" or "frozen" for every leaf of `params`."""

        def label(path, _):
            name = param_path(path)
            if self.mode == "full":
                return "trainable"
            if self.mode == "head":
                return "trainable" if name.split("/")[0] in HEAD else "frozen"
            return "trainable" if name.startswith("adapters/") else "frozen"

        return jax.tree_util.tree_map_with_path(label, params)

    def trainable_count(self, params: Any) -> int:
        """The scalars that train (a band's S counts only its own modes)."""
        total = 0
        leaves = jax.tree_util.tree_leaves_with_path(params)
        for (path, leaf), label in zip(leaves, jax.tree_util.tree_leaves(self.labels(params)), strict=True):
            if label != "trainable":
                continue
            parts = param_path(path).split("/")
            if self.mode == "band_adapter" and parts[0] == "adapters" and len(parts) == 5 and parts[-1] == "S":
                _, _, block, band, _ = parts
                rank, m, _, parts_re_im = np.shape(leaf)
                mask = band_masks((0, 0, m, m), block)[("low", "mid", "high").index(band)]
                total += int(rank) * int(mask.sum()) * int(parts_re_im)
            else:
                total += int(np.size(leaf))
        return total


def _low_rank(key, d_in: int, d_out: int, rank: int, modes: tuple[int, ...] | None, dtype) -> dict:
    """B [in, r] zeros, A [r, out] ~ N(0, 1/max(in, out)); spectral adapters also S [r, *modes] ones."""
    scale = 1.0 / math.sqrt(max(d_in, d_out))
    out = {
        "B": jnp.zeros((d_in, rank), dtype),
        "A": (scale * jax.random.normal(key, (rank, d_out))).astype(dtype),
    }
    if modes is not None:
        out["S"] = jnp.ones((rank, *modes), dtype)
    return out


def _delta(adapter: dict, shape: tuple[int, ...], leaf: str) -> jax.Array:
    """The update an adapter makes to a weight of `shape` (see the module docstring)."""
    if "B" in adapter:
        if "S" not in adapter:
            return adapter["B"] @ adapter["A"]
        return jnp.einsum("ij,jyxc,jo->ioyxc", adapter["B"], adapter["S"], adapter["A"])
    masks = band_masks(shape, leaf)
    total = 0.0
    for i, band in enumerate(("low", "mid", "high")):
        a = adapter[band]
        scale = a["S"] * jnp.asarray(masks[i], a["S"].dtype)[None, :, :, None]
        total = total + jnp.einsum("ij,jyxc,jo->ioyxc", a["B"], scale, a["A"])
    return total
