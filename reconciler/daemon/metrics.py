"""The daemon's Prometheus metrics, made for alerting: fed pass results, rendered for /metrics.

Made to alert on (docs/metrics.md lists every series and the rules in deploy/prometheus/ use
them):

* every label value a counter can take is there from the start at 0, so `increase()` and
  `rate()` see the first failure, drift or hook failure (a series born at 1 is no increase);
* no `_created` series; one series per label value from a fixed set (outcomes, kinds, actions,
  the configured hooks, one revision), never one per trust entry unless asked for;
* a timestamp that has no value yet is absent, never 0 (the profile probe when probing is off).

Nothing here decides anything or can stop the loop.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, get_args

from reconciler.core.outcome import Outcome
from reconciler.daemon.auditmetrics import AuditHeadMetrics
from reconciler.support.redact import scrub
from reconciler.version import version

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Gauge

    from reconciler.config import Settings
    from reconciler.probe import ProbeResult
    from reconciler.reconcile import PassResult

__all__ = ["CertExpiry", "Metrics", "applied_expiry"]


@dataclass(frozen=True, slots=True)
class CertExpiry:
    """One applied certificate's expiry, for the expiry gauges."""

    kind: str
    name: str
    subject: str
    not_after: float
    """Seconds since the epoch."""


_PASS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_HOOK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def _outcomes() -> tuple[str, ...]:
    return tuple(Outcome)


def _kinds() -> tuple[str, ...]:
    from reconciler.core.desired import Kind

    return get_args(Kind)


def _actions() -> tuple[str, ...]:
    from reconciler.core.plan import Action

    return get_args(Action)


class MetricFamilies:
    """Every metric the daemon exports, declared in a registry of its own (no process-global
    state), each label set present from the start at 0."""

    def __init__(self, hooks: Sequence[str]) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            disable_created_metrics,
        )

        # The `_created` series double every counter's series for a value nobody alerts on.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        self.build_info = Gauge(
            "reconciler_build_info",
            "Always 1: the reconciler's version and Python's, as labels.",
            ["version", "python"],
            registry=r,
        )
        self.build_info.labels(version(), platform.python_version()).set(1)
        self.passes = Counter(
            "reconciler_passes", "Passes run, by outcome.", ["outcome"], registry=r
        )
        self.changes = Counter(
            "reconciler_changes", "Target changes applied, by kind and action.",
            ["kind", "action"], registry=r,
        )  # fmt: skip
        self.drift = Counter(
            "reconciler_drift_corrections",
            "Targets changed by someone else and restored, by kind.",
            ["kind"],
            registry=r,
        )
        self.rejected = Counter(
            "reconciler_rejected_states", "Distinct desired states rejected as invalid.", registry=r
        )
        self.hook_failures = Counter(
            "reconciler_hook_failures",
            "Hook commands (checks and runs) that failed, timed out or could not start, by hook.",
            ["hook"],
            registry=r,
        )
        self.pass_duration = Histogram(
            "reconciler_pass_duration_seconds",
            "Wall time of a pass, including hooks and verification.",
            buckets=_PASS_BUCKETS,
            registry=r,
        )
        self.hook_duration = Histogram(
            "reconciler_hook_duration_seconds",
            "Wall time of one hook command, by hook.",
            ["hook"],
            buckets=_HOOK_BUCKETS,
            registry=r,
        )
        for outcome in _outcomes():
            self.passes.labels(outcome)
        for kind in _kinds():
            self.drift.labels(kind)
            for action in _actions():
                self.changes.labels(kind, action)
        for hook in hooks:
            self.hook_failures.labels(hook)
            self.hook_duration.labels(hook)
        self.last_pass = Gauge(
            "reconciler_last_pass_timestamp_seconds", "When the last pass ended.", registry=r
        )
        self.last_ok = Gauge(
            "reconciler_last_success_timestamp_seconds",
            "When a pass last ended converged or with no change.",
            registry=r,
        )
        self.ready = Gauge(
            "reconciler_ready",
            "1 while a verified configuration is in place (what /readyz answers).",
            registry=r,
        )
        self.last_pass_ok = Gauge(
            "reconciler_last_pass_ok",
            "1 when the last pass converged or found nothing to do; 0 after a rejected, failed "
            "(rolled back), suspended or deferred one.",
            registry=r,
        )
        self.suspended = Gauge("reconciler_suspended", "1 while applying is suspended.", registry=r)
        self.consecutive_failures = Gauge(
            "reconciler_consecutive_failures",
            "Passes in a row that failed and rolled back; 0 after a pass that converged or "
            "found nothing to do (a rejected state shows in reconciler_state_rejected).",
            registry=r,
        )
        self.pending_changes = Gauge(
            "reconciler_pending_changes",
            "Target changes the last pass found and did not leave applied (suspended, or rolled "
            "back); 0 once a pass converged or found nothing to do.",
            registry=r,
        )
        self.pending_drift = Gauge(
            "reconciler_pending_drift",
            "Of reconciler_pending_changes, the targets someone else changed (drift).",
            registry=r,
        )
        self.state_rejected = Gauge(
            "reconciler_state_rejected",
            "1 while the desired state last read is rejected as invalid.",
            registry=r,
        )
        self.last_rejected = _Optional(
            "reconciler_last_rejected_timestamp_seconds",
            "When the daemon first rejected the desired state it last rejected (absent until one).",
            r,
        )
        self.applied_revision = Gauge(
            "reconciler_applied_revision_info",
            "Always 1: the revision whose targets are in place, as a label (one series).",
            ["revision"],
            registry=r,
        )
        self.desired_revision = Gauge(
            "reconciler_desired_revision_info",
            "Always 1: the revision last read from the desired state, as a label (one series).",
            ["revision"],
            registry=r,
        )
        self.identity_expiry = _Optional(
            "reconciler_identity_expiry_timestamp_seconds",
            "Soonest notAfter in the applied identity chain (absent without an identity).",
            r,
        )
        self.trust_expiry = _Optional(
            "reconciler_trust_expiry_timestamp_seconds",
            "Soonest notAfter among the applied trust entries (absent without any).",
            r,
        )
        self.cert_expiry = Gauge(
            "reconciler_certificate_expiry_timestamp_seconds",
            "notAfter of the applied identity leaf (and of each trust entry when "
            "metrics_per_trust_entry is on).",
            ["kind", "name", "subject"],
            registry=r,
        )
        self.probe_trusted = Gauge(
            "reconciler_probe_trusted",
            "1 when the profile's server is trusted by the desired store, else 0.",
            ["profile", "server", "status"],
            registry=r,
        )
        self.probe_time = _Optional(
            "reconciler_probe_timestamp_seconds",
            "When the last profile probe ended (absent while probing is off).",
            r,
        )


class Metrics(MetricFamilies):
    """The daemon's Prometheus metrics: the families, and how a pass result updates them."""

    def __init__(
        self,
        hooks: Sequence[str] = (),
        *,
        per_trust_entry: bool = False,
        applied_revision: str | None = None,
    ) -> None:
        super().__init__(hooks)
        self._per_trust_entry = per_trust_entry
        self._rejections: set[tuple[str, str | None]] = set()
        self._failures = 0
        self._lock = threading.Lock()
        self.audit = AuditHeadMetrics(self.registry, self._lock)
        if applied_revision is not None:
            # Read back from var_dir, which others can edit: through the boundary like any text.
            self.applied_revision.labels(scrub(applied_revision)).set(1)

    @classmethod
    def for_settings(cls, settings: Settings) -> Metrics:
        """Metrics for a daemon with these settings: its hooks, its last applied revision."""
        from reconciler.txn import records

        last = records.load_last_applied(settings.var_dir)
        return cls(
            [hook.name for hook in settings.hooks],
            per_trust_entry=settings.metrics_per_trust_entry,
            applied_revision=last.revision if last is not None else None,
        )

    def observe_pass(
        self,
        result: PassResult,
        duration_s: float,
        now: float,
        *,
        suspended: bool,
        ready: bool | None = None,
    ) -> None:
        """Count one pass; `ready` is the daemon's readiness after it (default: the pass's ok)."""
        with self._lock:
            self.passes.labels(result.outcome).inc()
            self.pass_duration.observe(duration_s)
            self.last_pass.set(now)
            self.suspended.set(1 if suspended else 0)
            self.last_pass_ok.set(1 if result.ok else 0)
            self.ready.set(1 if (result.ok if ready is None else ready) else 0)
            if result.revision != "unknown":
                _only(self.desired_revision, result.revision)
            if result.ok:
                self.last_ok.set(now)
                _only(self.applied_revision, result.revision)
            self._count_failures(result)
            self._note_pending(result)
            if result.outcome is Outcome.REJECTED:
                self.state_rejected.set(1)
                key = (result.revision, result.reason)
                if key not in self._rejections:
                    self._rejections.add(key)
                    self.rejected.inc()
                    self.last_rejected.set(now)
            elif result.outcome is not Outcome.DEFERRED:
                self.state_rejected.set(0)
            if result.outcome is Outcome.CONVERGED and result.plan is not None:
                for change in result.plan.changes:
                    self.changes.labels(change.kind, change.action).inc()
                    if change.cause == "drift":
                        self.drift.labels(change.kind).inc()
            for hook in result.hooks:
                self.hook_duration.labels(hook.hook).observe(hook.duration_ms / 1000)
                if not hook.ok:
                    self.hook_failures.labels(hook.hook).inc()

    def _count_failures(self, result: PassResult) -> None:
        if result.ok:
            self._failures = 0
        elif result.outcome is Outcome.FAILED:
            self._failures += 1
        self.consecutive_failures.set(self._failures)

    def _note_pending(self, result: PassResult) -> None:
        if result.ok:
            self.pending_changes.set(0)
            self.pending_drift.set(0)
        elif result.outcome in (Outcome.SUSPENDED, Outcome.FAILED) and result.plan is not None:
            changes = result.plan.changes
            self.pending_changes.set(len(changes))
            self.pending_drift.set(sum(1 for c in changes if c.cause == "drift"))
        # rejected, deferred: what is pending is not known; the last figure stands

    def set_expiry(self, entries: Iterable[CertExpiry]) -> None:
        with self._lock:
            self.cert_expiry.clear()
            soonest: dict[str, float] = {}
            for entry in entries:
                soonest[entry.kind] = min(soonest.get(entry.kind, entry.not_after), entry.not_after)
                leaf = entry.kind == "identity" and entry.name == "leaf"
                if leaf or (entry.kind == "trust" and self._per_trust_entry):
                    # Names and subjects come from pushed files: through the output boundary.
                    name, subject = scrub(entry.name), scrub(entry.subject)
                    self.cert_expiry.labels(entry.kind, name, subject).set(entry.not_after)
            for kind, gauge in (("identity", self.identity_expiry), ("trust", self.trust_expiry)):
                if kind in soonest:
                    gauge.set(soonest[kind])
                else:
                    gauge.clear()

    def set_probe(self, results: Iterable[ProbeResult], now: float) -> None:
        with self._lock:
            self.probe_trusted.clear()
            for result in results:
                trusted = 1 if result.status in ("trusted", "skipped") else 0
                labels = (scrub(result.name), scrub(result.target), result.status)
                self.probe_trusted.labels(*labels).set(trusted)
            self.probe_time.set(now)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        with self._lock:
            return bytes(generate_latest(self.registry))


def _only(gauge: Gauge, label: str) -> None:
    """An info gauge's one series: `label` (scrubbed) at 1, any other value gone."""
    gauge.clear()
    gauge.labels(scrub(label)).set(1)


class _Optional:
    """A label-less gauge that is absent until set, and again after `clear`: never a stand-in 0.

    (A label-less prometheus_client Gauge always exports a sample, 0 before its first set.)"""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self._name = name
        self._documentation = documentation
        self._registry = registry
        self._gauge: Gauge | None = None

    def set(self, value: float) -> None:
        if self._gauge is None:
            from prometheus_client import Gauge

            self._gauge = Gauge(self._name, self._documentation, registry=self._registry)
        self._gauge.set(value)

    def clear(self) -> None:
        if self._gauge is not None:
            self._registry.unregister(self._gauge)
            self._gauge = None


def applied_expiry(settings: Settings) -> list[CertExpiry]:
    """The certificates as applied: every certificate in ROOT/data/cert.pem (the identity chain)
    and every managed trust file.

    Read from the targets rather than the desired state, so the gauges show what the gateway
    serves even while a newer desired state is rejected or suspended.
    """
    from reconciler.truststore import certificates_in, managed_files

    found: list[CertExpiry] = []
    from reconciler.core.layout import RootLayout

    leaf = RootLayout(settings.root).cert
    for index, cert in enumerate(certificates_in(leaf)):
        found.append(
            CertExpiry(
                "identity", "leaf" if index == 0 else f"chain-{index}",
                cert.subject.rfc4514_string(), cert.not_valid_after_utc.timestamp(),
            )
        )  # fmt: skip
    for entry, path in managed_files(settings.trust_path, settings.trust_prefix).items():
        for cert in certificates_in(path):
            found.append(
                CertExpiry(
                    "trust", entry, cert.subject.rfc4514_string(),
                    cert.not_valid_after_utc.timestamp(),
                )
            )  # fmt: skip
    return found
