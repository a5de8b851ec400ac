"""What the installed nginx accepts: `nginx -v` asked once per binary file, read by the core.

A stand-in nginx (a shell script printing a version) answers; the real nginx's own dialect is
tested in test_nginx_integration.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from reconciler.core.render import ssl_on_supported
from reconciler.errors import SettingsError
from reconciler.gateway import nginx
from tests.helpers.nginx import require_nginx


def _fake_nginx(tmp_path: Path, body: str) -> str:
    tmp_path.mkdir(exist_ok=True)
    script = tmp_path / "fake-nginx"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


class TestDetectSslOn:
    def test_an_explicit_setting_wins(self) -> None:
        assert nginx.detect_ssl_on(True, "/nonexistent/nginx") is True
        assert nginx.detect_ssl_on(False, "/nonexistent/nginx") is False

    def test_auto_without_nginx_is_false(self, tmp_path: Path) -> None:
        assert nginx.detect_ssl_on("auto", str(tmp_path / "no-such-nginx")) is False

    @pytest.mark.parametrize(("version", "expected"), [("1.22.1", True), ("1.25.3", False)])
    def test_auto_reads_the_version_nginx_prints(
        self, tmp_path: Path, version: str, expected: bool
    ) -> None:
        binary = _fake_nginx(tmp_path, f"echo 'nginx version: nginx/{version}' >&2")
        assert nginx.detect_ssl_on("auto", binary) is expected

    def test_nginx_is_asked_once_until_the_binary_changes(self, tmp_path: Path) -> None:
        """An upgrade replaces the binary: the next pass asks the new one, no cache cleared."""
        calls = tmp_path / "calls"
        binary = _fake_nginx(tmp_path, f"echo x >> {calls}\necho 'nginx version: nginx/1.22.1' >&2")
        assert nginx.detect_ssl_on("auto", binary)
        assert nginx.detect_ssl_on("auto", binary)
        assert calls.read_text().count("x") == 1
        upgraded = _fake_nginx(
            tmp_path / "new", f"echo y >> {calls}\necho 'nginx version: nginx/1.26.2' >&2"
        )
        os.replace(upgraded, binary)  # as dpkg installs a new version: a new file renamed over
        assert nginx.detect_ssl_on("auto", binary) is False
        assert calls.read_text().count("y") == 1

    def test_a_failing_nginx_is_a_settings_error(self, tmp_path: Path) -> None:
        binary = _fake_nginx(tmp_path, "echo 'cannot load libssl' >&2\nexit 3")
        with pytest.raises(SettingsError, match=r"exited with 3 \(cannot load libssl\)"):
            nginx.detect_ssl_on("auto", binary)

    def test_a_hanging_nginx_is_a_settings_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(nginx, "VERSION_TIMEOUT_S", 0.5)
        binary = _fake_nginx(tmp_path, "exec sleep 60")
        with pytest.raises(SettingsError, match=r"did not answer within 0\.5 s"):
            nginx.detect_ssl_on("auto", binary)

    @pytest.mark.nginx
    def test_auto_agrees_with_the_installed_nginx(self) -> None:
        binary = require_nginx()
        printed = subprocess.run(
            [binary, "-v"], capture_output=True, text=True, check=True, timeout=30
        ).stderr
        assert nginx.detect_ssl_on("auto", binary) is ssl_on_supported(printed)
