"""Specifications of the Darcy solver and sampler: the finite-volume system, its order, PCG, gradients, samples.

Tolerances were fixed before the runs: 1e-10 against a dense direct solve of the same 5-point system (float64),
error ratio >= 3.5 per grid doubling for manufactured solutions, 1e-6 relative for gradients against central
differences, float32 CG to its default tol at 128 x 128 within 30 iterations and 1e-6 of the float64 solution.
"""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import solvers
from solvers import darcy_flow, families, finite_volume, permeability, random_fields, tasks
from solvers.grid import dirichlet_points

KEYS = ("source", "solution", "diffusion", "velocity", "omega", "pde", "volume_fraction", "permeability")


# ---- the discrete system, built independently as a dense matrix ------------------------------------------------


def _dense_operator(a: np.ndarray, bc: str, length: float = 1.0) -> np.ndarray:
    """The 5-point flux-form matrix, node by node: harmonic-mean faces, a_P at Dirichlet boundary faces."""
    n = a.shape[0]
    h = length / (n + 1) if bc == "dirichlet" else length / n
    matrix = np.zeros((n * n, n * n))
    index = lambda j, i: j * n + i
    for j in range(n):
        for i in range(n):
            p = index(j, i)
            for dj, di in ((0, 1), (0, -1), (1, 0), (-1, 0)):
                jj, ii = j + dj, i + di
                inside = 0 <= jj < n and 0 <= ii < n
                if bc == "periodic":
                    jj, ii, inside = jj % n, ii % n, True
                if inside:
                    face = 2 * a[j, i] * a[jj, ii] / (a[j, i] + a[jj, ii])
                    matrix[p, index(jj, ii)] -= face / h**2
                else:
                    face = a[j, i]  # the boundary face: the adjacent node's value, u = 0 beyond
                matrix[p, p] += face / h**2
    return matrix


def _direct_solve(a: np.ndarray, f: np.ndarray, bc: str) -> np.ndarray:
    matrix = _dense_operator(a, bc)
    n = a.shape[0]
    if bc == "dirichlet":
        return np.linalg.solve(matrix, f.ravel()).reshape(n, n)
    # Singular (constants): border with the zero-mean condition.
    bordered = np.block([[matrix, np.ones((n * n, 1))], [np.ones((1, n * n)), np.zeros((1, 1))]])
    rhs = np.concatenate([f.ravel() - f.mean(), [0.0]])
    return np.linalg.solve(bordered, rhs)[:-1].reshape(n, n)


@pytest.mark.parametrize("bc,n", [("dirichlet", 7), ("dirichlet", 8), ("periodic", 8)])
def test_matches_dense_direct_solve(x64, bc, n):
    rng = np.random.default_rng(0)
    f = rng.standard_normal((n, n))
    for a in (np.full((n, n), 2.5), np.exp(rng.standard_normal((n, n)))):
        expected = _direct_solve(a, f, bc)
        u, info = solvers.darcy(a, f, bc=bc, tol=1e-14, return_info=True)
        np.testing.assert_allclose(u, expected, atol=1e-10 * np.abs(expected).max(), rtol=0)
        assert bool(info.converged)
        residual = solvers.darcy_residual(u, a, f, bc=bc)
        np.testing.assert_allclose(residual, (_dense_operator(a, bc) @ np.ravel(u)).reshape(n, n) - (
            f - f.mean() if bc == "periodic" else f), atol=1e-9, rtol=0)  # fmt: skip
    # Constant a: the preconditioner is the exact inverse, one iteration.
    _, info = solvers.darcy(np.full((n, n), 2.5), f, bc=bc, return_info=True)
    assert int(info.iterations) == 1


def test_operator_is_symmetric_and_dst_paths_agree(x64):
    for bc, n in (("dirichlet", 9), ("periodic", 10)):
        a = np.exp(np.random.default_rng(1).standard_normal((n, n)))
        np.testing.assert_allclose(_dense_operator(a, bc), _dense_operator(a, bc).T, atol=0, rtol=0)
    x = jnp.asarray(np.random.default_rng(2).standard_normal((3, 9, 9)))
    np.testing.assert_allclose(finite_volume._dst2_fft(x), finite_volume._dst2_matmul(x), atol=1e-12, rtol=0)


# ---- order of accuracy ------------------------------------------------------------------------------------------


def _manufactured(bc: str):
    """(u, a) smooth closed forms; u = 0 on the boundary of [0, 1]^2 (Dirichlet) or periodic with zero mean."""
    pi = jnp.pi
    if bc == "dirichlet":
        u = lambda x, y: jnp.sin(pi * x) * jnp.sin(pi * y) * jnp.exp(x - 0.5 * y)
        a = lambda x, y: jnp.exp(0.6 * jnp.sin(2 * pi * x + 1.0) * jnp.cos(pi * y))
    else:
        u = lambda x, y: jnp.sin(2 * pi * x) * jnp.cos(4 * pi * y) + 0.5 * jnp.cos(2 * pi * (x + y))
        a = lambda x, y: jnp.exp(0.6 * jnp.sin(2 * pi * x) * jnp.cos(2 * pi * y + 0.5))
    return u, a


def _source(u, a):
    """f = -div(a grad u) by automatic differentiation of the closed forms (float64)."""
    flux_x = lambda x, y: a(x, y) * jax.grad(u, 0)(x, y)
    flux_y = lambda x, y: a(x, y) * jax.grad(u, 1)(x, y)
    return lambda x, y: -(jax.grad(flux_x, 0)(x, y) + jax.grad(flux_y, 1)(x, y))


@pytest.mark.parametrize("bc", ["dirichlet", "periodic"])
def test_manufactured_solution_converges_at_second_order(x64, bc):
    u_exact, a_fn = _manufactured(bc)
    sizes = (15, 31, 63) if bc == "dirichlet" else (16, 32, 64)  # h = 1/16, 1/32, 1/64 either way
    grids = [dirichlet_points(n) if bc == "dirichlet" else jnp.arange(n) / n for n in sizes]
    meshes = [jnp.meshgrid(x, x, indexing="ij") for x in grids]
    # The closed forms at every node of the three grids in one program.
    yy = jnp.concatenate([m[0].ravel() for m in meshes])
    xx = jnp.concatenate([m[1].ravel() for m in meshes])
    fields = jax.jit(jax.vmap(lambda x, y: (u_exact(x, y), a_fn(x, y), _source(u_exact, a_fn)(x, y))))(xx, yy)
    errors, offset = [], 0
    for n in sizes:
        exact, a, f = (v[offset : offset + n * n].reshape(n, n) for v in fields)
        offset += n * n
        if bc == "periodic":
            exact = exact - jnp.mean(exact)
        u = solvers.darcy(a, f, bc=bc, tol=1e-12)
        errors.append(float(jnp.max(jnp.abs(u - exact))))
    ratios = [errors[i] / errors[i + 1] for i in range(len(errors) - 1)]
    print(f"{bc}: max errors {errors}, ratios {ratios}")
    assert min(ratios) >= 3.5, (errors, ratios)


# ---- PCG in float32, at the benchmark's size ---------------------------------------------------------------------


def test_float32_threshold_128_converges(x64):
    batch = tasks.Darcy().sample(jax.random.key(0), 4, 128, dtype=jnp.float32)
    a, f = batch["permeability"], batch["source"]
    assert set(np.unique(np.asarray(a))) == {3.0, 12.0}
    u, info = solvers.darcy(a, f, return_info=True)
    assert u.dtype == jnp.float32
    print(f"float32 CG iterations at 128 x 128: {np.asarray(info.iterations)}, residual {np.asarray(info.residual)}")
    assert np.all(np.asarray(info.converged)) and np.all(np.asarray(info.residual) <= 1e-5)
    assert np.all(np.asarray(info.iterations) <= 30)
    # The sampler's solve is this solve (compiled in another program: equal to float32 rounding).
    np.testing.assert_allclose(u, batch["solution"], atol=1e-6 * float(jnp.max(jnp.abs(u))), rtol=0)
    u64, info64 = solvers.darcy(a.astype(jnp.float64), f.astype(jnp.float64), return_info=True)
    print(f"float64 CG iterations at 128 x 128 (tol 1e-10): {np.asarray(info64.iterations)}")
    error = jnp.linalg.norm(u - u64, axis=(1, 2)) / jnp.linalg.norm(u64, axis=(1, 2))
    assert float(jnp.max(error)) <= 1e-6


def test_local_preconditioner_for_smooth_fields(x64):
    # Dirichlet here; periodic "local" solves are the log-normal periodic sampler's, checked by their residual below.
    xi = jax.vmap(lambda k: permeability.draw_xi(k, "dirichlet"))(jax.random.split(jax.random.key(1), 3))
    a, _ = permeability.permeability(xi, 15, "dirichlet", "lognormal", dtype=jnp.float64)
    f = jnp.asarray(np.random.default_rng(1).standard_normal((15, 15)))
    u_mean, info_mean = solvers.darcy(a, f, tol=1e-12, return_info=True)
    u_local, info_local = solvers.darcy(a, f, tol=1e-12, preconditioner="local", return_info=True)
    np.testing.assert_allclose(u_local, u_mean, atol=1e-10 * float(jnp.max(jnp.abs(u_mean))), rtol=0)
    assert np.all(np.asarray(info_local.iterations) < np.asarray(info_mean.iterations))


# ---- gradients --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bc,n", [("dirichlet", 7), ("periodic", 8)])
def test_gradients_match_finite_differences(x64, bc, n):
    rng = np.random.default_rng(3)
    a0 = jnp.asarray(np.exp(0.5 * rng.standard_normal((n, n))))
    f0 = jnp.asarray(rng.standard_normal((n, n)))
    weight = jnp.asarray(rng.standard_normal((n, n)))
    da, df = (jnp.asarray(rng.standard_normal((n, n))) for _ in range(2))
    loss = jax.jit(lambda a, f: jnp.sum(weight * solvers.darcy(a, f, bc=bc, tol=1e-14) ** 2))
    grad_a, grad_f = jax.jit(jax.grad(loss, argnums=(0, 1)))(a0, f0)
    eps = 1e-6
    fd_a = (loss(a0 + eps * da, f0) - loss(a0 - eps * da, f0)) / (2 * eps)
    fd_f = (loss(a0, f0 + eps * df) - loss(a0, f0 - eps * df)) / (2 * eps)
    np.testing.assert_allclose(jnp.sum(grad_a * da), fd_a, rtol=1e-6)
    np.testing.assert_allclose(jnp.sum(grad_f * df), fd_f, rtol=1e-6)
    _, jvp = jax.jit(lambda a, f: jax.jvp(loss, (a, f), (da, df)))(a0, f0)
    np.testing.assert_allclose(jvp, jnp.sum(grad_a * da) + jnp.sum(grad_f * df), rtol=1e-9)
    # Implicit differentiation: the gradient program is two linear solves (the solve and one adjoint solve) and no
    # loop outside them (reverse mode through CG's while_loop would not even trace).
    primitives = _primitives(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(a0, f0).jaxpr)
    assert primitives.count("custom_linear_solve") == 2 and "while" not in primitives, primitives


def _primitives(jaxpr) -> list[str]:
    """Primitive names of a jaxpr, inside nested jit calls but not inside custom_linear_solve's own jaxprs."""
    names = []
    for eqn in jaxpr.eqns:
        names.append(eqn.primitive.name)
        inner = eqn.params.get("jaxpr")
        if eqn.primitive.name != "custom_linear_solve" and inner is not None:
            names += _primitives(getattr(inner, "jaxpr", inner))
    return names


# ---- batching, jit, vmap ----------------------------------------------------------------------------------------


def test_batching_jit_and_vmap(x64):
    n = 9
    rng = np.random.default_rng(4)
    a = jnp.asarray(np.exp(rng.standard_normal((2, 3, n, n))))
    f = jnp.asarray(rng.standard_normal((n, n)))
    solve = lambda a, f, length=1.0: solvers.darcy(a, f, length=length, tol=1e-13)
    u, info = solvers.darcy(a, f, tol=1e-13, return_info=True)
    assert u.shape == (2, 3, n, n) and info.iterations.shape == info.residual.shape == (2, 3)
    # Every problem stops at its own tol, so programs that differ only in rounding agree to ~tol (here 1e-13;
    # compared at 1e-11 of the scale).
    atol = 1e-11 * float(jnp.max(jnp.abs(u)))
    np.testing.assert_allclose(solve(a[1, 2], f), u[1, 2], atol=atol, rtol=0)
    # jit, vmap and a traced length at once: h = L / (n + 1), so u scales as L^2.
    traced = jax.jit(jax.vmap(lambda a, length: solve(a, f, length), in_axes=(0, None)))(a, jnp.float64(2.0))
    np.testing.assert_allclose(traced, 4 * u, atol=4 * atol, rtol=0)


# ---- random fields and the sampler ------------------------------------------------------------------------------


@pytest.mark.parametrize("bc", ["dirichlet", "periodic"])
def test_random_field_has_the_stated_covariance(x64, bc):
    n, samples = 6, 2000
    xi = jax.random.normal(jax.random.key(5), (samples,) + (random_fields.num_modes(bc),) * 2, jnp.float64)
    g = random_fields.gaussian_random_field(xi, n, bc, tau=3.0, alpha=2.0)
    basis = np.asarray(random_fields.kl_basis(n, bc, dtype=jnp.float64))
    s2 = random_fields.kl_scales(bc, 1.0, 3.0, 2.0) ** 2
    variance = np.einsum("yp,pq,xq->yx", basis**2, s2, basis**2)
    # The sample variance of 2000 normals is within 5 standard deviations (sqrt(2 / 2000) = 3%) of the truth.
    np.testing.assert_allclose(np.var(np.asarray(g), axis=0), variance, rtol=0.15)
    assert abs(float(jnp.mean(g))) < 5 * np.sqrt(variance.mean() / samples)


@pytest.mark.parametrize("bc", ["dirichlet", "periodic"])
def test_permeability_distributions(bc):
    n = 15 if bc == "dirichlet" else 16
    xi = jax.vmap(lambda k: permeability.draw_xi(k, bc))(jax.random.split(jax.random.key(6), 32))
    a, fraction = (np.asarray(x) for x in permeability.permeability(xi, n, bc, "threshold"))
    assert set(np.unique(a)) == {3.0, 12.0}
    np.testing.assert_allclose(fraction, np.mean(a == 12.0, axis=(1, 2)), rtol=1e-6)
    assert abs(fraction.mean() - 0.5) < 0.1
    a, fraction = (np.asarray(x) for x in permeability.permeability(xi, n, bc, "lognormal"))
    assert np.all(a > 0)
    # The log-normal field's median is the geometric mean of the range (3, 12): 6.
    log_a = np.log(a / 6.0)
    assert abs(log_a.mean()) < 0.25 and 0.7 < log_a.std() < 1.3
    assert np.all(np.abs(fraction - np.mean(a >= 6, axis=(1, 2))) <= 1 / n**2)


@pytest.mark.parametrize("task", [tasks.Darcy(), tasks.Darcy(distribution="lognormal", bc="periodic")], ids=str)
def test_task_layout_determinism_start_and_residual(x64, task):
    key = jax.random.key(7)
    n = 15 if task.bc == "dirichlet" else 16
    batch = task.sample(key, 6, n)
    assert set(batch) == set(KEYS)
    for name in ("source", "solution", "permeability"):
        assert batch[name].shape == (6, n, n) and batch[name].dtype == jnp.float64
    assert batch["diffusion"].shape == (6, 2, 2) and batch["velocity"].shape == (6, 2)
    assert batch["omega"].shape == batch["volume_fraction"].shape == (6,)
    assert batch["pde"].dtype == jnp.int32 and np.all(np.asarray(batch["pde"]) == 3)
    for name in ("diffusion", "velocity", "omega"):
        assert not np.any(np.asarray(batch[name]))
    again = task.sample(key, 6, n)
    chunk = task.sample(key, 3, n, start=3)
    for name in KEYS:
        np.testing.assert_array_equal(batch[name], again[name])
        np.testing.assert_allclose(chunk[name], batch[name][3:], atol=1e-12, rtol=0)
    assert not np.allclose(task.sample(jax.random.key(8), 6, n)["permeability"], batch["permeability"])
    source = np.asarray(batch["source"])
    a = np.asarray(batch["permeability"])
    low, high_value = task.permeability_range
    high = a == high_value if task.distribution == "threshold" else a >= (low * high_value) ** 0.5
    assert np.all(np.abs(np.asarray(batch["volume_fraction"]) - high.mean(axis=(1, 2))) <= 1 / n**2)
    if task.bc == "dirichlet":
        assert np.all(source == 1.0) and set(np.unique(a)) == {3.0, 12.0}
    else:
        assert np.abs(source.mean(axis=(1, 2))).max() < 1e-14 and np.abs(source).max() > 0.1
        assert np.abs(np.asarray(batch["solution"]).mean(axis=(1, 2))).max() < 1e-14
    residual = solvers.darcy_residual(batch["solution"], batch["permeability"], source, bc=task.bc)
    assert float(jnp.max(jnp.linalg.norm(residual, axis=(1, 2)) / np.linalg.norm(source, axis=(1, 2)))) < 1e-9
    spec = json.loads(json.dumps(task.spec()))
    assert spec["name"] == "darcy" and families.task_from_spec(spec) == task


def test_coefficient_field_is_resolution_independent(x64):
    key = jax.random.key(7)
    for task, coarse_n, fine_n, shared in (
        (tasks.Darcy(), 15, 31, (slice(1, None, 2),) * 2),  # Dirichlet: coarse node i is fine node 2i + 1
        (tasks.Darcy(distribution="lognormal", bc="periodic"), 16, 32, (slice(None, None, 2),) * 2),
    ):
        coarse = task.sample(key, 3, coarse_n, start=3)["permeability"]
        fine = task.sample(key, 3, fine_n, start=3)["permeability"]
        np.testing.assert_allclose(fine[(slice(None),) + shared], coarse, atol=0, rtol=1e-12)
        # The other distribution on the same grids, from the field function the sampler calls.
        other = "lognormal" if task.distribution == "threshold" else "threshold"
        xi = jax.vmap(permeability.draw_xi, in_axes=(0, None))(jax.random.split(key, 3), task.bc)
        coarse, _ = permeability.permeability(xi, coarse_n, task.bc, other, dtype=jnp.float64)
        fine, _ = permeability.permeability(xi, fine_n, task.bc, other, dtype=jnp.float64)
        np.testing.assert_allclose(fine[(slice(None),) + shared], coarse, atol=0, rtol=1e-12)


def test_sampler_under_jit(x64):
    task = tasks.Darcy()
    eager = task.sample(jax.random.key(1), 3, 15)
    jitted = jax.jit(lambda k: task.sample(k, 3, 15))(jax.random.key(1))
    np.testing.assert_array_equal(jitted["permeability"], eager["permeability"])
    np.testing.assert_allclose(jitted["solution"], eager["solution"], atol=1e-11 * float(jnp.max(eager["solution"])))


# ---- bad inputs -------------------------------------------------------------------------------------------------

N = 8
A = np.full((N, N), 2.0)
F = np.ones((N, N))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: solvers.darcy(np.where(np.eye(N), -1.0, A), F), r"a \(the permeability\) must be > 0"),
        (lambda: solvers.darcy(A, np.where(np.eye(N), np.nan, F)), r"f \(the source\) contains NaN"),
        (lambda: solvers.darcy(np.where(np.eye(N), np.inf, A), F), r"a \(the permeability\) contains NaN or Inf"),
        (lambda: solvers.darcy(A, F, bc="neumann"), "bc must be one of"),
        (lambda: solvers.darcy(np.ones((7, 7)), np.ones((7, 7)), bc="periodic"), "even resolution"),
        (lambda: solvers.darcy(np.ones((2, 2)), np.ones((2, 2))), "n >= 3 interior nodes"),
        (lambda: solvers.darcy(np.ones((4, N, N)), np.ones((3, N, N))), "same batch shape"),
        (lambda: solvers.darcy(A, np.ones((9, 9))), "share the grid"),
        (lambda: solvers.darcy(np.ones((8, 9)), np.ones((8, 9))), "must be square"),
        (lambda: solvers.darcy(A, F, tol=0.0), "tol must be a number in"),
        (lambda: solvers.darcy(A.astype(jnp.bfloat16), F.astype(jnp.bfloat16)), "float32 or float64"),
        (lambda: solvers.darcy(A, F, maxiter=0), "maxiter must be a positive int"),
        (lambda: solvers.darcy(A, F, preconditioner="jacobi"), "preconditioner must be one of"),
        (lambda: solvers.darcy(np.exp(np.eye(N) * 5), F, maxiter=2), "conjugate gradients stopped at maxiter"),
        (lambda: solvers.darcy_residual(np.ones((N, N)), -A, F), "must be > 0"),
        (lambda: tasks.Darcy(distribution="gaussian"), "distribution must be one of"),
        (lambda: tasks.Darcy(bc="neumann"), "bc must be one of"),
        (lambda: tasks.Darcy().sample(jax.random.key(0), 2, 2), "resolution must be an int >= 3"),
        (lambda: tasks.Darcy(bc="periodic").sample(jax.random.key(0), 2, 15), "even integer"),
        (lambda: tasks.Mixed((tasks.Poisson(), tasks.Darcy())), "Mixed does not take Darcy"),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


CHECKED = {
    "a <= 0": (lambda t: solvers.darcy(t * A, F), -1.0, r"a \(the permeability\) must be > 0"),
    "NaN f": (lambda t: solvers.darcy(A, t * F), np.nan, r"f \(the source\) contains NaN"),
    "maxiter": (lambda t: solvers.darcy(A * jnp.exp(t * np.eye(N)), F, maxiter=2), 5.0, "stopped at maxiter"),
}


@pytest.mark.parametrize("name,transform", [(name, "jit") for name in CHECKED] + [("a <= 0", "grad")])
def test_value_checks_reach_checkify_with_the_eager_message(name, transform):
    fn, t, match = CHECKED[name]
    with pytest.raises(ValueError) as eager:
        fn(np.float32(t))
    assert re.search(match, str(eager.value))
    traced = jax.jit(fn) if transform == "jit" else jax.jit(jax.grad(lambda t: jnp.sum(fn(t))))
    err, _ = checkify.checkify(traced, errors=checkify.user_checks)(jnp.float32(t))
    with pytest.raises(checkify.JaxRuntimeError) as info:
        err.throw()
    words = lambda s: re.sub(r"-?[0-9][0-9.e+-]*", "#", s)
    assert words(str(eager.value)) in words(str(info.value))


def test_good_inputs_pass_checkify():
    fn = lambda t: jnp.sum(solvers.darcy(A * (1 + t), F * t) ** 2)
    err, out = checkify.checkify(jax.jit(jax.grad(fn)), errors=checkify.user_checks)(jnp.float32(0.5))
    assert err.get() is None and np.isfinite(float(out))


def test_darcy_is_a_family_outside_the_mixture():
    # A family of its own (its layout: the source and the field a), not in the periodic families' mixture.
    assert "darcy" in solvers.FAMILIES and "darcy" not in families.MIXTURE
    assert families.task_from_spec({"name": "darcy"}) == tasks.Darcy()
    assert darcy_flow.DEFAULT_TOL["float32"] > darcy_flow.DEFAULT_TOL["float64"]


def test_a_pretrained_periodic_model_maps_its_diffusion_rows_onto_the_field_a():
    from fno_jax.model import channels
    from fno_jax.training.finetune import adapt_lift_kernel, channel_map

    # a I is Darcy's diffusion tensor: a's lift row is K11's + K22's; no periodic layout can carry the field itself.
    assert channel_map("poisson", "darcy") == [[0], [1, 2]]
    assert channel_map("mixed", "darcy")[1] == [channels.LAYOUTS["mixed"].index(k) for k in ("K11", "K22")]
    kernel = np.arange(8.0).reshape(4, 2)
    np.testing.assert_array_equal(adapt_lift_kernel(kernel, "poisson", "darcy"), [[0, 1], [2 + 4, 3 + 5]])
    assert channels.holds("darcy", "darcy") and not channels.holds("poisson", "darcy")
    assert not channels.holds("mixed", "darcy") and channels.holds("mixed", "helmholtz")
