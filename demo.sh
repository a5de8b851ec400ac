#!/usr/bin/env bash
# The demo behind `make demo`: runs reconciler on the embedded desired-state/ against a sandbox
# install base under demo/ (git-ignored). A throwaway CA and identity are generated here, at run
# time: no private key is ever committed.
set -euo pipefail
cd "$(dirname "$0")"
BIN=.venv/bin
SANDBOX="$PWD/demo"

mkdir -p "$SANDBOX/root/data" "$SANDBOX/root/nginx" "$SANDBOX/trust" "$SANDBOX/var"
[ -f desired-state/tls/key.pem ] || "$BIN/python" -m reconciler.devpki desired-state/tls
cat > "$SANDBOX/reconciler.toml" <<TOML
# Settings of the demo: a sandbox ROOT, a plain trust directory refreshed with openssl rehash.
state_dir = "$PWD/desired-state"
root = "$SANDBOX/root"
var_dir = "$SANDBOX/var"
trust_store = "directory"
trust_dir = "$SANDBOX/trust"
quiet_period_ms = 200
log_format = "console"

[[hooks]]
name = "announce"
on = ["identity", "console", "smtp_inbound", "trust", "profiles"]
run = ["$PWD/hooks/log-change.sh"]
timeout_s = 10
TOML
export RECONCILER_CONFIG="$SANDBOX/reconciler.toml"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
step reconciler validate; "$BIN/reconciler" validate
step reconciler plan; "$BIN/reconciler" plan || true
step reconciler apply; "$BIN/reconciler" apply
step ls -l demo/root/data demo/root/nginx demo/trust; ls -l "$SANDBOX/root/data" "$SANDBOX/root/nginx" "$SANDBOX/trust"
step cat demo/root/data/server-profiles.json; cat "$SANDBOX/root/data/server-profiles.json"
step reconciler plan; "$BIN/reconciler" plan
step reconciler audit show; "$BIN/reconciler" audit show
step reconciler audit verify; "$BIN/reconciler" audit verify
