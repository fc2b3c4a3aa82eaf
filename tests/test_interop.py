"""Reference state_dict interop: same forward pass as an independent numpy implementation."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from fno_jax.interop import export_reference_state_dict, load_reference_state_dict

WIDTH, MODES, DEPTH, FC, IN, OUT = 6, 3, 3, 10, 4, 2


def _state_dict(seed=0, width=WIDTH, modes=MODES, depth=DEPTH, fc=FC, cin=IN, cout=OUT):
    rng = np.random.default_rng(seed)
    state = {
        "fc0.weight": rng.normal(size=(width, cin)),
        "fc0.bias": rng.normal(size=(width,)),
        "fc1.weight": rng.normal(size=(fc, width)) / np.sqrt(width),
        "fc1.bias": rng.normal(size=(fc,)),
        "fc2.weight": rng.normal(size=(cout, fc)) / np.sqrt(fc),
        "fc2.bias": rng.normal(size=(cout,)),
    }
    for i in range(depth):
        for name in ("weights1", "weights2"):
            state[f"sp_convs.{i}.{name}"] = rng.normal(size=(width, width, modes, modes, 2)) / width
        state[f"ws.{i}.weight"] = rng.normal(size=(width, width, 1)) / np.sqrt(width)
        state[f"ws.{i}.bias"] = rng.normal(size=(width,))
    return state


def _gelu(x):
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def _numpy_forward(state, x):
    """The reference layout written directly in numpy, fields [B, C, y, x], float64."""
    depth = sum(1 for k in state if k.endswith(".weights1"))
    h = x @ state["fc0.weight"].T + state["fc0.bias"]  # [B, y, x, width]
    h = np.transpose(h, (0, 3, 1, 2))
    _, _, ny, nx = h.shape
    for i in range(depth):
        w1 = state[f"sp_convs.{i}.weights1"]
        w2 = state[f"sp_convs.{i}.weights2"]
        m = w1.shape[2]
        w1 = w1[..., 0] + 1j * w1[..., 1]
        w2 = w2[..., 0] + 1j * w2[..., 1]
        h_ft = np.fft.rfft2(h, norm="ortho")
        out_ft = np.zeros((h.shape[0], w1.shape[1], ny, nx // 2 + 1), complex)
        out_ft[:, :, :m, :m] = np.einsum("bixy,ioxy->boxy", h_ft[:, :, :m, :m], w1)
        out_ft[:, :, -m:, :m] = np.einsum("bixy,ioxy->boxy", h_ft[:, :, -m:, :m], w2)
        spectral = np.fft.irfft2(out_ft, s=(ny, nx), norm="ortho")
        local = np.einsum("oi,bixy->boxy", state[f"ws.{i}.weight"][:, :, 0], h)
        h = spectral + local + state[f"ws.{i}.bias"][None, :, None, None]
        if i < depth - 1:
            h = _gelu(h)
    h = np.transpose(h, (0, 2, 3, 1))
    h = _gelu(h @ state["fc1.weight"].T + state["fc1.bias"])
    return h @ state["fc2.weight"].T + state["fc2.bias"]


@pytest.mark.parametrize(("ny", "nx"), [(8, 8), (6, 10)])
def test_matches_numpy_reference(x64, ny, nx):
    state = _state_dict()
    model, params = load_reference_state_dict(state, dtype=jnp.float64)
    assert (model.width, model.modes, model.depth, model.fc_dim, model.out_dim) == (
        WIDTH,
        MODES,
        DEPTH,
        FC,
        OUT,
    )
    x = np.random.default_rng(1).normal(size=(2, ny, nx, IN))
    got = jax.jit(model.apply)({"params": params}, jnp.asarray(x))
    want = _numpy_forward(state, x)
    assert got.dtype == jnp.float64 and got.shape == want.shape
    # Same float64 operations in a different order: agreement to ~1e-13 of the O(1) output.
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-12)


def test_modes_at_nyquist_limit(x64):
    # modes = n // 2: the two row blocks tile all ky rows without overlap.
    state = _state_dict(modes=4, depth=1)
    model, params = load_reference_state_dict(state, dtype=jnp.float64)
    x = np.random.default_rng(2).normal(size=(1, 8, 8, IN))
    got = jax.jit(model.apply)({"params": params}, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got), _numpy_forward(state, x), rtol=0, atol=1e-12)


def test_export_round_trip():
    state = {k: v.astype(np.float32) for k, v in _state_dict().items()}
    _, params = load_reference_state_dict(state)
    back = export_reference_state_dict(params)
    assert set(back) == set(state)
    for key in state:
        np.testing.assert_array_equal(back[key], state[key], err_msg=key)
    assert set(export_reference_state_dict({"params": params})) == set(state)


def test_export_of_fno_params_reloads_to_same_function():
    from fno_jax.model import FNO

    model = FNO(width=5, modes=2, depth=2, fc_dim=7, out_dim=1)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 3)), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(1), x)["params"]
    rng = np.random.default_rng(4)
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), shapes)
    reloaded, params2 = load_reference_state_dict(export_reference_state_dict(params))
    assert reloaded == model
    apply = jax.jit(model.apply)
    np.testing.assert_array_equal(np.asarray(apply({"params": params}, x)), np.asarray(apply({"params": params2}, x)))


def test_bad_state_dicts():
    state = _state_dict()
    missing = dict(state)
    del missing["ws.1.bias"]
    with pytest.raises(ValueError, match=r"missing keys \['ws.1.bias'\]"):
        load_reference_state_dict(missing)
    extra = dict(state, **{"fc3.weight": np.zeros((1, 1))})
    with pytest.raises(ValueError, match="unexpected keys"):
        load_reference_state_dict(extra)
    wrong = dict(state, **{"sp_convs.1.weights2": np.zeros((WIDTH, WIDTH, 2, 2, 2))})
    with pytest.raises(ValueError, match="sp_convs.1.weights2"):
        load_reference_state_dict(wrong)
    wrong = dict(state, **{"fc1.bias": np.zeros(FC + 1)})
    with pytest.raises(ValueError, match="fc1.bias"):
        load_reference_state_dict(wrong)
    with pytest.raises(ValueError, match="no Fourier layers"):
        load_reference_state_dict({k: v for k, v in state.items() if k.startswith("fc")})
    with pytest.raises(ValueError, match="FNO params"):
        export_reference_state_dict({"lift": {}, "fc1": {}})


def test_matches_torch_reference():
    torch = pytest.importorskip("torch")
    from benchmarks.reference_torch import make_reference_model

    torch.manual_seed(0)
    reference = make_reference_model(WIDTH, MODES, DEPTH, FC, IN, OUT).double()
    model, params = load_reference_state_dict(reference.state_dict(), dtype=jnp.float32)
    x = np.random.default_rng(3).normal(size=(2, 8, 8, IN))
    with torch.no_grad():
        want = reference(torch.from_numpy(x)).numpy()
    got = model.apply({"params": params}, jnp.asarray(x, jnp.float32))
    # float32 JAX vs float64 torch: a few float32 ulps of the O(1) output per layer.
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-4)
    # And the export is loadable by the torch module (same keys and shapes).
    state = {k: torch.from_numpy(v) for k, v in export_reference_state_dict(params).items()}
    reference.float().load_state_dict(state)


@pytest.mark.skipif(
    not os.environ.get("FNO_BASELINE_REPO"), reason="set FNO_BASELINE_REPO to a checkout of the paper's code"
)
def test_matches_the_papers_own_model():
    # The paper's released FNN2d (models/fno.py), built as its fno(params) builds it, loaded through interop.
    torch = pytest.importorskip("torch")
    sys.path.insert(0, os.environ["FNO_BASELINE_REPO"])
    try:
        from models.fno import FNN2d
    finally:
        sys.path.pop(0)
    torch.manual_seed(0)
    paper = FNN2d(
        [MODES] * DEPTH,
        [MODES] * DEPTH,
        width=WIDTH,
        fc_dim=FC,
        layers=[WIDTH] * (DEPTH + 1),
        in_dim=IN,
        out_dim=OUT,
        activation="gelu",
    )
    model, params = load_reference_state_dict(paper.state_dict())
    x = np.random.default_rng(5).normal(size=(2, 8, 10, IN)).astype(np.float32)
    with torch.no_grad():
        want = paper(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    got = np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(x)))
    # Both float32 (the paper's spectral layer casts to float32 itself): a few float32 ulps per layer.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * float(np.abs(want).max()))
