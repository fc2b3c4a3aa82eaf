"""A new PDE family is its sampler and one `Family` entry (solvers/families.py says so): in a copy of the repository,
a made-up family is added by editing exactly those two files, and it then samples, trains from the command line,
exports a bundle, runs as an operator and is scored by the residual metric, with no other file touched."""

import json
import os
import subprocess
import sys
import textwrap

from mutation import copy_repo

# Screened Poisson, -D lap u + c u = f with c ~ U(screening_range): the Helmholtz operator with omega = -c < 0, so it
# carries the existing coefficients D and omega and needs no new channel.
SAMPLER = '''

@dataclasses.dataclass(frozen=True)
class Screened(_Task):
    """-D lap u + c u = f, c ~ U(screening_range), carried as omega = -c (a made-up family of the tests)."""

    screening_range: tuple[float, float] = (1.0, 4.0)
    diffusivity: float = 0.01
    length: float = 1.0
    name: ClassVar[str] = "screened"
    pde_id: ClassVar[int] = 9

    def _sample_indices(self, key, indices, resolution, dtype):
        def draw(k):
            k_src, k_c = jax.random.split(k)
            amplitudes, vf = draw_bump_amplitudes(k_src, dtype=dtype)
            lo, hi = self.screening_range
            return amplitudes, vf, lo + (hi - lo) * jax.random.uniform(k_c, (), DRAW_DTYPE).astype(dtype)

        amplitudes, vf, c = jax.vmap(draw)(_sample_keys(key, indices))
        source, source_hat = gaussian_source_and_spectrum(amplitudes, resolution, length=self.length)
        diffusivity = jnp.asarray(self.diffusivity, dtype)
        solution = solve.helmholtz_spectral(source_hat, -c, diffusivity, Domain(resolution, self.length))
        diffusion = jnp.broadcast_to(self.diffusivity * jnp.eye(2, dtype=dtype), (indices.shape[0], 2, 2))
        return _batch(source, solution, self.pde_id, _fraction(vf, dtype), diffusion=diffusion, omega=-c), None
'''

ENTRY = '        Family(tasks.Screened, "screening_range", "c", (1.0, 4.0), False, ("D", "omega"), in_mixture=False),\n'

CHECK = textwrap.dedent(
    """
    import json, subprocess, sys
    import jax, jax.numpy as jnp, numpy as np
    from solvers import families
    from fno_jax import pretrained
    from fno_jax.model import channels
    from fno_jax.training import metrics

    task = families.make_task("screened", {"screening_range": (2.0, 3.0)})
    batch = task.sample(jax.random.key(0), 4, 32)
    c = -np.asarray(batch["omega"])
    assert np.all((c >= 2.0) & (c <= 3.0)), c
    assert channels.LAYOUTS["screened"] == ("source", "D", "omega")
    # The solution solves its PDE by the metric's own operator, read from the model's channels: float32 rounding.
    raw = {"source": batch["source"], "coeffs": channels.coefficients(batch, "screened")}
    coefficients = channels.residual_coefficients(raw, "screened")
    residual = metrics.residual_of(batch["solution"], batch["source"], coefficients, length=1.0)
    assert float(jnp.max(residual)) < 1e-4, residual

    workdir = sys.argv[1]
    flags = ["--config.task=screened", "--config.task_ranges.screening_range=(2.0, 3.0)",
             "--config.data.resolution=16", "--config.data.num_train=16", "--config.data.num_val=8",
             "--config.data.num_test=8", "--config.model.width=8", "--config.model.modes=4", "--config.model.depth=2",
             "--config.model.fc_dim=16", "--config.train.batch_size=8", "--config.train.num_steps=6",
             "--config.train.checkpoint_every=3", "--config.train.log_every=3", "--config.train.eval_every=3"]
    subprocess.run([sys.executable, "-m", "experiments.main", "--config=experiments/configs/pretrain.py:poisson",
                    f"--workdir={workdir}", *flags], check=True, capture_output=True)
    summary = json.load(open(f"{workdir}/summary.json"))
    assert summary["task"] == "screened" and np.isfinite(summary["test_rel_l2"]), summary
    from fno_jax import export  # the command line `python -m fno_jax.export`, in this interpreter
    export.main(["--workdir", workdir, "--out", f"{workdir}-bundle"])
    op = pretrained.operator(f"{workdir}-bundle")
    assert op.card["layout"] == "screened" and op(batch).shape == (4, 32, 32)
    print("ok")
    """
)


def _copy_with_a_new_family(tmp_path) -> str:
    root = copy_repo(str(tmp_path))  # the working tree, without .git, .venv, runs/ and caches
    with open(os.path.join(root, "solvers", "tasks.py"), "a") as f:
        f.write(SAMPLER)
    path = os.path.join(root, "solvers", "families.py")
    text = open(path).read()
    anchor = "        Family(\n            tasks.Darcy,"
    assert anchor in text, "families.py changed: update this test's anchor"
    open(path, "w").write(text.replace(anchor, ENTRY + anchor, 1))
    return root


def test_a_new_family_is_its_sampler_and_one_entry(tmp_path):
    root = _copy_with_a_new_family(tmp_path)
    env = dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-c", CHECK, str(tmp_path / "run")], cwd=root, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-4000:]
    card = json.load(open(tmp_path / "run-bundle" / "card.json"))
    assert card["task_spec"]["name"] == "screened" and card["task_ranges"]["screening_range"] == [2.0, 3.0]
