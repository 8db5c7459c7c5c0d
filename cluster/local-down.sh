#!/usr/bin/env bash
# Stop the local two-node Ray cluster that cluster/local-up.sh started from STATE_DIR: the worker
# node, then the head, each by the process group of its recorded pid (its `ray start --block` and
# everything that node started), nothing else. Leaves STATE_DIR's logs; `rm -r STATE_DIR` after.
#
#   cluster/local-down.sh [STATE_DIR]    (default /tmp/attnsweep-cluster)
set -euo pipefail

STATE=${1:-/tmp/attnsweep-cluster}
GRACE_S=${ATTNSWEEP_STOP_GRACE_S:-10}

group_alive() { pgrep -g "$1" >/dev/null 2>&1; }

stop_node() {
  local pid_file="$STATE/$1.pid"
  [ -f "$pid_file" ] || return 0
  local pid
  pid=$(cat "$pid_file")
  # Only a process group whose leader is still our `ray start` (a reused pid is someone else's).
  if group_alive "$pid" && ps -o args= -p "$pid" 2>/dev/null | grep -q "ray start"; then
    kill -TERM "$pid" 2>/dev/null || true  # ray start shuts its node down in order on SIGTERM
    local waited=0
    while group_alive "$pid" && [ "$waited" -lt $((GRACE_S * 10)) ]; do
      sleep 0.1
      waited=$((waited + 1))
    done
    if group_alive "$pid"; then
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    echo "stopped the $1 node (process group $pid)"
  elif pgrep -g "$pid" -f "$STATE/$1/" >/dev/null 2>&1; then
    # The leader is gone but processes of the node are left (their arguments name its directory).
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "stopped what was left of the $1 node (process group $pid)"
  fi
  rm -f "$pid_file"
}

stop_node worker
stop_node head
