"""Sandboxed installs for tests: ROOT, var and trust dirs, settings; a Debian trust store."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.config.load import load_settings
from reconciler.config.model import Settings
from reconciler.support.devpki import Issued
from reconciler.truststore.backends import DebianTrustStore, trust_store_from_settings
from tests.helpers import REPO
from tests.helpers.state import StateDir


@dataclass
class Sandbox:
    """An install base, var dir and trust dir under tmp_path, with a settings file for them."""

    base: Path
    state: StateDir
    hooks: str = ""
    extra: str = ""
    env: dict[str, str] = field(default_factory=dict)
    root_dir: Path | None = None
    """ROOT somewhere else than BASE/root (a small file system, say)."""
    trust_settings: str | None = None
    """Trust store settings instead of the default directory backend on BASE/trust."""

    @property
    def root(self) -> Path:
        return self.root_dir or self.base / "root"

    @property
    def var(self) -> Path:
        return self.base / "var"

    @property
    def trust_dir(self) -> Path:
        return self.base / "trust"

    @property
    def config(self) -> Path:
        return self.base / "reconciler.toml"

    def identity_from_key_dir(self, gateway: str, key_dir: Path | str) -> None:
        """The identity read from `key_dir` (a mounted Secret, certbot's live directory): STATE's
        gateway.toml names it, STATE's own tls/ files go, the settings list the key dir."""
        self.state.gateway(gateway)
        self.state.remove("tls/key.pem")
        self.state.remove("tls/cert.pem")
        self.extra = f'key_dirs = ["{key_dir}"]\n'

    def write_config(self) -> Path:
        trust = self.trust_settings or (
            f'trust_store = "directory"\ntrust_dir = "{self.trust_dir}"\n'
        )
        self.config.write_text(
            f'state_dir = "{self.state.path}"\n'
            f'root = "{self.root}"\n'
            f'var_dir = "{self.var}"\n'
            f"{trust}"
            "nginx_ssl_on = false\n"
            'log_format = "json"\n'
            f"{self.extra}\n{self.hooks}\n"
        )
        return self.config

    def settings(self) -> Settings:
        return load_settings(self.write_config())

    def run(
        self, *args: str, check: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """The real command line, in a child process."""
        return subprocess.run(
            self._command(args),
            capture_output=True,
            text=True,
            env=self._environment(),
            timeout=timeout,
            check=check,
            cwd=REPO,
        )

    def run_bytes(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        """`run`, its output as bytes: nothing it wrote is decoded away."""
        return subprocess.run(
            self._command(args),
            capture_output=True,
            env=self._environment(),
            timeout=timeout,
            check=False,
            cwd=REPO,
        )

    def _command(self, args: tuple[str, ...]) -> list[str]:
        self.write_config()
        return [sys.executable, "-m", "reconciler", *args]

    def _environment(self) -> dict[str, str]:
        return {**os.environ, **self.env, "RECONCILER_CONFIG": str(self.config)}

    def targets(self) -> dict[str, bytes]:
        """Every file under ROOT and the trust dir: what a pass may change."""
        found = {}
        for top in (self.root, self.trust_dir):
            for path in sorted(top.rglob("*")):
                if path.is_file() or path.is_symlink():
                    found[str(path.relative_to(self.base))] = (
                        path.read_bytes() if path.is_file() else b"-> " + os.readlink(path).encode()
                    )
        return found


@dataclass
class DebianSandbox:
    """update-ca-certificates pointed at temporary directories, with one 'system' CA."""

    certsdir: Path
    localdir: Path
    etcdir: Path
    hooksdir: Path
    conf: Path
    system_ca: Issued

    @property
    def argv(self) -> tuple[str, ...]:
        return (
            "update-ca-certificates",
            # --certsconf: the script reads /etc/ca-certificates.conf unless told otherwise.
            "--certsconf", str(self.conf),
            "--certsdir", str(self.certsdir),
            "--localcertsdir", str(self.localdir),
            "--etccertsdir", str(self.etcdir),
            "--hooksdir", str(self.hooksdir),
        )  # fmt: skip

    def store(self) -> DebianTrustStore:
        settings = Settings(trust_store="debian", trust_dir=self.localdir, trust_refresh=self.argv)
        store = trust_store_from_settings(settings)
        assert isinstance(store, DebianTrustStore)
        return store
