#!/usr/bin/env bash
# One process on this machine: the plain way to run any omni-img command.
#
#   launch/local.sh [--cpu_devices N] -- omni-img train --config experiments/X.py --workdir DIR
#
# --cpu_devices N splits a CPU host into N XLA devices (data parallel over its cores):
# XLA's CPU backend keeps two cores busier that way than with one device.
set -euo pipefail

usage() {
  echo "usage: $0 [--cpu_devices N] -- COMMAND [ARGS...]" >&2
  exit 2
}

cpu_devices=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu_devices) [ $# -ge 2 ] || usage; cpu_devices="$2"; shift 2 ;;
    --) shift; break ;;
    *) usage ;;
  esac
done
[ $# -gt 0 ] || usage

if [ -n "$cpu_devices" ]; then
  export JAX_PLATFORMS=cpu
  export XLA_FLAGS="--xla_force_host_platform_device_count=${cpu_devices} ${XLA_FLAGS:-}"
fi
exec "$@"
