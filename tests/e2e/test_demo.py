"""The README's first command: the demo runs the daemon on desired-state/ and stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO
from tests.helpers.net import free_port
from tests.helpers.waiting import wait_for


def test_demo_script_applies_the_example_state_then_exits_0_on_sigterm(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DEMO_DIR": str(tmp_path / "demo"),
        "DEMO_LOG_FORMAT": "json",
        "DEMO_METRICS_PORT": str(free_port()),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    env.pop("RECONCILER_CONFIG", None)
    process = subprocess.Popen(
        ["bash", str(REPO / "demo.sh")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    audit = tmp_path / "demo" / "var" / "audit.jsonl"
    try:

        def converged() -> bool:
            if not audit.exists():
                return False
            events = [json.loads(line)["event"] for line in audit.read_text().splitlines()]
            return "pass.succeeded" in events

        wait_for(converged, "the demo's first pass", timeout=60)
        root = tmp_path / "demo" / "root"
        assert (root / "data" / "cert.pem").exists()
        assert (root / "nginx" / "ssl.conf").exists()
        profiles = json.loads((root / "data" / "server-profiles.json").read_text())
        assert [p["name"] for p in profiles["profiles"]] == ["core", "partner-mx", "relay", "vault"]
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "valid, revision" in output
    assert "daemon.stopped" in output
