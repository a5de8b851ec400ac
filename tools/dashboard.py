"""The Grafana dashboard for a fleet of reconcilers, as code: `dashboard()` is the JSON that
`tools/generate.py` writes to deploy/grafana/reconciler.json.

Every query is PromQL over the daemons' metrics and deploy/prometheus's recording rules; Grafana's
own interval variables ($__rate_interval, $__range) are the only templating in them.
`bench/fleet.py --check-queries` runs each against a real Prometheus scraping real daemons.
"""

from __future__ import annotations

import json
from typing import Any

UID = "reconciler-fleet"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _target(expr: str, legend: str = "", *, table: bool = False, ref: str = "A") -> dict[str, Any]:
    target: dict[str, Any] = {"datasource": DATASOURCE, "expr": expr, "refId": ref}
    if table:
        target |= {"format": "table", "instant": True, "range": False}
    else:
        target |= {"legendFormat": legend or "__auto", "range": True}
    return target


def _panel(
    number: int,
    kind: str,
    title: str,
    description: str,
    grid: tuple[int, int, int, int],
    targets: list[dict[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    x, y, w, h = grid
    return {
        "id": number,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": targets,
        **extra,
    }


def _days(expr: str) -> str:
    return f"({expr} - time()) / 86400"


def panels() -> list[dict[str, Any]]:
    """The panels, top to bottom: rollout, passes, expiry, hooks, probes."""
    percent = {"defaults": {"unit": "percentunit", "min": 0, "max": 1}, "overrides": []}
    days = {
        "defaults": {
            "unit": "d",
            "decimals": 1,
            "thresholds": {
                "mode": "absolute",
                "steps": [
                    {"color": "red", "value": None},
                    {"color": "orange", "value": 3},
                    {"color": "green", "value": 14},
                ],
            },
            "custom": {"cellOptions": {"type": "color-background"}},
        },
        "overrides": [],
    }
    return [
        _panel(
            1, "stat", "Gateways on the newest revision",
            "Gateways whose applied revision is the one the fleet was given last (recording "
            "rules of deploy/prometheus), and their share of every scraped gateway.",
            (0, 0, 8, 6),
            [
                _target("reconciler:gateways_on_newest_revision:count", "gateways"),
                _target("reconciler:gateways_on_newest_revision:ratio", "share", ref="B"),
            ],
        ),
        _panel(
            2, "table", "Applied and desired revision per gateway",
            "A gateway whose desired revision is new but whose applied one is old received the "
            "push and did not apply it; one whose desired revision is old has a stuck delivery.",
            (8, 0, 16, 6),
            [
                _target(
                    "max by (instance, revision) (reconciler_applied_revision_info)", table=True
                ),
                _target(
                    "max by (instance, revision) (reconciler_desired_revision_info)",
                    table=True, ref="B",
                ),
            ],
        ),
        _panel(
            3, "timeseries", "Rejected and failed passes",
            "Passes whose desired state was rejected as invalid, or that failed and were rolled "
            "back, per gateway; the last good configuration serves meanwhile.",
            (0, 6, 12, 8),
            [
                _target(
                    'sum by (instance, outcome) (increase(reconciler_passes_total'
                    '{outcome=~"rejected|failed"}[$__rate_interval]))',
                    "{{instance}} {{outcome}}",
                ),
            ],
        ),
        _panel(
            4, "stat", "Gateways rejecting, failing, suspended or not ready",
            "Now: the desired state is rejected; 1 or more passes in a row failed; applying is "
            "suspended; no verified configuration serves.",
            (12, 6, 12, 8),
            [
                _target("sum(reconciler_state_rejected)", "rejecting"),
                _target(
                    "count(reconciler_consecutive_failures > 0) or vector(0)", "failing", ref="B"
                ),
                _target("sum(reconciler_suspended)", "suspended", ref="C"),
                _target("count(reconciler_ready == 0) or vector(0)", "not ready", ref="D"),
            ],
        ),
        _panel(
            5, "table", "Identity and trust expiry (days left)",
            "The soonest notAfter of each gateway's applied identity chain and trust entries.",
            (0, 14, 12, 8),
            [
                _target(_days("reconciler_identity_expiry_timestamp_seconds"), table=True),
                _target(_days("reconciler_trust_expiry_timestamp_seconds"), table=True, ref="B"),
            ],
            fieldConfig=days,
        ),
        _panel(
            6, "timeseries", "Hook failures",
            "Hook commands (check or run) that failed, timed out or could not start, per "
            "gateway and hook.",
            (12, 14, 12, 8),
            [
                _target(
                    "sum by (instance, hook) (increase(reconciler_hook_failures_total"
                    "[$__rate_interval]))",
                    "{{instance}} {{hook}}",
                ),
            ],
        ),
        _panel(
            7, "timeseries", "Hook duration, 90th percentile",
            "How long hook commands take, across the fleet.",
            (0, 22, 12, 8),
            [
                _target(
                    "histogram_quantile(0.9, sum by (le, hook) "
                    "(rate(reconciler_hook_duration_seconds_bucket[$__range])))",
                    "{{hook}}",
                ),
            ],
            fieldConfig={"defaults": {"unit": "s"}, "overrides": []},
        ),
        _panel(
            8, "table", "Outbound TLS probes",
            "With probe_interval_s: each server of each profile, 1 when its chain and host name "
            "verify; the status says why not (untrusted, unreachable, no-starttls).",
            (12, 22, 12, 8),
            [
                _target(
                    "max by (instance, profile, server, status) (reconciler_probe_trusted)",
                    table=True,
                )
            ],
        ),
        _panel(
            9, "timeseries", "Share of gateways on the newest revision",
            "The rollout of each push over time.",
            (0, 30, 24, 7),
            [_target("reconciler:gateways_on_newest_revision:ratio", "share")],
            fieldConfig=percent,
        ),
    ]  # fmt: skip


def dashboard() -> dict[str, Any]:
    return {
        "uid": UID,
        "title": "reconciler fleet",
        "description": "Mail gateway TLS reconcilers: rollout, rejected and failed passes, "
        "expiry, hooks and probes (deploy/grafana, docs/metrics.md).",
        "tags": ["reconciler", "tls"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels(),
    }


def queries(document: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every query in a dashboard document."""
    return [
        (panel["title"], target["expr"])
        for panel in document["panels"]
        for target in panel.get("targets", [])
    ]


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"
