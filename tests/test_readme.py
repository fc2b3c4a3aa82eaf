"""The README's Python examples run as written, and every number or message they print is the one their comments
claim.

Each ```python block runs with `print` replaced by a recorder of the printed values and the README line that printed
them. Every printing line must have an entry in CLAIMS (keyed by the line's text, so a block may move), and every
entry must still be in the README: a new example that prints something comes with its check here. A claim "~x" holds
to half a unit in the last digit it shows; "~1e-7" to its order of magnitude (below 1e-6).
"""

import os
import re
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _in_float32_rounding(printed, namespace):
    (value,) = printed
    assert 0 <= value < 1e-6, value  # "~1e-7 in float32": a few float32 roundings of O(1e-2) values


def _darcy_iterations_and_agreement(printed, namespace):
    iterations, difference = printed
    # "~13 iterations each": the PCG count of every problem; "~1e-9": the sampler's solve and this one agree to
    # float32 rounding of u ~ 1e-2 (the same solver, the same inputs).
    assert np.all(np.abs(np.asarray(iterations) - 13) <= 1), iterations
    assert 0 <= difference < 1e-7, difference


def _recovered_coefficients(printed, namespace):
    (params,) = printed
    np.testing.assert_allclose(np.asarray(params), [3.0, 0.4], rtol=0, atol=0.05)


def _vmap_and_batched_shapes_and_equality(printed, namespace):
    shape, difference, domain_shape = printed
    n = namespace["n"]
    assert (shape, domain_shape) == ((64, n, n), (8, n, n))  # "[64, n, n]", "[8, n, n]"
    assert difference == 0.0  # "batched arrays: the same"


def _positive_definite_message(printed, namespace):
    (message,) = printed
    assert str(message).startswith("diffusion must be positive definite: "), message


def _resonant_omegas(printed, namespace):
    (omegas,) = printed
    np.testing.assert_allclose(omegas, [0.0, 0.395, 0.790, 1.579, 1.974, 3.158], rtol=0, atol=5e-4)


def _dropped_fraction(printed, namespace):
    (fraction,) = printed
    # The part of f with no solution is what the residual against the full source is left with ("= minus the
    # dropped part of f" two lines below): ||r|| / ||f||, to float32 rounding.
    f, r = np.asarray(namespace["f"], np.float64), np.asarray(namespace["r"], np.float64)
    assert 0 < fraction < 1
    np.testing.assert_allclose(fraction, np.linalg.norm(r) / np.linalg.norm(f), rtol=1e-4)


def _resonance_message(printed, namespace):
    (error,) = printed
    assert isinstance(error, ValueError) and str(error).startswith("helmholtz: omega = 1.973921 is resonant: "), error


def _shipped_bundles(printed, namespace):
    (names,) = printed
    assert names == ["poisson-e1_5-32"], names


# The text of each printing README line -> its check(printed values, the block's variables after it ran).
CLAIMS = {
    'print(float(abs(u - batch["solution"]).max()))  # ~1e-7 in float32': _in_float32_rounding,
    "print(params)  # ~[3.0, 0.4]": _recovered_coefficients,
    'print(info.iterations, float(abs(u - batch["solution"]).max()))  # ~13 iterations each; ~1e-9 in float32': (
        _darcy_iterations_and_agreement
    ),
    "print(u.shape, float(jnp.max(jnp.abs(u - same))), v.shape)": _vmap_and_batched_shapes_and_equality,
    "print(err.get())  # diffusion must be positive definite: ... (err.throw() raises it)": _positive_definite_message,
    "print(solvers.resonant_omegas(6))  # [0. 0.395 0.790 1.579 1.974 3.158]": _resonant_omegas,
    "print(float(solvers.helmholtz_dropped_fraction(f, omega)))  # the part of f with no solution": _dropped_fraction,
    "print(err)  # helmholtz: omega = 1.973921 is resonant: ...": _resonance_message,
    "print(fno_jax.pretrained.available())  # ['poisson-e1_5-32']": _shipped_bundles,
}


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number of the block's first line in the README, code) of every ```python block."""
    return [
        (text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in re.finditer(r"```python\n(.*?)```", text, flags=re.S)
    ]


def run_block(first: int, code: str) -> tuple[dict[int, list[tuple]], dict]:
    """Run one block; ({README line: [the values each print call there printed]}, the block's variables)."""
    printed: dict[int, list[tuple]] = {}

    def record(*args, **_):
        printed.setdefault(sys._getframe(1).f_lineno, []).append(args)

    namespace = {"print": record}
    # Padded so that tracebacks and the recorder see README line numbers.
    exec(compile("\n" * (first - 1) + code, "README.md", "exec"), namespace)
    return printed, namespace


def test_readme_python_examples_run_and_print_what_their_comments_claim():
    text = open(os.path.join(ROOT, "README.md")).read()
    lines = text.splitlines()
    blocks = python_blocks(text)
    assert blocks, "README.md has no ```python example"
    checked = set()
    for first, code in blocks:
        printed, namespace = run_block(first, code)
        written = {n for n in range(first, first + len(code.splitlines())) if "print(" in lines[n - 1]}
        for number in sorted(written | set(printed)):
            line = lines[number - 1].strip()
            assert line in CLAIMS, f"README.md:{number} prints without a check; add its claim to CLAIMS: {line}"
            assert printed.get(number), f"README.md:{number} never printed: {line}"
            for values in printed[number]:
                CLAIMS[line](values, namespace)
            checked.add(line)
    assert not set(CLAIMS) - checked, f"CLAIMS for lines no longer in the README: {sorted(set(CLAIMS) - checked)}"
