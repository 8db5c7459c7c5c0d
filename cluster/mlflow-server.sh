#!/usr/bin/env bash
# An MLflow tracking server for attnsweep sweeps, in the foreground (its pid is this script's).
#
#   cluster/mlflow-server.sh [STATE_DIR]     (default ./mlflow-server)
#   attnsweep run tracking.uri=http://127.0.0.1:5000 ...
#
# Backend store: MLFLOW_BACKEND_STORE_URI when set, e.g. postgresql://USER@DB-HOST:5432/mlflow
# (the password from PGPASSWORD or ~/.pgpass, never on a command line; needs `pip install
# psycopg2-binary`), else SQLite in STATE_DIR/mlflow.db. Artifacts (reports, datasets) are uploaded
# through the server into MLFLOW_ARTIFACTS_DESTINATION (default STATE_DIR/artifacts; s3://... works
# with boto3 installed), so sweeps need no access of their own to the artifact store.
# Binds to MLFLOW_HOST (default 127.0.0.1: this machine only) on MLFLOW_PORT (default 5000) with
# MLFLOW_WORKERS processes (default 2). MLflow has no authentication of its own here: to serve a
# cluster, bind it to the cluster's private network or put it behind an authenticating proxy.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${1:-mlflow-server}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
if [ -x "$ROOT/.venv/bin/mlflow" ]; then
  export PATH="$ROOT/.venv/bin:$PATH"
fi
command -v mlflow >/dev/null || { echo "mlflow-server: no 'mlflow' on PATH" >&2; exit 1; }

BACKEND=${MLFLOW_BACKEND_STORE_URI:-sqlite:///$STATE/mlflow.db}
ARTIFACTS=${MLFLOW_ARTIFACTS_DESTINATION:-$STATE/artifacts}
HOST=${MLFLOW_HOST:-127.0.0.1}
PORT=${MLFLOW_PORT:-5000}
WORKERS=${MLFLOW_WORKERS:-2}
# MLflow's background job runner (GenAI evaluation jobs) is a dozen processes attnsweep never uses.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}

SHOWN=$BACKEND  # without user and password, should the URI carry them after all
case $BACKEND in *@*) SHOWN="${BACKEND%%://*}://***@${BACKEND#*@}" ;; esac
echo "mlflow-server: http://$HOST:$PORT, backend $SHOWN, artifacts $ARTIFACTS" >&2
exec mlflow server --backend-store-uri "$BACKEND" --serve-artifacts --artifacts-destination "$ARTIFACTS" \
  --host "$HOST" --port "$PORT" --workers "$WORKERS"
