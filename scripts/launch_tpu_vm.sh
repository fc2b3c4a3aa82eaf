#!/usr/bin/env bash
# Run fno-jax on every worker of a Cloud TPU VM slice (single- or multi-host), detached from the ssh session.
#
#   scripts/launch_tpu_vm.sh setup TPU_NAME ZONE                           # once per slice (and after a new commit)
#   scripts/launch_tpu_vm.sh run   TPU_NAME ZONE CONFIG WORKDIR [--config.KEY=VALUE ...]
#   scripts/launch_tpu_vm.sh logs  TPU_NAME ZONE [WORKER]                  # last lines of each worker's log
#   scripts/launch_tpu_vm.sh stop  TPU_NAME ZONE WORKDIR                   # SIGTERM: checkpoint, then exit
#
#   scripts/launch_tpu_vm.sh run my-v4-32 us-central2-b experiments/configs/pretrain.py:poisson \
#       /mnt/shared/runs/pretrain_poisson --config.train.batch_size=256
#
# setup, on every worker (--worker=all): installs uv, a Python >= 3.11 next to the image's own (TPU VM images ship
# 3.10), a virtual environment in REPO_DIR/.venv with jax[tpu]==JAX_VERSION, and this checkout's commit (COMMIT,
# default: the local HEAD, which must be pushed to REPO_URL) installed with `pip install -e .`. Every worker ends
# on the same commit and the same jax, or setup fails.
# run, on every worker: the same command, started with nohup/setsid so that it outlives the ssh session; its
# output goes to LOG_DIR/<workdir name>.log on each worker (per-host logs), its pid to LOG_DIR/<workdir name>.pid. fno_jax.runtime.distributed recognizes the TPU
# VM (its TPU chips) and jax.distributed.initialize() reads the slice's workers from the TPU metadata server, so
# nothing needs to be set in the ssh session; FNO_JAX_DISTRIBUTED=1 is passed anyway.
# WORKDIR must be one directory that every worker sees with POSIX renames (e.g. Filestore/NFS); a gcsfuse-mounted
# bucket does not work (orbax renames checkpoint directories). A stored dataset must be at the same path on every
# worker. See docs/DISTRIBUTED.md.
# Environment: REPO_URL (git URL the workers clone; default: this checkout's origin), COMMIT, JAX_VERSION
# (default below), PYTHON_VERSION (default 3.11), REPO_DIR (on the workers, default ~/fno-jax), LOG_DIR (default
# ~/fno-jax-logs), GCLOUD_FLAGS (extra flags for gcloud, e.g. --project=P).
set -euo pipefail

JAX_VERSION=${JAX_VERSION:-0.10.2}
PYTHON_VERSION=${PYTHON_VERSION:-3.11}
# Expanded on the workers (each worker's own home directory), hence the single quotes.
# shellcheck disable=SC2016
REPO_DIR=${REPO_DIR:-'$HOME/fno-jax'}
# shellcheck disable=SC2016
LOG_DIR=${LOG_DIR:-'$HOME/fno-jax-logs'}
read -r -a GCLOUD_EXTRA <<<"${GCLOUD_FLAGS:-}"

usage() {
  sed -n '2,27p' "$0" >&2
  exit 2
}

# gcloud ... ssh TPU --zone=ZONE --worker=WORKER --command=SCRIPT
on_workers() {
  local worker=$1 script=$2
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker="$worker" "${GCLOUD_EXTRA[@]}" \
    --command="$script"
}

setup() {
  local here commit url
  here=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
  commit=${COMMIT:-$(git -C "$here" rev-parse HEAD)}
  url=${REPO_URL:-$(git -C "$here" remote get-url origin)}
  on_workers all "set -euo pipefail
    export PATH=\$HOME/.local/bin:\$PATH
    command -v uv >/dev/null || python3 -m pip install --user --quiet uv \
      || python3 -m pip install --user --quiet --break-system-packages uv
    [ -d $REPO_DIR/.git ] || git clone --quiet $(printf %q "$url") $REPO_DIR
    cd $REPO_DIR
    git fetch --quiet origin && git checkout --quiet --detach $(printf %q "$commit")
    uv python install $(printf %q "$PYTHON_VERSION")
    [ -x .venv/bin/python ] || uv venv --quiet --python $(printf %q "$PYTHON_VERSION") .venv
    uv pip install --quiet --python .venv/bin/python $(printf %q "jax[tpu]==$JAX_VERSION") -e .
    .venv/bin/python -c 'import sys, jax; assert sys.version_info >= (3, 11), sys.version; \
assert jax.__version__ == \"$JAX_VERSION\", jax.__version__'
    echo \"\$(hostname): fno-jax \$(git rev-parse --short HEAD), \$(.venv/bin/python --version), jax $JAX_VERSION\""
}

run() {
  [[ $# -ge 2 ]] || usage
  local config=$1 workdir=$2 name args
  shift 2
  name=$(printf %q "$(basename "$workdir")")
  args=$(printf ' %q' --config="$config" --workdir="$workdir" "$@")
  on_workers all "set -euo pipefail
    mkdir -p $LOG_DIR && cd $REPO_DIR
    FNO_JAX_DISTRIBUTED=1 nohup setsid .venv/bin/python -m experiments.main$args \
      >>$LOG_DIR/$name.log 2>&1 </dev/null &
    echo \$! >$LOG_DIR/$name.pid
    echo \"\$(hostname): started pid \$!, log $LOG_DIR/$name.log\""
  echo "follow: $0 logs $TPU_NAME $ZONE   (or ssh to a worker and tail $LOG_DIR/$name.log)"
}

logs() {
  on_workers "${1:-all}" "tail -n 5 $LOG_DIR/*.log"
}

stop() {
  # SIGTERM to the run's process on every worker: the run saves a checkpoint and exits 143.
  [[ $# -ge 1 ]] || usage
  local name
  name=$(printf %q "$(basename "$1")")
  on_workers all "kill -TERM \$(cat $LOG_DIR/$name.pid) && echo \"\$(hostname): sent SIGTERM\""
}

[[ $# -ge 3 ]] || usage
COMMAND=$1 TPU_NAME=$2 ZONE=$3
shift 3
case "$COMMAND" in
  setup) setup ;;
  run) run "$@" ;;
  logs) logs "$@" ;;
  stop) stop "$@" ;;
  *) usage ;;
esac
