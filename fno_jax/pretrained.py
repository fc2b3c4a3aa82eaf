"""Pretrained bundles: a trained FNO as a self-contained directory that loads in one line, with its model card.

    BUNDLE/params.safetensors   the params, one tensor per leaf, named by its '/'-joined path in the param tree
                                ("lift/kernel", "spectral_0/weights1", ...; `fno_jax.training.optim.param_path`)
    BUNDLE/card.json            what the model is and how it was made (below)
    BUNDLE/README.md            the model card in words (`fno_jax.storage.model_card`)

    model, params, card = fno_jax.pretrained.load("BUNDLE")      # checks the weights' sha256 against the card
    u = fno_jax.model.predict(params, {"source": f, "coeffs": c}, model=model,
                              norm=fno_jax.pretrained.norm_stats(card), length=card["length"])

card.json: `format`, `format_version`; `model` (width, modes, depth, fc_dim, out_dim); `layout` and `channels` (the
input channels in order); `norm_stats` (`NormStats.to_dict`); `length` (the side L of the periodic domain [0, L)^2,
which the input normalization depends on); `task`, `task_spec`, `task_ranges`; `training_data`
(source, seed, data_seed, num_train, num_train_pool, num_val, num_test, resolution, length); `training` (mode, steps,
step, best_step, batch_size, learning_rate, select_by, init_from); `test_metrics` (`test_rel_l2`, the paper's metric,
and the others of `fno_jax.training.metrics`; empty when the exported step was not the one tested); `num_params`;
`fno_jax_version`; `provenance`; `run_config`; `weights` (file, sha256, dtype); `checksum` (over the card itself,
`fno_jax.storage.integrity`). Fields a bundle cannot know (a
bundle made from a PyTorch state_dict has no training data) are null.

Bundles come from a workdir (`python -m fno_jax.export`, `fno_jax.export.export_bundle`) or from the paper's PyTorch
state_dict (`fno_jax.interop.bundle_from_state_dict`); `config.init_from` accepts one in place of a workdir.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fno_jax.model import FNO, channels
from fno_jax.model.normalization import NormStats
from fno_jax.runtime.cli_errors import UserError
from fno_jax.storage import integrity, paths
from fno_jax.training.optim import param_path

__all__ = [
    "BundleError",
    "Operator",
    "available",
    "base_of",
    "bundle_path",
    "flatten_params",
    "is_bundle",
    "load",
    "norm_stats",
    "operator",
    "read_card",
    "resolve",
    "write_bundle",
]

FORMAT = "fno-jax-bundle"
FORMAT_VERSION = 1
PARAMS_FILE = "params.safetensors"
CARD_FILE = "card.json"
README_FILE = "README.md"
MODEL_KEYS = ("width", "modes", "depth", "fc_dim", "out_dim")
# What every card must say for the model to be usable at all; the rest may be null.
REQUIRED = ("model", "layout", "norm_stats", "length")


class BundleError(UserError, ValueError):
    """A directory that is not a loadable bundle (missing files, wrong format, weights that fail their hash)."""


def is_bundle(path: str | os.PathLike) -> bool:
    """Whether `path` is a bundle directory (it holds card.json), as opposed to a workdir."""
    return paths.isfile(paths.join(path, CARD_FILE))


def _by_path(tree: Mapping[str, Any]) -> dict[str, Any]:
    """{"spectral_0/weights1": leaf, ...}: the leaves of a param tree by '/'-joined path."""
    return {param_path(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def flatten_params(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The leaves of a param tree as contiguous numpy arrays by '/'-joined path (the names in params.safetensors)."""
    return {name: np.ascontiguousarray(np.asarray(leaf)) for name, leaf in _by_path(params).items()}


def unflatten_params(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Inverse of `flatten_params`: a nested dict of numpy arrays."""
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_bundle(out: str | os.PathLike, params: Mapping[str, Any], card: Mapping[str, Any]) -> dict[str, Any]:
    """Write a bundle of `params` described by `card` (the fields of the module docstring; `model`, `layout` and
    `norm_stats` required) to the new directory `out`; returns the complete card (with `weights`, `num_params`).

    Locally the directory is written next to `out` and renamed into place, so a bundle is never seen half-written.
    On GCS (`gs://`), which has no directory rename, the weights and README.md are written first and card.json last:
    without its card a directory is no bundle, and the card carries the weights' sha256, so a bundle cut short is
    refused (`read_card`), never taken for a whole one.
    """
    from safetensors.numpy import save

    from fno_jax.storage.model_card import model_card

    out = paths.abspath(out)
    missing = [key for key in REQUIRED if card.get(key) is None]
    if missing:
        raise BundleError(f"a bundle's card needs {list(REQUIRED)}; {missing} missing.")
    if paths.is_remote(out) and paths.exists(out):  # GCS has no empty directories: anything there is content
        raise BundleError(f"{out} already exists; choose another output directory or remove it first.")
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise BundleError(f"{out} already exists; choose another output directory or remove it first.")
    flat = flatten_params(params)
    data = save(flat, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    dtypes = sorted({str(v.dtype) for v in flat.values()})
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, **card}
    full["num_params"] = int(sum(v.size for v in flat.values()))
    full["weights"] = {"file": PARAMS_FILE, "sha256": _sha256(data), "dtype": ",".join(dtypes)}
    # Sealed: a changed byte that still parses (a digit of a statistic) is an error, not another model.
    full = integrity.seal(json.loads(json.dumps(full)))
    if paths.is_remote(out):
        _write_remote_bundle(out, data, full, model_card(full))
        return full
    parent = os.path.dirname(out)
    # Written beside `out` (same file system) and renamed into place; os.mkdir applies the umask, so the bundle
    # gets ordinary permissions for sharing.
    staging = os.path.join(parent, f".{os.path.basename(out)}.{uuid.uuid4().hex[:8]}.partial")
    try:
        os.makedirs(parent, exist_ok=True)
        os.mkdir(staging)
    except OSError as err:
        raise BundleError(f"cannot create {out} ({err.strerror}); choose a directory you can write to.") from err
    try:
        with open(os.path.join(staging, PARAMS_FILE), "wb") as f:
            f.write(data)
        with open(os.path.join(staging, CARD_FILE), "w") as f:
            json.dump(full, f, indent=2)
            f.write("\n")
        with open(os.path.join(staging, README_FILE), "w") as f:
            f.write(model_card(full))
        if os.path.isdir(out):
            os.rmdir(out)  # empty (checked above)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return full


def _write_remote_bundle(out: str, data: bytes, card: dict[str, Any], readme: str) -> None:
    """A bundle at the `gs://` prefix `out`, card.json last; what was written is removed when a write fails."""
    try:
        paths.write_bytes(paths.join(out, PARAMS_FILE), data)
        paths.write_text(paths.join(out, README_FILE), readme)
        paths.write_text(paths.join(out, CARD_FILE), json.dumps(card, indent=2) + "\n")
    except BaseException:
        with contextlib.suppress(Exception):
            paths.rmtree(out)
        raise


def read_card(path: str | os.PathLike) -> dict[str, Any]:
    """The card.json of the bundle `path`, checked for its format; a BundleError says what is wrong."""
    path = os.fspath(path)
    card_path = paths.join(path, CARD_FILE)
    if not paths.isfile(card_path):
        raise BundleError(
            f"{path} is not a pretrained bundle (no {CARD_FILE}); make one with "
            "`python -m fno_jax.export --workdir=WORKDIR --out=BUNDLE`."
        )
    try:
        card = json.loads(paths.read_bytes(card_path).decode("utf-8"))
    except (OSError, ValueError) as err:  # ValueError: not JSON, or not UTF-8
        raise BundleError(f"{card_path} cannot be read as JSON ({err}); export the bundle again.") from err
    if not isinstance(card, dict):
        raise BundleError(f"{card_path} holds {type(card).__name__}, not a card; export the bundle again.")
    try:
        sealed = integrity.verify(card, card_path)
    except integrity.ChecksumError as err:
        raise BundleError(f"{err} Export the bundle again.") from err
    if not sealed:
        raise BundleError(f"{card_path} has no checksum (it was changed or damaged); export the bundle again.")
    if card.get("format") != FORMAT or card.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{card_path} is format {card.get('format')!r} version {card.get('format_version')!r}; this fno-jax "
            f"reads {FORMAT!r} version {FORMAT_VERSION}. Export the bundle with this version."
        )
    missing = [key for key in (*REQUIRED, "weights") if card.get(key) is None]
    if missing:
        raise BundleError(f"{card_path} lacks {missing}; export the bundle again.")
    return card


def model_from_card(card: Mapping[str, Any]) -> FNO:
    """The float32 FNO a card describes."""
    return FNO(**{key: int(card["model"][key]) for key in MODEL_KEYS}, padding=int(card["model"].get("padding", 0)))


def _check_tree(params: Mapping[str, Any], model: FNO, layout: str, where: str) -> None:
    """The params must be exactly the model's tree (names and shapes) for the layout's channel count."""
    dummy = jnp.zeros((1, 2 * model.modes, 2 * model.modes, channels.num_channels(layout)), jnp.float32)
    expected = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), dummy)["params"])
    want = {name: tuple(v.shape) for name, v in _by_path(expected).items()}
    have = {name: tuple(np.shape(v)) for name, v in _by_path(params).items()}
    if want != have:
        diff = sorted(n for n in set(want) | set(have) if want.get(n) != have.get(n))
        detail = "; ".join(f"{n}: file {have.get(n)} vs card {want.get(n)}" for n in diff[:6])
        raise BundleError(f"the weights in {where} do not fit the model its card describes ({detail}).")


def load(path: str | os.PathLike) -> tuple[FNO, dict[str, Any], dict[str, Any]]:
    """(model, params, card) of the bundle `path`: an `FNO` (float32), its params (a nested dict of numpy arrays,
    used as `model.apply({"params": params}, x)`), and card.json as a dict.

    The weights' sha256 must match the card's, and their names and shapes the card's model: a modified or truncated
    bundle is refused with a BundleError. An adapter bundle (its card has `adapter`) is loaded on top of its base
    bundle, found by the path it names (relative to the adapter bundle, then as written) and checked by its sha256;
    the params are the base's with the adapters merged (`fno_jax.training.tuning`).
    """
    path = os.fspath(path)
    card = read_card(path)
    if card.get("adapter"):
        return _load_adapter(path, card)
    params = _read_weights(path, card)
    model = model_from_card(card)
    _check_tree(params, model, card["layout"], path)
    return model, params, card


def _read_weights(path: str, card: Mapping[str, Any]) -> dict[str, Any]:
    """The bundle's params.safetensors as a nested dict, checked against the card's sha256."""
    from safetensors.numpy import load as load_safetensors

    weights = paths.join(path, card["weights"].get("file", PARAMS_FILE))
    try:
        data = paths.read_bytes(weights)
    except OSError as err:
        raise BundleError(f"the weights of bundle {path} cannot be read ({err}); export the bundle again.") from err
    if _sha256(data) != card["weights"].get("sha256"):
        raise BundleError(
            f"{weights} does not match the sha256 in {CARD_FILE} (the file was changed, truncated or replaced); "
            "export the bundle again or restore the original file."
        )
    return unflatten_params(load_safetensors(data))


def base_of(path: str | os.PathLike, card: Mapping[str, Any]) -> str:
    """The directory of an adapter bundle's base bundle: the path its card names, relative to the adapter bundle
    or as written; a BundleError when neither is a bundle."""
    base = card["adapter"]["base"]
    relative = base.get("relative_path")
    candidates = [paths.normpath(paths.join(path, relative)) if relative else "", base.get("path") or ""]
    for candidate in candidates:
        if candidate and is_bundle(candidate):
            return candidate
    raise BundleError(
        f"the base bundle of adapter bundle {path} is not at {base.get('relative_path')!r} (relative to it) nor at "
        f"{base.get('path')!r}; put the base bundle (sha256 {base.get('sha256')}) back there."
    )


def _load_adapter(path: str, card: Mapping[str, Any]) -> tuple[FNO, dict[str, Any], dict[str, Any]]:
    from fno_jax.training.tuning import Tuning

    base_path = base_of(path, card)
    model, base, base_card = load(base_path)
    spec = card["adapter"]
    if base_card["weights"]["sha256"] != spec["base"]["sha256"]:
        raise BundleError(
            f"the base bundle {base_path} of adapter bundle {path} holds other weights (sha256 "
            f"{base_card['weights']['sha256']}) than the adapters were trained on ({spec['base']['sha256']}); put the "
            "right base bundle there."
        )
    adapters = _read_weights(path, card)
    tuning = Tuning(spec["mode"], int(spec["rank"]), tuple(spec["targets"]))
    try:
        merged = tuning.model_params({"base": base, "adapters": adapters})
    except (KeyError, TypeError, ValueError) as err:
        raise BundleError(f"the adapters in {path} do not fit their base bundle {base_path} ({err}).") from err
    params = jax.tree_util.tree_map(np.asarray, merged)
    _check_tree(params, model, card["layout"], path)
    return model, params, card


def norm_stats(card: Mapping[str, Any]) -> NormStats:
    """The normalization statistics a bundle's model expects its inputs scaled with."""
    return NormStats.from_dict(card["norm_stats"], num_coefficients=channels.num_channels(card["layout"]) - 1)


# ---- shipped bundles ----------------------------------------------------------------------------------------------
# Bundles installed with the package, by name (fno_jax/bundles/<name>/; docs/results says how each was made).
SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bundles")


def available() -> list[str]:
    """The names of the bundles shipped with fno-jax (loadable offline by name)."""
    if not os.path.isdir(SHIPPED_DIR):
        return []
    return sorted(name for name in os.listdir(SHIPPED_DIR) if is_bundle(os.path.join(SHIPPED_DIR, name)))


def bundle_path(name: str) -> str:
    """The directory of the shipped bundle `name`; a BundleError listing the shipped ones when there is none."""
    path = os.path.join(SHIPPED_DIR, name)
    if os.sep in name or not is_bundle(path):
        raise BundleError(f"no shipped bundle named {name!r}; fno_jax.pretrained.available() lists {available()}.")
    return path


def resolve(path_or_name: str | os.PathLike) -> str:
    """A bundle directory, or the name of a shipped bundle, as a bundle directory."""
    path = os.fspath(path_or_name)
    if is_bundle(path):
        return path
    if os.sep not in path and path in available():
        return bundle_path(path)
    raise BundleError(
        f"{path!r} is neither a bundle directory (with {CARD_FILE}) nor a shipped bundle ({available()}); export one "
        "with python -m fno_jax.export."
    )


# ---- the operator ---------------------------------------------------------------------------------------------------
@jax.tree_util.register_pytree_node_class
class Operator:
    """A pretrained solution operator: call it with a solvers task batch, `op(batch)`, or with physical inputs,
    `op(source, diffusion=K, velocity=v, omega=w)` (Darcy: `permeability=a` [B, n, n]), and get the solution
    u [B, n, n] in physical units, at any
    resolution n (>= 2 x the model's modes) on the card's domain [0, L)^2.

    It takes care of the bundle's input channels (`fno_jax.model.channels`) and normalization (the card's
    statistics). A pytree whose leaves are the params: `jax.jit`, `jax.vmap` and `jax.grad` (with respect to the
    inputs, or to `op.params`) work through it. `op.card`, `op.model`, `op.params`, `op.layout`, `op.norm_stats`.
    """

    def __init__(self, model: FNO, params: Any, card: Mapping[str, Any]):
        self.model, self.params, self.card = model, params, card
        self.layout = card["layout"]
        self.norm_stats = norm_stats(card)
        self.length = float(card["length"])

    def tree_flatten(self):
        return (self.params,), _Static(self.model, self.card)

    @classmethod
    def tree_unflatten(cls, static: _Static, leaves):
        op = cls.__new__(cls)
        op.model, op.card, op.params = static.model, static.card, leaves[0]
        op.layout, op.norm_stats, op.length = op.card["layout"], norm_stats(op.card), float(op.card["length"])
        return op

    def __call__(self, source, *, diffusion=None, velocity=None, omega=None, permeability=None) -> jax.Array:
        from fno_jax.model import predict

        batch = source
        if not isinstance(source, Mapping):
            batch = _physical_batch(source, diffusion, velocity, omega)
            if permeability is not None:
                batch["permeability"] = jnp.asarray(permeability)
        inputs = {"source": jnp.asarray(batch["source"]), "coeffs": channels.coefficients(batch, self.layout)}
        if channels.field_channels(self.layout):
            inputs["fields"] = channels.fields(batch, self.layout)
        if inputs["source"].ndim != 3:
            raise ValueError(
                f"source must have shape [B, n, n], got {inputs['source'].shape}; add a batch axis with source[None]."
            )
        return predict(self.params, inputs, model=self.model, norm=self.norm_stats, length=self.length)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={self.card['model'][k]}" for k in ("width", "modes", "depth"))
        return f"Operator({self.card.get('task')!r}, layout={self.layout!r}, {sizes})"


class _Static:
    """An operator's static part (model and card), hashable by identity of the card's checksum, so that `jax.jit`
    caches one program per bundle."""

    def __init__(self, model: FNO, card: Mapping[str, Any]):
        self.model, self.card = model, card
        self._key = (model, json.dumps(card, sort_keys=True, default=str))

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Static) and self._key == other._key


def _physical_batch(source, diffusion, velocity, omega) -> dict[str, Any]:
    """A batch dict from physical inputs; a coefficient not given is zero (a PDE without it)."""
    source = jnp.asarray(source)
    b = source.shape[0] if source.ndim else 0
    return {
        "source": source,
        "diffusion": jnp.zeros((b, 2, 2), source.dtype) if diffusion is None else jnp.asarray(diffusion),
        "velocity": jnp.zeros((b, 2), source.dtype) if velocity is None else jnp.asarray(velocity),
        "omega": jnp.zeros((b,), source.dtype) if omega is None else jnp.asarray(omega),
    }


def operator(path_or_name: str | os.PathLike) -> Operator:
    """The pretrained operator of a bundle directory or of a shipped bundle's name (`available()`)."""
    model, params, card = load(resolve(path_or_name))
    return Operator(model, jax.tree_util.tree_map(jnp.asarray, params), card)
