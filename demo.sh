#!/usr/bin/env bash
# The demo behind `make demo`: runs the reconciler daemon on the embedded desired-state/ against a
# sandbox install base (demo/, git-ignored; DEMO_DIR overrides). A throwaway CA and identity are
# generated at run time into desired-state/tls/ (git-ignored): no private key is ever committed.
# Ctrl-C (or SIGTERM) stops the daemon; it finishes the pass in progress and exits 0.
set -euo pipefail
cd "$(dirname "$0")"
BIN="$PWD/.venv/bin"
SANDBOX="${DEMO_DIR:-$PWD/demo}"

mkdir -p "$SANDBOX/root/data" "$SANDBOX/root/nginx" "$SANDBOX/trust" "$SANDBOX/var"
if [ ! -f desired-state/tls/key.pem ]; then
  echo "generating a throwaway CA and gateway identity into desired-state/tls/ ..."
  "$BIN/python" -m reconciler.support.devpki desired-state/tls
fi
cat > "$SANDBOX/reconciler.toml" <<TOML
# Settings of the demo: a sandbox ROOT, a plain trust directory refreshed with openssl rehash.
state_dir = "$PWD/desired-state"
root = "$SANDBOX/root"
var_dir = "$SANDBOX/var"
trust_store = "directory"
trust_dir = "$SANDBOX/trust"
quiet_period_ms = 200
log_format = "${DEMO_LOG_FORMAT:-console}"
metrics_address = "127.0.0.1:${DEMO_METRICS_PORT:-9187}"

[[hooks]]
name = "announce"
on = ["identity", "console", "smtp_inbound", "trust", "profiles"]
run = ["$PWD/hooks/log-change.sh"]
timeout_s = 10
TOML
export RECONCILER_CONFIG="$SANDBOX/reconciler.toml"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
step reconciler validate
"$BIN/reconciler" validate
step reconciler plan
"$BIN/reconciler" plan || true   # exit 2: there are changes to make
cat <<TEXT

Starting the daemon on desired-state/ (ROOT $SANDBOX/root). In another terminal, try:
  sed -i 's/tls_policy = "intermediate"/tls_policy = "modern"/' desired-state/gateway.toml
  RECONCILER_CONFIG=$RECONCILER_CONFIG $BIN/reconciler audit show
  RECONCILER_CONFIG=$RECONCILER_CONFIG $BIN/reconciler status
  curl -s 127.0.0.1:${DEMO_METRICS_PORT:-9187}/metrics | grep reconciler_
Ctrl-C stops it.
TEXT
step reconciler run
exec "$BIN/reconciler" run
