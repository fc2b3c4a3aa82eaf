"""The multi-host launchers in scripts/, run without a cloud or a cluster.

scripts/launch_tpu_vm.sh is checked three ways: its --dry-run output for a v5e-16 slice (the gcloud commands it
would run, parsed back into argv), its argument checks (exit status 2 and a message naming the fix), and a
simulated slice: a stub `gcloud` on PATH that copies `tpu-vm scp` files into a fake worker home directory and runs
`tpu-vm ssh --command` scripts there with bash, so the worker-side scripts (unpack the shipped commit, start the run
detached, stop it with SIGTERM) really run. Where the Google Cloud CLI is installed, the dry run's gcloud commands
are also handed to it with an empty configuration: it parses them (an unknown flag fails right there) and stops at
the missing project or account, before any request.
scripts/slurm_gpu.sbatch runs under bash with fake SLURM variables and stub `srun` / `scontrol` on PATH.
"""

import os
import re
import shlex
import shutil
import signal
import subprocess
import time

import pytest
from conftest import REPO

BASH = shutil.which("bash")
TPU = os.path.join(REPO, "scripts", "launch_tpu_vm.sh")
SBATCH = os.path.join(REPO, "scripts", "slurm_gpu.sbatch")
CONFIG = "experiments/configs/pretrain.py:poisson"
WORKDIR = "gs://fno-bucket/runs/pretrain_poisson"


def _run(script, *args, env=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BASH, script, *args], capture_output=True, text=True, timeout=60, env=env or dict(os.environ), **kwargs
    )


def _commands(stdout: str) -> list[list[str]]:
    """The commands a dry run printed ("+ cmd ...", shell-quoted, possibly over several lines), as argv lists."""
    chunks = ("\n" + stdout).split("\n+ ")[1:]
    return [shlex.split(chunk) for chunk in chunks]


def _dry(*args, env=None) -> list[list[str]]:
    result = _run(TPU, "--dry-run", *args, env=env)
    assert result.returncode == 0, result.stderr
    return _commands(result.stdout)


def _ssh_script(argv: list[str]) -> str:
    (command,) = [a for a in argv if a.startswith("--command=")]
    return command.removeprefix("--command=")


def test_scripts_parse():
    names = sorted(os.listdir(os.path.join(REPO, "scripts")))
    scripts = [os.path.join(REPO, "scripts", name) for name in names if name.endswith((".sh", ".sbatch"))]
    assert TPU in scripts and SBATCH in scripts
    for script in scripts:
        result = subprocess.run(["bash", "-n", script], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"


# ---- Cloud TPU: the dry run of a v5e-16 slice ----------------------------------------------------------------


def test_v5e_16_dry_run_prints_create_ship_install_run_delete():
    name, zone = "fno-v5e", "us-west4-a"
    assert _dry("create", name, zone, "v5e-16") == [
        ["gcloud", "compute", "tpus", "tpu-vm", "create", name, f"--zone={zone}", "--accelerator-type=v5litepod-16",
         "--version=v2-alpha-tpuv5-lite"],
    ]  # fmt: skip

    archive, scp, unpack, install = _dry("setup", name, zone)
    sha = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert archive[:4] == ["git", "-C", REPO, "archive"] and archive[-1] == sha
    tarball = next(a for a in archive if a.startswith("--output=")).removeprefix("--output=")
    assert scp == ["gcloud", "compute", "tpus", "tpu-vm", "scp", tarball, f"{name}:fno-jax-{sha[:12]}.tar.gz",
                   f"--zone={zone}", "--worker=all"]  # fmt: skip
    for ssh in (unpack, install):
        assert ssh[:7] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", name, f"--zone={zone}"]
        assert "--worker=all" in ssh
    assert f"tar -xzf $HOME/fno-jax-{sha[:12]}.tar.gz -C $HOME/fno-jax" in _ssh_script(unpack)
    assert "git clone" not in _ssh_script(unpack)  # workers have no keys for a private remote
    script = _ssh_script(install)
    assert "uv python install 3.12" in script and "uv venv --python 3.12 $HOME/fno-jax-venv" in script
    assert "'jax[tpu]==0.10.2' -e \"$HOME/fno-jax[gcs]\"" in script  # gcs: the gs:// workdir

    (run,) = _dry("run", name, zone, CONFIG, WORKDIR, "--config.train.batch_size=256")
    assert run[:7] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", name, f"--zone={zone}"] and "--worker=all" in run
    script = _ssh_script(run)
    assert (
        "FNO_JAX_DISTRIBUTED=1 nohup setsid $HOME/fno-jax-venv/bin/python -m experiments.main "
        f"--config={CONFIG} --workdir={WORKDIR} --config.train.batch_size=256"
    ) in script
    assert ">>$HOME/fno-jax-logs/pretrain_poisson.log" in script

    (sweep,) = _dry("sweep", name, zone, "experiments/configs/rq1_data_size.py:poisson", "gs://fno-bucket/rq1")
    assert "--worker=all" in sweep
    assert (
        "-m experiments.sweep --config=experiments/configs/rq1_data_size.py:poisson --workdir=gs://fno-bucket/rq1"
    ) in _ssh_script(sweep)

    assert _dry("delete", name, zone) == [
        ["gcloud", "compute", "tpus", "tpu-vm", "delete", name, f"--zone={zone}", "--quiet"]
    ]


def test_spot_and_queued_resources():
    (create,) = _dry("create", "q1", "us-west4-a", "v5litepod-16", "--spot", "--queued")
    assert create == ["gcloud", "compute", "tpus", "queued-resources", "create", "q1", "--node-id=q1",
                      "--zone=us-west4-a", "--accelerator-type=v5litepod-16",
                      "--runtime-version=v2-alpha-tpuv5-lite", "--spot"]  # fmt: skip
    assert _dry("delete", "q1", "us-west4-a", "--queued") == [
        ["gcloud", "compute", "tpus", "queued-resources", "delete", "q1", "--zone=us-west4-a", "--force", "--quiet"]
    ]
    assert _dry("status", "q1", "us-west4-a", "--queued")[0][3:5] == ["queued-resources", "describe"]
    # --project and GCLOUD_FLAGS reach every gcloud command.
    env = dict(os.environ, GCLOUD_FLAGS="--verbosity=error")
    (create,) = _dry("--project=my-proj", "create", "q1", "us-west4-a", "v4-8", env=env)
    assert set(create[-2:]) == {"--project=my-proj", "--verbosity=error"}


@pytest.mark.parametrize(
    ("accelerator", "runtime"),
    [
        ("v4-32", "tpu-ubuntu2204-base"),
        ("v3-8", "tpu-ubuntu2204-base"),
        ("v5e-8", "v2-alpha-tpuv5-lite"),
        ("v5p-16", "v2-alpha-tpuv5"),
        ("v6e-16", "v2-alpha-tpuv6e"),
    ],
)
def test_runtime_version_follows_the_generation(accelerator, runtime):
    (create,) = _dry("create", "t", "us-central2-b", accelerator)
    assert f"--version={runtime}" in create
    (create,) = _dry("create", "t", "us-central2-b", accelerator, "--version=my-runtime")
    assert "--version=my-runtime" in create


def test_dry_run_by_environment_variable():
    result = _run(TPU, "delete", "t", "us-west4-a", env=dict(os.environ, DRY_RUN="1"))
    assert result.returncode == 0 and result.stdout.startswith("+ gcloud compute tpus tpu-vm delete t")


@pytest.mark.skipif(shutil.which("gcloud") is None, reason="the Google Cloud CLI is not installed")
def test_installed_gcloud_accepts_every_dry_run_command(tmp_path):
    # An empty configuration: no project, no account, so gcloud stops after parsing the arguments, before any
    # request; an unknown flag or a missing required one fails in the parser, with a different message.
    env = dict(os.environ, CLOUDSDK_CONFIG=str(tmp_path), CLOUDSDK_CORE_DISABLE_PROMPTS="1")
    commands = [
        *_dry("create", "fno-v5e", "us-west4-a", "v5e-16", "--spot"),
        *_dry("create", "fno-v5e", "us-west4-a", "v5e-16", "--queued"),
        *_dry("setup", "fno-v5e", "us-west4-a")[1:3],  # scp, one ssh
        *_dry("delete", "fno-v5e", "us-west4-a"),
        *_dry("delete", "fno-v5e", "us-west4-a", "--queued"),
    ]
    for argv in commands:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
        # It stops for want of a project or an account, not at the parser (unknown or missing flags).
        assert result.returncode != 0 and re.search("project|active account", result.stderr), (argv, result.stderr)
        assert "unrecognized arguments" not in result.stderr and "Must be specified" not in result.stderr


# ---- Cloud TPU: argument checks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ([], {}, "usage: launch_tpu_vm.sh"),
        (["launch", "t", "us-west4-a"], {}, "unknown command 'launch'"),
        (["create", "t"], {}, "create needs TPU_NAME and ZONE"),
        (["create", "t", "us-west4-a"], {}, "create needs an ACCELERATOR_TYPE"),
        (["create", "t", "us-west4-a", "16"], {}, "is not GENERATION-SIZE"),
        (["create", "t", "us-west4-a", "v9-8"], {}, "pass --version=RUNTIME"),
        (["create", "t", "us-west4-a", "v4-8", "--preemptible"], {}, "unknown argument '--preemptible'"),
        (["create", "My_TPU", "us-west4-a", "v4-8"], {}, "TPU_NAME 'My_TPU' must be lowercase"),
        (["create", "t", "v5e-16", "us-west4-a"], {}, "ZONE 'v5e-16' is not a zone"),
        (["--frobnicate", "create", "t", "us-west4-a", "v4-8"], {}, "unknown option '--frobnicate'"),
        (["run", "t", "us-west4-a", CONFIG], {}, "run needs CONFIG and a gs:// directory"),
        (["run", "t", "us-west4-a", CONFIG, "runs/p"], {}, "must be gs://BUCKET/PATH"),
        (["run", "t", "us-west4-a", "experiments/configs/missing.py", WORKDIR], {}, "is not in this checkout"),
        (["run", "t", "us-west4-a", CONFIG, WORKDIR, "train.batch_size=2"], {}, "arguments after the workdir are"),
        (["stop", "t", "us-west4-a"], {}, "stop needs the run's WORKDIR"),
        (["logs", "t", "us-west4-a", "w1"], {}, "must be a worker number"),
        (["delete", "t", "us-west4-a", "--force"], {}, "unknown argument '--force'"),
        (["install", "t", "us-west4-a"], {"PYTHON_VERSION": "3.10"}, "fno-jax needs Python >= 3.11"),
        (["setup", "t", "us-west4-a"], {"JAX_VERSION": "0.11.2", "PYTHON_VERSION": "3.11"}, "needs Python >= 3.12"),
        (["ship", "t", "us-west4-a"], {"REPO_DIR": "$HOME"}, "would replace a whole home"),
        (["delete", "t", "us-west4-a"], {"DRY_RUN": "yes"}, "DRY_RUN=yes must be 0 or 1"),
    ],
)
def test_bad_arguments_are_usage_errors(args, env, message):
    result = _run(TPU, *(["--dry-run"] if "DRY_RUN" not in env else []), *args, env={**os.environ, **env})
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "gcloud" not in result.stdout  # nothing was (or would have been) run


def test_help_and_missing_gcloud(tmp_path):
    result = _run(TPU, "--help")
    assert result.returncode == 0 and "usage: launch_tpu_vm.sh" in result.stdout
    assert "v2-alpha-tpuv5-lite" in result.stdout
    # Without --dry-run and without gcloud on PATH: say so (PATH holds only what the script itself needs).
    (tmp_path / "bin").mkdir()
    for tool in ("dirname", "basename"):
        os.symlink(shutil.which(tool), tmp_path / "bin" / tool)
    result = _run(TPU, "delete", "t", "us-west4-a", env=dict(os.environ, PATH=str(tmp_path / "bin")))
    assert result.returncode == 2 and "gcloud not found" in result.stderr


# ---- Cloud TPU: a simulated slice -----------------------------------------------------------------------------

# `gcloud compute tpus tpu-vm scp SRC TPU:DEST ...` copies SRC into the fake worker's $HOME; `... ssh ...
# --command=SCRIPT` runs SCRIPT there with bash. Every call is logged as "VERB --worker=..." (one line).
_FAKE_GCLOUD = r"""#!/usr/bin/env bash
set -euo pipefail
worker=none
for arg in "$@"; do case "$arg" in --worker=*) worker=$arg ;; esac; done
echo "$4 $worker" >>"$GCLOUD_LOG"
case "$4" in
  scp) cp "$5" "$HOME/${6#*:}" ;;
  ssh) for arg in "$@"; do case "$arg" in --command=*) cd "$HOME" && exec bash -c "${arg#--command=}" ;; esac; done ;;
  *) exit 3 ;;
esac
"""

# The worker's python: records its arguments, environment and directory, then waits for SIGTERM (exit 143).
_FAKE_PYTHON = r"""#!/usr/bin/env bash
printf '%s\n' "$PWD" "FNO_JAX_DISTRIBUTED=$FNO_JAX_DISTRIBUTED" "$@" >"$HOME/python.args"
trap 'echo terminated >>"$HOME/python.args"; exit 143' TERM
while true; do sleep 0.1; done
"""


def _executable(path, text):
    path.write_text(text)
    path.chmod(0o755)


def _wait_for(predicate, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _kill_fake_run(pid_file, exited: bool) -> None:
    """Kills the fake run this test started, if it still runs (its pid, and only while it is that program)."""
    if exited or not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"fno-jax-venv" in f.read():
                os.kill(pid, signal.SIGKILL)
    except (FileNotFoundError, ProcessLookupError):
        pass


def test_simulated_slice_ships_runs_and_stops(tmp_path):
    home, bin_dir = tmp_path / "worker", tmp_path / "bin"
    home.mkdir()
    bin_dir.mkdir()
    _executable(bin_dir / "gcloud", _FAKE_GCLOUD)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", HOME=str(home),
               GCLOUD_LOG=str(tmp_path / "gcloud.log"), TMPDIR=str(tmp_path))  # fmt: skip
    sha = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()

    result = _run(TPU, "ship", "fno-v5e", "us-west4-a", env=env)
    assert result.returncode == 0, result.stderr
    # The commit's files, unpacked from the archive (no git on the worker), and nothing left behind.
    assert (home / "fno-jax" / "COMMIT").read_text().strip() == sha
    assert (home / "fno-jax" / "experiments" / "main.py").is_file() and not (home / "fno-jax" / ".git").exists()
    assert not list(home.glob("*.tar.gz")) and not list(tmp_path.glob("fno-jax-*.tar.gz"))

    (home / "fno-jax-venv" / "bin").mkdir(parents=True)
    _executable(home / "fno-jax-venv" / "bin" / "python", _FAKE_PYTHON)
    pid_file, exited = home / "fno-jax-logs" / "pretrain_poisson.pid", False
    try:
        result = _run(TPU, "run", "fno-v5e", "us-west4-a", CONFIG, WORKDIR, "--config.task='odd value'", env=env)
        assert result.returncode == 0, result.stderr
        args = home / "python.args"
        _wait_for(args.exists, "the run to start")
        assert args.read_text().splitlines() == [
            str(home / "fno-jax"), "FNO_JAX_DISTRIBUTED=1", "-m", "experiments.main", f"--config={CONFIG}",
            f"--workdir={WORKDIR}", "--config.task='odd value'",
        ]  # fmt: skip
        # A second start of the same run is refused while the first one lives.
        again = _run(TPU, "run", "fno-v5e", "us-west4-a", CONFIG, WORKDIR, env=env)
        assert again.returncode != 0 and "pretrain_poisson is running already" in again.stderr
        # New code is not shipped under a live run.
        ship = _run(TPU, "ship", "fno-v5e", "us-west4-a", env=env)
        assert ship.returncode != 0 and "a run is in progress" in ship.stderr

        result = _run(TPU, "stop", "fno-v5e", "us-west4-a", WORKDIR, env=env)
        assert result.returncode == 0 and "sent SIGTERM to pretrain_poisson" in result.stdout
        _wait_for(lambda: "terminated" in args.read_text(), "the run to get SIGTERM")
        stopped = lambda: "is not running" in _run(TPU, "stop", "fno-v5e", "us-west4-a", WORKDIR, env=env).stdout
        _wait_for(stopped, "the run to exit")
        exited = True
    finally:
        _kill_fake_run(pid_file, exited)
    calls = (tmp_path / "gcloud.log").read_text().splitlines()
    assert calls[:4] == ["scp --worker=all", "ssh --worker=all", "ssh --worker=all", "ssh --worker=all"]
    assert set(calls) == {"scp --worker=all", "ssh --worker=all"}


# ---- SLURM -----------------------------------------------------------------------------------------------------

_FAKE_SRUN = r"""#!/usr/bin/env bash
{ printf '%s\n' "$@"; echo "SRUN_CPUS_PER_TASK=${SRUN_CPUS_PER_TASK:-unset}"
  echo "JAX_LOCAL_DEVICE_IDS=${JAX_LOCAL_DEVICE_IDS:-unset}"; } >"$SLURM_SUBMIT_DIR/srun.args"
exit "${FAKE_SRUN_STATUS:-0}"
"""
_FAKE_SCONTROL = r"""#!/usr/bin/env bash
printf '%s\n' "$*" >>"$SLURM_SUBMIT_DIR/scontrol.args"
"""


def _sbatch(tmp_path, slurm_env, *args, srun_status=0):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    _executable(bin_dir / "srun", _FAKE_SRUN)
    _executable(bin_dir / "scontrol", _FAKE_SCONTROL)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SRUN_"))}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        SLURM_SUBMIT_DIR=str(tmp_path),
        SLURM_JOB_ID="4242",
        SLURM_JOB_NUM_NODES="2",
        SLURM_NTASKS="16",
        FAKE_SRUN_STATUS=str(srun_status),
        **slurm_env,
    )
    result = _run(SBATCH, *(args or (CONFIG, "/lustre/runs/p")), env=env)
    srun = tmp_path / "srun.args"
    return result, (srun.read_text().splitlines() if srun.exists() else None)


def test_sbatch_one_task_per_gpu(tmp_path):
    # An inherited JAX_LOCAL_DEVICE_IDS must not pin every task to GPU 0.
    slurm = {"SLURM_NTASKS_PER_NODE": "8", "SLURM_GPUS_ON_NODE": "8", "SLURM_CPUS_PER_TASK": "12"}
    slurm["JAX_LOCAL_DEVICE_IDS"] = "0"
    result, srun = _sbatch(tmp_path, slurm, CONFIG, "/lustre/runs/p", "--config.train.batch_size=64")
    assert result.returncode == 0, result.stderr
    assert srun[:3] == ["--kill-on-bad-exit=0", "--gpu-bind=none", "--label"]
    assert srun[4:8] == ["-m", "experiments.main", f"--config={CONFIG}", "--workdir=/lustre/runs/p"]
    assert "--config.train.batch_size=64" in srun
    assert "SRUN_CPUS_PER_TASK=12" in srun and "JAX_LOCAL_DEVICE_IDS=unset" in srun
    assert "one task per GPU" in result.stdout


def test_sbatch_one_task_per_node_drives_all_its_gpus(tmp_path):
    # No --ntasks-per-node: SLURM_TASKS_PER_NODE lists the counts; --gpus-per-node=h100:4.
    slurm = {"SLURM_TASKS_PER_NODE": "1(x2)", "SLURM_GPUS_PER_NODE": "h100:4", "SLURM_CPUS_PER_TASK": "64"}
    result, srun = _sbatch(tmp_path, slurm)
    assert result.returncode == 0, result.stderr
    assert "JAX_LOCAL_DEVICE_IDS=0,1,2,3" in srun and "SRUN_CPUS_PER_TASK=64" in srun


@pytest.mark.parametrize(
    ("slurm", "message"),
    [
        ({"SLURM_NTASKS_PER_NODE": "2", "SLURM_GPUS_ON_NODE": "8"}, "2 tasks per node for 8 GPUs per node"),
        ({"SLURM_TASKS_PER_NODE": "8(x3),4", "SLURM_GPUS_ON_NODE": "8"}, "cannot tell one number of tasks per node"),
        ({"SLURM_NTASKS_PER_NODE": "8"}, "no GPUs allocated to this job"),
    ],
)
def test_sbatch_refuses_layouts_that_idle_gpus(tmp_path, slurm, message):
    result, srun = _sbatch(tmp_path, slurm)
    assert result.returncode == 2 and message in result.stderr
    assert srun is None  # refused before srun


def test_sbatch_requeues_after_sigterm_and_checks_its_arguments(tmp_path):
    slurm = {"SLURM_NTASKS_PER_NODE": "8", "SLURM_GPUS_ON_NODE": "8"}
    result, srun = _sbatch(tmp_path, slurm, srun_status=143)
    assert result.returncode == 143 and "requeueing job 4242" in result.stderr
    assert (tmp_path / "scontrol.args").read_text().splitlines() == ["requeue 4242"]
    assert "SRUN_CPUS_PER_TASK=unset" in srun  # no --cpus-per-task: nothing to pass on
    fresh = tmp_path / "usage"
    fresh.mkdir()
    result, srun = _sbatch(fresh, slurm, CONFIG)  # no WORKDIR
    assert result.returncode == 2 and "usage: sbatch" in result.stderr and srun is None
