#!/usr/bin/env bash
# Start a local MLflow tracking server for senn_automl (sqlite backend, proxied artifacts).
#
#   bash mlflow/start_server.sh                 # http://127.0.0.1:5000, data in ./mlflow_server
#   MLFLOW_PORT=5055 MLFLOW_ROOT=/data/mlflow bash mlflow/start_server.sh
#   export MLFLOW_TRACKING_URI=http://127.0.0.1:5000   # then: senn-automl ... / python code
#
# Environment variables:
#   MLFLOW_HOST    interface to bind (default 127.0.0.1, loopback only). Any other, e.g. 0.0.0.0 for a
#                  cluster: the server answers 403 "Invalid Host header" to names it does not allow, so
#                  the script passes --allowed-hosts with MLFLOW_ALLOWED_HOSTS, or by default this
#                  machine's name and addresses (hostname, hostname -f, hostname -I) and localhost,
#                  each with the port. The server has no authentication: see mlflow/README.md.
#   MLFLOW_ALLOWED_HOSTS  comma-separated HOST:PORT values clients use in their URLs (replaces the default)
#   MLFLOW_PORT    port (default 5000)
#   MLFLOW_ROOT    folder of the store: $MLFLOW_ROOT/mlflow.db and $MLFLOW_ROOT/artifacts
#                  (default ./mlflow_server; made absolute)
#   MLFLOW_PYTHON  interpreter to run `python -m mlflow` with (default: the `mlflow` command)
# Extra arguments are passed to `mlflow server`.
#
# One uvicorn worker and no job runner (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false): about 0.5 GB
# and healthy in ~5 s instead of ~1.9 GB and ~10 s. The script `exec`s the server, so its pid is
# the server's: stop it with `kill <pid>` (the worker process exits with it).
set -euo pipefail

HOST="${MLFLOW_HOST:-127.0.0.1}"
PORT="${MLFLOW_PORT:-5000}"
ROOT="${MLFLOW_ROOT:-$PWD/mlflow_server}"
mkdir -p "$ROOT/artifacts"
ROOT="$(cd "$ROOT" && pwd)"

case "$PORT" in
  ''|*[!0-9]*) echo "start_server.sh: MLFLOW_PORT=$PORT is not a port number" >&2; exit 2 ;;
esac

export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false

echo "MLflow tracking server: http://$HOST:$PORT  (store $ROOT/mlflow.db, artifacts $ROOT/artifacts)"
SHOWN="$HOST"; [[ "$HOST" == "0.0.0.0" || "$HOST" == "::" ]] && SHOWN="$(hostname)"
echo "use it with: export MLFLOW_TRACKING_URI=http://$SHOWN:$PORT"

EXTRA=()
if [[ "$HOST" != "127.0.0.1" && "$HOST" != "localhost" && "$HOST" != "::1" ]]; then
  if [[ -z "${MLFLOW_ALLOWED_HOSTS:-}" ]]; then
    names=(localhost 127.0.0.1 "$(hostname)" "$(hostname -f 2>/dev/null || true)" $(hostname -I 2>/dev/null || true))
    MLFLOW_ALLOWED_HOSTS=""
    for n in "${names[@]}"; do
      [[ -z "$n" ]] && continue
      [[ "$n" == *:* ]] && n="[$n]"  # an IPv6 address
      MLFLOW_ALLOWED_HOSTS+="${MLFLOW_ALLOWED_HOSTS:+,}$n:$PORT"
    done
  fi
  EXTRA=(--allowed-hosts "$MLFLOW_ALLOWED_HOSTS")
  echo "allowed Host headers: $MLFLOW_ALLOWED_HOSTS (set MLFLOW_ALLOWED_HOSTS to change)"
  if [[ " $* " != *" basic-auth "* && " $* " != *"--app-name=basic-auth"* ]]; then
    echo "warning: bound to $HOST without authentication: anyone who reaches this port can read and write runs and models" \
         "(see mlflow/README.md: --app-name basic-auth)" >&2
  fi
fi

if [[ -n "${MLFLOW_PYTHON:-}" ]]; then
  MLFLOW_CMD=("$MLFLOW_PYTHON" -m mlflow)
else
  MLFLOW_CMD=(mlflow)
fi

exec "${MLFLOW_CMD[@]}" server \
  --backend-store-uri "sqlite:///$ROOT/mlflow.db" \
  --artifacts-destination "$ROOT/artifacts" \
  --host "$HOST" \
  --port "$PORT" \
  --workers 1 \
  "${EXTRA[@]}" \
  "$@"
