"""Channel layouts: exact channel order, constant coefficient fields, clear errors."""

import jax.numpy as jnp
import numpy as np
import pytest

from fno_jax.model import channels


def _batch():
    diffusion = np.array([[[1.0, 2.0], [2.0, 3.0]], [[4.0, 5.0], [5.0, 6.0]]])
    return {
        "source": np.arange(2 * 4 * 4, dtype=np.float64).reshape(2, 4, 4),
        "diffusion": diffusion,
        "velocity": np.array([[7.0, 8.0], [9.0, 10.0]]),
        "omega": np.array([11.0, 12.0]),
    }


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("poisson", [[1, 3, 2], [4, 6, 5]]),
        ("advection_diffusion", [[1, 3, 2, 7, 8], [4, 6, 5, 9, 10]]),
        ("helmholtz", [[1, 11], [4, 12]]),
        ("mixed", [[1, 3, 2, 7, 8, 11], [4, 6, 5, 9, 10, 12]]),
    ],
)
def test_coefficients_follow_layout_order(x64, layout, expected):
    coeffs = channels.coefficients(_batch(), layout)
    np.testing.assert_array_equal(np.asarray(coeffs), np.array(expected, dtype=np.float64))
    assert coeffs.shape[1] == channels.num_channels(layout) - 1 == len(channels.LAYOUTS[layout]) - 1


def test_num_channels():
    assert {k: channels.num_channels(k) for k in channels.LAYOUTS} == {
        "poisson": 4,
        "advection_diffusion": 6,
        "helmholtz": 3,
        "darcy": 2,
        "mixed": 7,
    }


def test_assemble_inputs_constant_fields(x64):
    batch = _batch()
    coeffs = channels.coefficients(batch, "mixed")
    inputs = channels.assemble_inputs(batch["source"], coeffs)
    assert inputs.shape == (2, 4, 4, 7)
    np.testing.assert_array_equal(inputs[..., 0], batch["source"])
    for b in range(2):
        for c in range(6):
            np.testing.assert_array_equal(inputs[b, :, :, c + 1], np.full((4, 4), coeffs[b, c]))


def test_assemble_inputs_promotes_dtype():
    inputs = channels.assemble_inputs(jnp.zeros((1, 2, 2), jnp.float32), jnp.ones((1, 3), jnp.float32))
    assert inputs.dtype == jnp.float32


def test_unknown_layout_lists_valid_names():
    with pytest.raises(ValueError, match="advection_diffusion"):
        channels.validate_layout("burgers")
    with pytest.raises(ValueError, match="unknown channel layout"):
        channels.num_channels("burgers")


def test_missing_key_and_bad_shapes():
    batch = _batch()
    del batch["velocity"]
    with pytest.raises(ValueError, match="velocity"):
        channels.coefficients(batch, "advection_diffusion")
    channels.coefficients(batch, "poisson")  # velocity is not needed there
    with pytest.raises(ValueError, match=r"\[B, 2, 2\]"):
        channels.coefficients({"diffusion": np.zeros((2, 4))}, "poisson")
    with pytest.raises(ValueError, match=r"\[B, ny, nx\]"):
        channels.assemble_inputs(np.zeros((4, 4)), np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"\[B, C-1\]"):
        channels.assemble_inputs(np.zeros((2, 4, 4)), np.zeros((3, 3)))
