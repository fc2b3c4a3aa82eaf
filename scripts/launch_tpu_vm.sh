#!/usr/bin/env bash
# Run one fno-jax experiment on every worker of a Cloud TPU VM slice (single- or multi-host).
#
#   scripts/launch_tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [--config.KEY=VALUE ...]
#   scripts/launch_tpu_vm.sh my-v4-32 us-central2-b experiments/configs/pretrain.py:poisson \
#       /mnt/shared/runs/pretrain_poisson --config.train.batch_size=256
#
# Every worker runs the same command (--worker=all); on a multi-host slice jax.distributed.initialize() finds the
# other workers by itself (FNO_JAX_DISTRIBUTED=1 asks fno_jax.distributed to call it). WORKDIR must be one directory
# that all workers see (NFS/Filestore, or a bucket mounted with gcsfuse): orbax checkpoints are written into it by
# all workers together, metrics/summary by worker 0.
# Environment: REPO_DIR (checkout on the workers, default ~/fno-jax), PYTHON (default $REPO_DIR/.venv/bin/python),
# SETUP=1 to clone and install on every worker first (REPO_URL required then).
set -euo pipefail

if [[ $# -lt 4 ]]; then
  sed -n '2,14p' "$0" >&2
  exit 2
fi
TPU_NAME=$1 ZONE=$2 CONFIG=$3 WORKDIR=$4
shift 4
REPO_DIR=${REPO_DIR:-'~/fno-jax'}
PYTHON=${PYTHON:-"$REPO_DIR/.venv/bin/python"}
EXTRA=$(printf ' %q' "$@")

if [[ "${SETUP:-0}" == 1 ]]; then
  : "${REPO_URL:?SETUP=1 needs REPO_URL (the git URL to clone on every worker)}"
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="
    set -e
    [ -d $REPO_DIR ] || git clone $REPO_URL $REPO_DIR
    cd $REPO_DIR && python3 -m venv .venv && .venv/bin/pip install -q -U 'jax[tpu]' && .venv/bin/pip install -q -e ."
fi

gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="
  set -e
  cd $REPO_DIR
  FNO_JAX_DISTRIBUTED=1 $PYTHON -m experiments.main --config=$CONFIG --workdir=$WORKDIR$EXTRA"
