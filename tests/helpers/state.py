"""Desired states for tests: a throwaway PKI, the sample gateway.toml, a state directory writer."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

from bench.workspace import gateway_toml
from reconciler.support import devpki

GATEWAY_TOML = gateway_toml().decode()
"""identity from tls/, an HTTPS console with the intermediate policy, optional inbound STARTTLS."""

SECRET_KEY_PATH = "/run/secrets/gateway/tls.key"

GITOPS_GATEWAY = f"""\
[identity]
cert = "tls/cert.pem"
key = "{SECRET_KEY_PATH}"

[console]
https = true

[smtp_inbound]
tls = "required"
"""
"""A GitOps repository's gateway.toml: the key is not in the repository but a mounted secret."""


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


def make_pki() -> Pki:
    root = devpki.make_ca("Test Root CA")
    intermediate = devpki.make_ca("Test Intermediate CA", issuer=root)
    return Pki(
        root=root,
        intermediate=intermediate,
        leaf=devpki.issue(intermediate, "gateway.test"),
        leaf2=devpki.issue(intermediate, "gateway2.test"),
        other_ca=devpki.make_ca("Other Test CA"),
    )


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
