"""The audit log's head as metrics: what the fleet's Prometheus keeps off the box, and the witness.

Registered in the daemon's registry (`reconciler.daemon.metrics.Metrics.audit`) and set under its
lock, so one scrape never shows a head's seq with another head's hash.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from reconciler.audit import Head

__all__ = ["AuditHeadMetrics"]


class AuditHeadMetrics:
    """`reconciler_audit_head_seq`, `reconciler_audit_head_info{seq,hash}` (one series: the
    current head; absent before the first record) and `reconciler_audit_witness_failures_total`
    (0 from the start)."""

    def __init__(self, registry: CollectorRegistry, lock: threading.Lock) -> None:
        from prometheus_client import Counter, Gauge

        self._lock = lock
        self.seq = Gauge(
            "reconciler_audit_head_seq",
            "seq of the audit log's last record, as last published (0 before the first record).",
            registry=registry,
        )
        self.info = Gauge(
            "reconciler_audit_head_info",
            "Always 1: the audit log's head as last published, its seq and hash as labels "
            "(one series; absent before the first record).",
            ["seq", "hash"],
            registry=registry,
        )
        self.witness_failures = Counter(
            "reconciler_audit_witness_failures",
            "Runs of the [audit] witness command that failed, timed out or could not start.",
            registry=registry,
        )

    def published(self, head: Head) -> None:
        with self._lock:
            self.seq.set(head.seq)
            self.info.clear()
            self.info.labels(str(head.seq), head.hash).set(1)

    def witness_failed(self) -> None:
        with self._lock:
            self.witness_failures.inc()
