#!/usr/bin/env bash
# N JAX processes on this machine, joined through a local coordinator and gloo: a real
# multi-host run on one host (how the tests exercise multi-host code paths).
#
#   launch/local_multiprocess.sh NUM_PROCESSES DEVICES_PER_PROCESS -- \
#       omni-img train --config experiments/X.py --workdir DIR
#
# Every process gets OMNI_IMG_COORDINATOR / OMNI_IMG_NUM_PROCESSES / OMNI_IMG_PROCESS_ID
# (read by omni_img.sharding.distributed) and DEVICES_PER_PROCESS fake CPU devices. Output
# lines are prefixed with [pI]. The script prints "process I: pid P" for each process,
# waits for all of them and exits with the status of the first one that failed, naming
# it. A process that dies makes the others stop on their own within the heartbeat
# timeout (--heartbeat_timeout of omni-img train, 30 s by default). Ctrl-C or SIGTERM is
# forwarded to every process (each writes a final checkpoint, together).
# OMNI_IMG_PORT picks the coordinator port (default: a free one).
set -euo pipefail

usage() {
  echo "usage: $0 NUM_PROCESSES DEVICES_PER_PROCESS -- COMMAND [ARGS...]" >&2
  exit 2
}

[ $# -ge 3 ] || usage
num_processes="$1"
devices="$2"
shift 2
[ "$1" = "--" ] || usage
shift
[ $# -gt 0 ] || usage
case "$num_processes$devices" in
  *[!0-9]*) usage ;;
esac

port="${OMNI_IMG_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"

pids=()
# shellcheck disable=SC2317  # invoked by the traps below
forward() {
  echo "local_multiprocess: forwarding $1 to every process" >&2
  kill "-$1" "${pids[@]}" 2>/dev/null || true
}
trap 'forward TERM' TERM
trap 'forward INT' INT

for ((i = 0; i < num_processes; i++)); do
  OMNI_IMG_COORDINATOR="127.0.0.1:${port}" \
  OMNI_IMG_NUM_PROCESSES="$num_processes" \
  OMNI_IMG_PROCESS_ID="$i" \
  JAX_PLATFORMS=cpu \
  XLA_FLAGS="--xla_force_host_platform_device_count=${devices} ${XLA_FLAGS:-}" \
  PYTHONUNBUFFERED=1 \
    "$@" > >(sed -u "s/^/[p${i}] /") 2>&1 &
  pids+=("$!")
  echo "process ${i}: pid $!"
done

status=0
remaining=$num_processes
while [ "$remaining" -gt 0 ]; do
  finished=""
  set +e
  wait -n -p finished "${pids[@]}"
  rc=$?
  set -e
  if [ -z "$finished" ]; then
    continue  # a trapped signal interrupted wait; keep waiting for the processes
  fi
  remaining=$((remaining - 1))
  for ((i = 0; i < num_processes; i++)); do
    if [ "${pids[$i]}" = "$finished" ] && [ "$rc" -ne 0 ]; then
      echo "local_multiprocess: process ${i} (pid ${finished}) exited with status ${rc}" >&2
      [ "$status" -ne 0 ] || status=$rc
    fi
  done
done
exit "$status"
