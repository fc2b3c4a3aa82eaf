#!/usr/bin/env bash
# fno-jax on a Cloud TPU VM slice (single- or multi-host): create it, ship this checkout to every worker, install
# Python >= 3.11 and jax[tpu] there, run a training or a sweep on all workers with a gs:// workdir, stop, delete.
# `scripts/launch_tpu_vm.sh --help` prints the usage; docs/DISTRIBUTED.md walks through a run.
#
# Works with bash >= 3.2 (macOS) and the Google Cloud CLI (`gcloud compute tpus ...`, the Cloud TPU API: TPU v2 to
# v6e). Nothing is cloned on the workers (they have no git credentials): the code travels as a `git archive` of one
# commit, copied with `gcloud compute tpus tpu-vm scp --worker=all`.
set -euo pipefail

PROG=$(basename "$0")
HERE=$(cd "$(dirname "$0")/.." && pwd)
JAX_VERSION=${JAX_VERSION:-0.10.2}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
# Paths on the workers, expanded there (each worker's own home directory), hence the single quotes.
# shellcheck disable=SC2016
REPO_DIR=${REPO_DIR:-'$HOME/fno-jax'}
# shellcheck disable=SC2016
VENV_DIR=${VENV_DIR:-'$HOME/fno-jax-venv'}
# shellcheck disable=SC2016
LOG_DIR=${LOG_DIR:-'$HOME/fno-jax-logs'}
DRY_RUN=${DRY_RUN:-0}
read -r -a GCLOUD_EXTRA <<<"${GCLOUD_FLAGS:-}"
read -r -a SSH_EXTRA <<<"${SSH_FLAGS:-}"

usage() {
  cat <<EOF
usage: $PROG [--dry-run] [--project=PROJECT] COMMAND TPU_NAME ZONE [ARGS ...]

Commands (in the order of a run):
  create TPU_NAME ZONE ACCELERATOR_TYPE [--spot] [--queued] [--version=RUNTIME]
        Create the TPU VM: ACCELERATOR_TYPE is GENERATION-SIZE, e.g. v5e-16 (= v5litepod-16), v4-32, v5p-8,
        v6e-16. The runtime version follows the generation unless --version is given:
        v2, v3, v4: tpu-ubuntu2204-base; v5e: v2-alpha-tpuv5-lite; v5p: v2-alpha-tpuv5; v6e: v2-alpha-tpuv6e.
        --spot      a Spot TPU: cheaper, preemptible at any time; a preempted one must be deleted and created
                    again (then setup and run: the run resumes from its last checkpoint in the gs:// workdir).
        --queued    request it as a queued resource named TPU_NAME, which waits for capacity; run setup once
                    \`$PROG status TPU_NAME ZONE --queued\` says ACTIVE.
  setup  TPU_NAME ZONE
        ship, then install: once per slice, and again after every new commit.
  ship   TPU_NAME ZONE
        \`git archive\` of COMMIT (default HEAD; uncommitted changes are not shipped), copied to every worker
        (\`tpu-vm scp --worker=all\`) and unpacked into REPO_DIR, replacing what was there.
  install TPU_NAME ZONE
        On every worker: uv, Python PYTHON_VERSION (the TPU images ship 3.10; fno-jax needs >= 3.11), a virtual
        environment VENV_DIR with jax[tpu]==JAX_VERSION and fno-jax (editable, from REPO_DIR).
  run    TPU_NAME ZONE CONFIG WORKDIR [--config.KEY=VALUE ...]
        python -m experiments.main on every worker (--worker=all), detached from ssh (nohup setsid), each worker
        logging to LOG_DIR/<workdir name>.log. WORKDIR: gs://BUCKET/PATH (or an absolute path that every worker
        mounts, e.g. Filestore). The same command again resumes from the latest checkpoint.
  sweep  TPU_NAME ZONE CONFIG SWEEP_DIR [--FLAG=VALUE ...]
        The same for python -m experiments.sweep: one multi-host job, its runs one after another.
  logs   TPU_NAME ZONE [WORKER]
        The last lines of each run's log on WORKER (0, 1, ...; default all).
  stop   TPU_NAME ZONE WORKDIR
        SIGTERM to that run on every worker: it saves a checkpoint and exits 143; \`run\` again resumes it.
  status TPU_NAME ZONE [--queued]
        The TPU VM's (or the queued resource's) description, state included.
  delete TPU_NAME ZONE [--queued]
        Delete the TPU VM (with --queued: the queued resource and its TPU VM). Without prompting.

Options:
  --dry-run           print every gcloud and git archive command instead of running it (also: DRY_RUN=1)
  --project=PROJECT   passed to every gcloud command
  -h, --help          this text

Environment: JAX_VERSION (default $JAX_VERSION; jax >= 0.11 needs PYTHON_VERSION >= 3.12), PYTHON_VERSION
(default $PYTHON_VERSION), COMMIT (default HEAD), on the workers REPO_DIR (default ~/fno-jax), VENV_DIR
(~/fno-jax-venv) and LOG_DIR (~/fno-jax-logs); GCLOUD_FLAGS (more flags for every gcloud command), SSH_FLAGS
(more flags for ssh and scp, e.g. --internal-ip or --tunnel-through-iap).

Example, a multi-host v5e-16 slice (16 chips) in us-west4-a:
  $PROG create fno-v5e us-west4-a v5e-16 --spot
  $PROG setup  fno-v5e us-west4-a
  $PROG run    fno-v5e us-west4-a experiments/configs/pretrain.py:poisson gs://BUCKET/runs/pretrain_poisson \\
      --config.train.batch_size=256
  $PROG logs   fno-v5e us-west4-a
  $PROG delete fno-v5e us-west4-a
EOF
}

die() {
  echo "$PROG: $*" >&2
  echo "Run '$PROG --help' for the usage." >&2
  exit 2
}

note() {
  echo "$PROG: $*" >&2
}

# Arguments shell-quoted, for printing: plain words as they are, others in single quotes (copy-pastable).
quoted() {
  local out="" a q="'"
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      out="$out $a"
    else
      out="$out '${a//$q/$q\\$q$q}'"
    fi
  done
  echo "${out# }"
}

# Runs a command, or prints it (shell-quoted, "+ " first) under --dry-run.
act() {
  if [[ $DRY_RUN == 1 ]]; then
    echo "+ $(quoted "$@")"
  else
    "$@"
  fi
}

gcloud_tpu() {
  if [[ $DRY_RUN != 1 ]] && ! command -v gcloud >/dev/null; then
    die "gcloud not found: install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install), or use --dry-run."
  fi
  act gcloud compute tpus "$@" ${GCLOUD_EXTRA[@]+"${GCLOUD_EXTRA[@]}"}
}

# gcloud compute tpus tpu-vm ssh TPU --zone=ZONE --worker=WORKER --command=SCRIPT (bash, the workers' login shell).
on_workers() {
  local worker=$1 script=$2
  gcloud_tpu tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker="$worker" ${SSH_EXTRA[@]+"${SSH_EXTRA[@]}"} \
    --command="$script"
}

# ---- create / status / delete ---------------------------------------------------------------------------------

# The Cloud TPU API's name of an accelerator type (v5e-N is v5litepod-N there).
accelerator_type() {
  local type=$1
  [[ $type =~ ^v[0-9][a-z0-9]*-[0-9]+$ ]] ||
    die "ACCELERATOR_TYPE '$type' is not GENERATION-SIZE, e.g. v5e-16, v5litepod-16, v4-32, v5p-8 or v6e-16."
  case $type in
    v5e-*) echo "v5litepod-${type#v5e-}" ;;
    *) echo "$type" ;;
  esac
}

# The TPU software (runtime) version for JAX on an accelerator type's generation (Cloud TPU docs, "TPU software
# versions": v6e v2-alpha-tpuv6e, v5p v2-alpha-tpuv5, v5e v2-alpha-tpuv5-lite, v4 and older tpu-ubuntu2204-base).
runtime_version() {
  case ${1%-*} in
    v2 | v3 | v4) echo tpu-ubuntu2204-base ;;
    v5litepod) echo v2-alpha-tpuv5-lite ;;
    v5p) echo v2-alpha-tpuv5 ;;
    v6e) echo v2-alpha-tpuv6e ;;
    *) die "no runtime version is known here for '$1': pass --version=RUNTIME (list them with" \
      "gcloud compute tpus tpu-vm versions list --zone=$ZONE)." ;;
  esac
}

create() {
  [[ $# -ge 1 ]] || die "create needs an ACCELERATOR_TYPE, e.g. $PROG create $TPU_NAME $ZONE v5e-16"
  local type version="" spot=0 queued=0 arg
  type=$(accelerator_type "$1")
  shift
  for arg in "$@"; do
    case $arg in
      --spot) spot=1 ;;
      --queued) queued=1 ;;
      --version=?*) version=${arg#--version=} ;;
      *) die "create: unknown argument '$arg' (expected --spot, --queued or --version=RUNTIME)." ;;
    esac
  done
  if [[ -z $version ]]; then
    version=$(runtime_version "$type")
  fi
  local cmd
  if [[ $queued == 1 ]]; then
    cmd=(queued-resources create "$TPU_NAME" --node-id="$TPU_NAME" --zone="$ZONE" --accelerator-type="$type"
      --runtime-version="$version")
  else
    cmd=(tpu-vm create "$TPU_NAME" --zone="$ZONE" --accelerator-type="$type" --version="$version")
  fi
  [[ $spot == 0 ]] || cmd+=(--spot)
  gcloud_tpu "${cmd[@]}"
  if [[ $queued == 1 ]]; then
    note "queued: wait until '$PROG status $TPU_NAME $ZONE --queued' shows ACTIVE, then '$PROG setup $TPU_NAME $ZONE'."
  else
    note "next: $PROG setup $TPU_NAME $ZONE"
  fi
}

queued_flag() {
  case $# in
    0) echo 0 ;;
    1) [[ $1 == --queued ]] || die "unknown argument '$1' (expected --queued)."; echo 1 ;;
    *) die "too many arguments: $*" ;;
  esac
}

status() {
  local queued
  queued=$(queued_flag "$@")
  if [[ $queued == 1 ]]; then
    gcloud_tpu queued-resources describe "$TPU_NAME" --zone="$ZONE"
  else
    gcloud_tpu tpu-vm describe "$TPU_NAME" --zone="$ZONE"
  fi
}

delete() {
  local queued
  queued=$(queued_flag "$@")
  if [[ $queued == 1 ]]; then
    gcloud_tpu queued-resources delete "$TPU_NAME" --zone="$ZONE" --force --quiet
  else
    gcloud_tpu tpu-vm delete "$TPU_NAME" --zone="$ZONE" --quiet
  fi
}

# ---- ship / install ---------------------------------------------------------------------------------------------

check_remote_paths() {
  local path plain='^[A-Za-z0-9_./$~-]+$'
  for path in "$REPO_DIR" "$VENV_DIR" "$LOG_DIR"; do
    [[ $path =~ $plain ]] ||
      die "'$path' (REPO_DIR, VENV_DIR or LOG_DIR) may hold only letters, digits, and _ . / - \$ ~"
  done
  # ship replaces REPO_DIR wholesale.
  case ${REPO_DIR%/} in
    '' | / | '~' | '$HOME' | '${HOME}') die "REPO_DIR=$REPO_DIR would replace a whole home or root directory." ;;
  esac
}

check_versions() {
  [[ $PYTHON_VERSION =~ ^3\.([0-9]+)$ ]] || die "PYTHON_VERSION=$PYTHON_VERSION must be 3.MINOR, e.g. 3.12."
  local py_minor=${BASH_REMATCH[1]}
  [[ $py_minor -ge 11 ]] || die "PYTHON_VERSION=$PYTHON_VERSION: fno-jax needs Python >= 3.11."
  [[ $JAX_VERSION =~ ^0\.([0-9]+)\.[0-9.]+$ ]] || die "JAX_VERSION=$JAX_VERSION must be a jax release, e.g. 0.10.2."
  if [[ ${BASH_REMATCH[1]} -ge 11 && $py_minor -lt 12 ]]; then
    die "jax $JAX_VERSION needs Python >= 3.12: set PYTHON_VERSION=3.12."
  fi
}

ship() {
  [[ $# -eq 0 ]] || die "ship takes no arguments after TPU_NAME ZONE."
  check_remote_paths
  git -C "$HERE" rev-parse --git-dir >/dev/null 2>&1 || die "$HERE is not a git checkout: ship sends a commit."
  local sha short archive remote
  sha=$(git -C "$HERE" rev-parse --verify --quiet "${COMMIT:-HEAD}^{commit}") ||
    die "COMMIT=${COMMIT:-HEAD} is not a commit of $HERE."
  short=${sha:0:12}
  if [[ -z ${COMMIT:-} && -n $(git -C "$HERE" status --porcelain --untracked-files=no) ]]; then
    note "warning: uncommitted changes are not shipped; shipping the last commit, $short."
  fi
  archive="${TMPDIR:-/tmp}/fno-jax-$short.tar.gz"
  remote="fno-jax-$short.tar.gz"
  act git -C "$HERE" archive --format=tar.gz --output="$archive" "$sha"
  gcloud_tpu tpu-vm scp "$archive" "$TPU_NAME:$remote" --zone="$ZONE" --worker=all \
    ${SSH_EXTRA[@]+"${SSH_EXTRA[@]}"}
  on_workers all "set -euo pipefail
for pid_file in $LOG_DIR/*.pid; do
  if [ -f \"\$pid_file\" ] && kill -0 \"\$(cat \"\$pid_file\")\" 2>/dev/null; then
    echo \"\$(hostname): a run is in progress (\$pid_file); stop it before shipping new code\" >&2; exit 1
  fi
done
rm -rf $REPO_DIR && mkdir -p $REPO_DIR
tar -xzf \$HOME/$remote -C $REPO_DIR && rm -f \$HOME/$remote
echo $sha >$REPO_DIR/COMMIT
echo \"\$(hostname): fno-jax $short in $REPO_DIR\""
  if [[ $DRY_RUN != 1 ]]; then
    rm -f "$archive"
  fi
}

install() {
  [[ $# -eq 0 ]] || die "install takes no arguments after TPU_NAME ZONE."
  check_remote_paths
  check_versions
  local python=$VENV_DIR/bin/python version_tuple=${PYTHON_VERSION/./, }
  on_workers all "set -euo pipefail
export PATH=\$HOME/.local/bin:\$PATH
[ -f $REPO_DIR/pyproject.toml ] || { echo \"\$(hostname): no fno-jax in $REPO_DIR; run ship first\" >&2; exit 1; }
command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh
uv python install $PYTHON_VERSION
if [ -x $python ] && ! $python -c 'import sys; sys.exit(sys.version_info[:2] != ($version_tuple))'; then
  rm -rf $VENV_DIR
fi
[ -x $python ] || uv venv --python $PYTHON_VERSION $VENV_DIR
uv pip install --python $python 'jax[tpu]==$JAX_VERSION' -e \"$REPO_DIR[gcs]\"
$python -c 'import sys, jax, fno_jax; assert jax.__version__ == \"$JAX_VERSION\", jax.__version__'
echo \"\$(hostname): fno-jax \$(cat $REPO_DIR/COMMIT), \$($python --version), jax $JAX_VERSION\""
}

setup() {
  check_versions
  ship "$@"
  install
  note "next: $PROG run $TPU_NAME $ZONE CONFIG gs://BUCKET/RUN_NAME"
}

# ---- run / sweep / logs / stop ------------------------------------------------------------------------------------

check_workdir() {
  local workdir=$1
  case $workdir in
    gs://?*/?*) ;;
    /*) note "warning: $workdir is not gs://; it must be one directory that every worker mounts (e.g. Filestore)." ;;
    *) die "WORKDIR '$workdir' must be gs://BUCKET/PATH (or an absolute path that every worker mounts): a" \
      "relative path would land on each worker's own disk, inside REPO_DIR, which ship replaces." ;;
  esac
}

# Name of a run's log and pid files on the workers: its workdir's last component.
run_name() {
  local name=${1%/}
  name=${name##*/}
  [[ $name =~ ^[A-Za-z0-9_.-]+$ ]] || die "the last part of '$1' may hold only letters, digits and _ . -"
  echo "$name"
}

start() {
  local module=$1 what=$2
  shift 2
  [[ $# -ge 2 ]] || die "$what needs CONFIG and a gs:// directory, e.g. $PROG $what $TPU_NAME $ZONE" \
    "experiments/configs/pretrain.py:poisson gs://BUCKET/runs/pretrain_poisson"
  local config=$1 workdir=$2 name args arg
  shift 2
  [[ -f $HERE/${config%%:*} ]] || die "CONFIG file '${config%%:*}' is not in this checkout ($HERE)."
  check_workdir "$workdir"
  check_remote_paths
  for arg in "$@"; do
    [[ $arg == --?* ]] || die "'$arg': arguments after the workdir are flags, e.g. --config.train.batch_size=256"
  done
  name=$(run_name "$workdir")
  args=$(printf ' %q' --config="$config" --workdir="$workdir" "$@")
  on_workers all "set -euo pipefail
[ -x $VENV_DIR/bin/python ] || { echo \"\$(hostname): no $VENV_DIR; run setup first\" >&2; exit 1; }
mkdir -p $LOG_DIR && cd $REPO_DIR
if [ -f $LOG_DIR/$name.pid ] && kill -0 \"\$(cat $LOG_DIR/$name.pid)\" 2>/dev/null; then
  echo \"\$(hostname): $name is running already (pid \$(cat $LOG_DIR/$name.pid))\" >&2; exit 1
fi
FNO_JAX_DISTRIBUTED=1 nohup setsid $VENV_DIR/bin/python -m $module$args \\
  >>$LOG_DIR/$name.log 2>&1 </dev/null &
echo \$! >$LOG_DIR/$name.pid
echo \"\$(hostname): started pid \$!, log $LOG_DIR/$name.log\""
  note "follow: $PROG logs $TPU_NAME $ZONE   stop (checkpoint first): $PROG stop $TPU_NAME $ZONE $workdir"
}

logs() {
  [[ $# -le 1 ]] || die "logs takes at most one WORKER."
  local worker=${1:-all}
  [[ $worker =~ ^([0-9]+|all)$ ]] || die "WORKER '$worker' must be a worker number (0, 1, ...) or all."
  on_workers "$worker" "tail -n 20 $LOG_DIR/*.log"
}

stop() {
  [[ $# -eq 1 ]] || die "stop needs the run's WORKDIR (to find its process), e.g. $PROG stop $TPU_NAME $ZONE" \
    "gs://BUCKET/runs/pretrain_poisson"
  local name
  name=$(run_name "$1")
  on_workers all "if [ -f $LOG_DIR/$name.pid ] && kill -TERM \"\$(cat $LOG_DIR/$name.pid)\" 2>/dev/null; then
  echo \"\$(hostname): sent SIGTERM to $name (it saves a checkpoint, then exits)\"
else
  echo \"\$(hostname): $name is not running\"
fi"
}

# ---- command line -----------------------------------------------------------------------------------------------

while [[ $# -gt 0 ]]; do
  case $1 in
    -h | --help | help)
      usage
      exit 0
      ;;
    --dry-run) DRY_RUN=1 ;;
    --project=?*) GCLOUD_EXTRA+=("$1") ;;
    -*) die "unknown option '$1'." ;;
    *) break ;;
  esac
  shift
done
[[ $DRY_RUN == 0 || $DRY_RUN == 1 ]] || die "DRY_RUN=$DRY_RUN must be 0 or 1."
if [[ $# -eq 0 ]]; then
  usage >&2
  exit 2
fi
case $1 in
  create | setup | ship | install | run | sweep | logs | stop | status | delete) ;;
  *) die "unknown command '$1' (create, setup, ship, install, run, sweep, logs, stop, status, delete)." ;;
esac
[[ $# -ge 3 ]] || die "$1 needs TPU_NAME and ZONE: $PROG $1 TPU_NAME ZONE ..."
COMMAND=$1 TPU_NAME=$2 ZONE=$3
shift 3
[[ $TPU_NAME =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] ||
  die "TPU_NAME '$TPU_NAME' must be lowercase letters, digits and hyphens, starting with a letter."
[[ $ZONE =~ ^[a-z]+-[a-z]+[0-9]+-[a-z0-9]+$ ]] || die "ZONE '$ZONE' is not a zone such as us-west4-a or us-central2-b."

case $COMMAND in
  create) create "$@" ;;
  setup) setup "$@" ;;
  ship) ship "$@" ;;
  install) install "$@" ;;
  run) start experiments.main run "$@" ;;
  sweep) start experiments.sweep sweep "$@" ;;
  logs) logs "$@" ;;
  stop) stop "$@" ;;
  status) status "$@" ;;
  delete) delete "$@" ;;
esac
