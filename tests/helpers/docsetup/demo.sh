# `make demo` running in the background, as the README's second terminal expects it; waits (at
# most 60 s) until its daemon has applied the example state.
set -euo pipefail
cd "$REPO"
make demo > /tmp/docs-demo.log 2>&1 &
for _ in $(seq 600); do
  grep -q '"event":"pass.succeeded"' demo/var/audit.jsonl 2>/dev/null && exit 0
  sleep 0.1
done
echo "make demo did not apply the example state:" >&2
tail -20 /tmp/docs-demo.log >&2
exit 1
