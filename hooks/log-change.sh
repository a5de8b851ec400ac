#!/bin/sh
# Example hook: logs what changed. Use it as a template, or to see the hook environment.
#
#   [[hooks]]
#   name = "announce"
#   on = ["identity", "console", "smtp_inbound", "trust", "profiles"]
#   run = ["/usr/local/lib/reconciler/hooks/log-change.sh"]
#
# reconciler passes RECONCILER_CHANGED (comma-separated kinds), RECONCILER_REVISION,
# RECONCILER_ROOT and RECONCILER_PHASE (apply or rollback). Exit non-zero to roll the pass back.
echo "reconciler ${RECONCILER_PHASE}: ${RECONCILER_CHANGED} changed at revision ${RECONCILER_REVISION} under ${RECONCILER_ROOT}"
