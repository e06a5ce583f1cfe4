#!/usr/bin/env bash
# A multi-host Cloud TPU VM slice (e.g. v5p-64): the same command on every worker.
#
#   launch/tpu_vm.sh TPU_NAME ZONE experiments/t2i_256.py gs://BUCKET/runs/t2i_256 [--config.x=y ...]
#
# Expects omni_img installed on every worker (e.g. `pip install -e .` in ~/omni_img,
# run once with the same gcloud ssh --worker=all). JAX finds the coordinator and the
# process ids from the TPU metadata; OMNI_IMG_DISTRIBUTED=auto makes omni-img ask JAX
# to detect them. The workdir should be a bucket (or another path every worker sees).
set -euo pipefail

if [ $# -lt 4 ]; then
  echo "usage: $0 TPU_NAME ZONE EXPERIMENT.py WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
tpu_name="$1"
zone="$2"
config="$3"
workdir="$4"
shift 4

remote="cd ~/omni_img && OMNI_IMG_DISTRIBUTED=auto omni-img train --config ${config} --workdir ${workdir}"
for override in "$@"; do
  remote+=" $(printf '%q' "$override")"
done

gcloud compute tpus tpu-vm ssh "$tpu_name" \
  --zone "$zone" \
  --worker=all \
  --command "$remote"
