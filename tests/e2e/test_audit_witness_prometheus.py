"""Heads kept by the fleet's Prometheus: the real Prometheus the fleet bench starts scrapes a
gateway while it applies pushes and its log rotates; the documented query turns what Prometheus
kept into a witness file, and every attack on the log is caught with it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bench.fleet import Fleet, Gateway, GitSync, Origin, Prometheus, free_ports
from bench.harness import stop
from reconciler.audit.witness import read_head
from tests.helpers.attacks import log_files, rotate, run_attacks
from tests.helpers.prometheus import require_prometheus_tool
from tests.helpers.recipes import recipe, replaced, run_recipe
from tests.helpers.waiting import wait_for


def test_heads_kept_by_the_fleet_prometheus_catch_every_attack(tmp_path: Path) -> None:
    binary = require_prometheus_tool("prometheus")
    fleet = Fleet(tmp_path)
    try:
        origin = Origin(tmp_path / "origin", 1)
        origin.commit("the fleet")
        sync = GitSync(tmp_path / "git-sync", origin.path)
        sync.sync()
        gateway_port, prometheus_port = free_ports(2)
        (name,) = origin.names
        gateway = Gateway(name, tmp_path / "gw" / name, gateway_port)
        instance = f"127.0.0.1:{gateway_port}"
        prometheus = Prometheus(fleet, prometheus_port, [instance], binary)
        config = gateway.config(sync.link / "gateways" / name)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
        daemon = fleet.spawn(
            [sys.executable, "-m", "reconciler", "run"],
            gateway.base / "daemon.log",
            {**env, "RECONCILER_CONFIG": str(config)},
        )
        var = gateway.base / "var"

        def scraped(after: int = 0) -> int:
            """The log's head seq once it is beyond `after` and Prometheus holds it, else 0."""
            assert daemon.poll() is None, (gateway.base / "daemon.log").read_text()[-2000:]
            head = read_head(var / "audit.jsonl")
            if head is None or head.seq <= after:
                return 0
            found = prometheus.query(f'reconciler_audit_head_info{{hash="{head.hash}"}}')
            return head.seq if found else 0

        seq = wait_for(scraped, "the first pass's head in Prometheus", timeout=60)
        for number in range(1, 7):
            origin.push_good()
            sync.sync()
            seq = wait_for(lambda after=seq: scraped(after), f"push {number}'s head", timeout=60)
            if number in (2, 4):
                rotate(var)
        assert stop(daemon) == 0

        script = replaced(
            recipe("sh", "api/v1/query"),
            {
                "http://prometheus.example.net:9090": prometheus.url,
                "gw1.example.net:9465": instance,
            },
        )
        done = run_recipe(script, tmp_path, config)
        assert done.returncode == 0, done.stdout + done.stderr
        heads = tmp_path / "heads-prometheus.txt"
        assert len(heads.read_text().splitlines()) >= 7
        assert "match" in done.stdout
        run_attacks(log_files(var), heads, tmp_path / "attacks")
    finally:
        fleet.close()
