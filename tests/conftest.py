"""Shared fixtures: a throwaway PKI, desired-state builders and a sandboxed install base."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reconciler import devpki
from reconciler.devpki import Issued, make_ca
from reconciler.settings import Settings
from reconciler.settingsload import load_settings
from reconciler.trustbackends import DebianTrustStore, trust_store_from_settings

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Pki:
    """A root, an intermediate and two leaves signed by it: built once per test session."""

    root: devpki.Issued
    intermediate: devpki.Issued
    leaf: devpki.Issued
    leaf2: devpki.Issued
    other_ca: devpki.Issued

    def chain(self, leaf: devpki.Issued | None = None) -> bytes:
        return (leaf or self.leaf).cert_pem + self.intermediate.cert_pem


@pytest.fixture(scope="session")
def pki() -> Pki:
    root = devpki.make_ca("Test Root CA")
    intermediate = devpki.make_ca("Test Intermediate CA", issuer=root)
    return Pki(
        root=root,
        intermediate=intermediate,
        leaf=devpki.issue(intermediate, "gateway.test"),
        leaf2=devpki.issue(intermediate, "gateway2.test"),
        other_ca=devpki.make_ca("Other Test CA"),
    )


GATEWAY_TOML = """\
[identity]
cert = "tls/cert.pem"
key = "tls/key.pem"

[console]
https = true
tls_policy = "intermediate"

[smtp_inbound]
tls = "optional"
"""


@dataclass
class StateDir:
    """A desired-state directory a test writes into."""

    path: Path

    def write(self, rel: str, data: bytes | str) -> Path:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.encode() if isinstance(data, str) else data)
        return target

    def remove(self, rel: str) -> None:
        (self.path / rel).unlink()

    def gateway(self, text: str) -> None:
        self.write("gateway.toml", textwrap.dedent(text))

    def identity(self, pki: Pki, leaf: devpki.Issued | None = None) -> None:
        chosen = leaf or pki.leaf
        self.write("tls/cert.pem", pki.chain(chosen))
        self.write("tls/key.pem", chosen.key_pem)

    def trust(self, name: str, pem: bytes) -> None:
        self.write(f"trust/{name}.pem", pem)

    def profile(self, name: str, text: str) -> None:
        self.write(f"profiles/{name}.toml", textwrap.dedent(text))


def standard_state(path: Path, pki: Pki) -> StateDir:
    """A valid state: identity, HTTPS console, inbound STARTTLS, one trust entry, two profiles."""
    state = StateDir(path)
    state.gateway(GATEWAY_TOML)
    state.identity(pki)
    state.trust("partner-ca", pki.other_ca.cert_pem)
    state.profile("relay", 'url = "smtps://relay.example.com"\n')
    state.profile("core", 'url = "https://core.example.com/api"\n')
    return state


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
        self.write_config()
        env = {**os.environ, **self.env, "RECONCILER_CONFIG": str(self.config)}
        return subprocess.run(
            [sys.executable, "-m", "reconciler", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=check,
            cwd=REPO,
        )

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


@pytest.fixture
def sandbox(tmp_path: Path, pki: Pki) -> Sandbox:
    box = Sandbox(tmp_path, standard_state(tmp_path / "state", pki))
    for directory in (box.root / "data", box.root / "nginx", box.trust_dir):
        directory.mkdir(parents=True)
    box.write_config()
    return box


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


@pytest.fixture
def debian(tmp_path: Path) -> DebianSandbox:
    dirs = [tmp_path / name for name in ("share", "local", "etc-ssl-certs", "hooks")]
    for directory in dirs:
        directory.mkdir()
    system_ca = make_ca("Stand-in Distribution Root")
    # The distribution's CAs: without at least one, the script keeps a stale bundle when the
    # last local entry goes (it only replaces the bundle when it wrote a new one).
    (dirs[0] / "stand-in-root.crt").write_bytes(system_ca.cert_pem)
    conf = tmp_path / "ca-certificates.conf"
    conf.write_text("# stand-in for /etc/ca-certificates.conf\nstand-in-root.crt\n")
    share, local, etc, hooks = dirs
    return DebianSandbox(share, local, etc, hooks, conf=conf, system_ca=system_ca)
