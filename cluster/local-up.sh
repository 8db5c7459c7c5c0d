#!/usr/bin/env bash
# Start a two-node Ray cluster on this machine: a head and a worker node, each with its own CPUs,
# the job server (dashboard) on 127.0.0.1 only, token authentication on. For trying `attnsweep
# submit` and for the tests; cluster/local-down.sh stops exactly what this started.
#
#   cluster/local-up.sh [STATE_DIR]      (default /tmp/attnsweep-cluster; at most 30 characters,
#                                         as Ray's socket paths under it must stay short)
#   source STATE_DIR/env                 RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH, RAY_API_SERVER_ADDRESS
#   attnsweep submit --wait results_dir=$PWD/results ...
#
# STATE_DIR holds the token, one pid, log and Ray temp directory per node, and `env`.
# Environment (defaults): ATTNSWEEP_GCS_PORT (6390), ATTNSWEEP_DASHBOARD_PORT (8265),
# ATTNSWEEP_CLIENT_PORT (10011), ATTNSWEEP_HEAD_AGENT_PORT (52366), ATTNSWEEP_WORKER_AGENT_PORT
# (52367), ATTNSWEEP_HEAD_CPUS (1), ATTNSWEEP_WORKER_CPUS (1), ATTNSWEEP_OBJECT_STORE_BYTES
# (200000000). Every other Ray port is chosen at random. Ray runs with the repository's .venv when
# there is one, else from PATH.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${1:-/tmp/attnsweep-cluster}
GCS_PORT=${ATTNSWEEP_GCS_PORT:-6390}
DASHBOARD_PORT=${ATTNSWEEP_DASHBOARD_PORT:-8265}
CLIENT_PORT=${ATTNSWEEP_CLIENT_PORT:-10011}
HEAD_AGENT_PORT=${ATTNSWEEP_HEAD_AGENT_PORT:-52366}
WORKER_AGENT_PORT=${ATTNSWEEP_WORKER_AGENT_PORT:-52367}
HEAD_CPUS=${ATTNSWEEP_HEAD_CPUS:-1}
WORKER_CPUS=${ATTNSWEEP_WORKER_CPUS:-1}
OBJECT_STORE_BYTES=${ATTNSWEEP_OBJECT_STORE_BYTES:-200000000}

fail() { echo "local-up: $*" >&2; exit 1; }
abort() {  # stop whatever this run started, then fail
  "$ROOT/cluster/local-down.sh" "$STATE" >/dev/null 2>&1 || true
  fail "$@"
}

# Ray puts Unix sockets at STATE/<node>/session_<date>_<pid>/sockets/plasma_store: 107 bytes at most.
[ "${#STATE}" -le 30 ] || fail "STATE_DIR=$STATE: longer than 30 characters (Ray's socket paths would not fit)"
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
for node in head worker; do
  if [ -f "$STATE/$node.pid" ] && kill -0 "$(cat "$STATE/$node.pid")" 2>/dev/null; then
    fail "a cluster started from $STATE is still running (cluster/local-down.sh $STATE stops it)"
  fi
done

# The driver of a submitted sweep and Ray's workers run `python3` from this PATH.
if [ -x "$ROOT/.venv/bin/ray" ]; then
  export PATH="$ROOT/.venv/bin:$PATH"
fi
command -v ray >/dev/null || fail "no 'ray' on PATH (make setup, or install attnsweep's dependencies)"

# Token authentication: a fresh random token per cluster, readable by this user only; every node
# and every client reads it from the file (never from the command line, which `ps` shows).
if [ ! -s "$STATE/auth_token" ]; then
  (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$STATE/auth_token")
fi
# A token or address in the environment would take precedence over this cluster's.
unset RAY_AUTH_TOKEN RAY_ADDRESS RAY_API_SERVER_ADDRESS
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$STATE/auth_token" RAY_USAGE_STATS_ENABLED=0
cat >"$STATE/env" <<EOF
unset RAY_AUTH_TOKEN RAY_ADDRESS
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=$STATE/auth_token
export RAY_API_SERVER_ADDRESS=http://127.0.0.1:$DASHBOARD_PORT
EOF

# `ray start --block` stays in the foreground as the leader of its own process group: the node's
# processes are that group, and stopping the one pid stops the node.
start_node() {  # name, then ray start arguments
  local name=$1
  shift
  setsid ray start --block --node-ip-address=127.0.0.1 --temp-dir="$STATE/$name" \
    --object-store-memory="$OBJECT_STORE_BYTES" --num-gpus=0 --disable-usage-stats \
    --min-worker-port=0 --max-worker-port=0 --log-style=record --log-color=false "$@" >"$STATE/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/$name.pid"
  local waited=0
  until grep -qs "Ray runtime started" "$STATE/$name.log"; do
    if ! kill -0 "$(cat "$STATE/$name.pid")" 2>/dev/null; then
      tail -5 "$STATE/$name.log" >&2
      abort "the $name node did not start (log: $STATE/$name.log)"
    fi
    [ "$waited" -lt 1200 ] || abort "the $name node is not up after 120 s (log: $STATE/$name.log)"
    sleep 0.1
    waited=$((waited + 1))
  done
}

start_node head --head --port="$GCS_PORT" --num-cpus="$HEAD_CPUS" --include-dashboard=true \
  --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" --dashboard-agent-listen-port="$HEAD_AGENT_PORT" \
  --ray-client-server-port="$CLIENT_PORT"
# Ray resolves 127.0.0.1 to this machine's address for the nodes (and listens there); read it back.
GCS_ADDRESS=$(grep -o "ray start --address='[^']*'" "$STATE/head.log" | head -1 | cut -d"'" -f2)
[ -n "$GCS_ADDRESS" ] || abort "cannot find the head's address in $STATE/head.log"
start_node worker --address="$GCS_ADDRESS" --num-cpus="$WORKER_CPUS" --dashboard-agent-listen-port="$WORKER_AGENT_PORT"
# The job server is part of the head's dashboard, which may come up after the node itself.
for _ in $(seq 600); do
  (exec 3<>"/dev/tcp/127.0.0.1/$DASHBOARD_PORT") 2>/dev/null && break
  sleep 0.1
done
(exec 3<>"/dev/tcp/127.0.0.1/$DASHBOARD_PORT") 2>/dev/null || abort "no job server on 127.0.0.1:$DASHBOARD_PORT"

echo "local Ray cluster up: head $GCS_ADDRESS, job server http://127.0.0.1:$DASHBOARD_PORT, $((HEAD_CPUS + WORKER_CPUS)) CPUs on 2 nodes"
echo "use it:  source $STATE/env && attnsweep submit --wait results_dir=\$PWD/results ..."
echo "stop it: cluster/local-down.sh $STATE"
