#!/bin/bash
# The shell baseline: what a careful operator would write instead of reconciler, minus every
# check. On each `..data` swap in STATE: copy the identity into ROOT, build tls.pem, run the hook.
# Usage: baseline.sh STATE ROOT HOOK HOOK_LOG
set -u
state=$1 root=$2 hook=$3 log=$4
inotifywait -m -e moved_to,create --format '%f' "$state" | while read -r name; do
    [ "$name" = "..data" ] || continue
    cp "$state/tls/key.pem" "$root/data/key.pem"
    cp "$state/tls/cert.pem" "$root/data/cert.pem"
    cat "$state/tls/key.pem" "$state/tls/cert.pem" > "$root/data/tls.pem"
    "$hook" "$log"
done
