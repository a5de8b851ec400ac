"""Trust entries through whole passes: the real update-ca-certificates, and a refresh that lies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from reconciler.support.devpki import make_ca
from tests.helpers.sandbox import DebianSandbox, Sandbox
from tests.helpers.state import Pki

pytestmark = pytest.mark.skipif(
    shutil.which("update-ca-certificates") is None, reason="update-ca-certificates not installed"
)


def _bundle(path: Path) -> set[bytes]:
    return {
        c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(path.read_bytes())
    }


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


def _use_debian(sandbox: Sandbox, debian: DebianSandbox) -> None:
    argv = ", ".join(f'"{arg}"' for arg in debian.argv)
    sandbox.trust_settings = (
        f'trust_store = "debian"\ntrust_dir = "{debian.localdir}"\ntrust_refresh = [{argv}]\n'
    )


def test_debian_backend_add_change_remove_through_passes(
    sandbox: Sandbox, pki: Pki, debian: DebianSandbox
) -> None:
    _use_debian(sandbox, debian)
    foreign = debian.localdir / "installed-by-admin.crt"
    admin_ca = make_ca("Admin CA")
    foreign.write_bytes(admin_ca.cert_pem)
    system = _der(debian.system_ca.cert_pem)

    assert sandbox.run("apply").returncode == 0
    bundle = debian.etcdir / "ca-certificates.crt"
    assert _bundle(bundle) == {system, _der(admin_ca.cert_pem), _der(pki.other_ca.cert_pem)}

    renewed = make_ca("Partner CA renewed")
    sandbox.state.trust("partner-ca", renewed.cert_pem)
    sandbox.state.trust("root-ca", pki.root.cert_pem)
    assert sandbox.run("apply").returncode == 0
    assert _bundle(bundle) == {
        system,
        _der(admin_ca.cert_pem),
        _der(renewed.cert_pem),
        _der(pki.root.cert_pem),
    }

    sandbox.state.remove("trust/partner-ca.pem")
    sandbox.state.remove("trust/root-ca.pem")
    result = sandbox.run("apply")
    assert result.returncode == 0, result.stderr
    assert _bundle(bundle) == {system, _der(admin_ca.cert_pem)}
    assert foreign.read_bytes() == admin_ca.cert_pem
    assert sorted(p.name for p in debian.localdir.iterdir()) == ["installed-by-admin.crt"]
    # removals ran with --fresh: no dangling links to removed entries remain
    assert all(p.exists() for p in debian.etcdir.iterdir())


def test_refresh_that_does_not_install_the_entry_fails_the_pass_and_rolls_back(
    sandbox: Sandbox, pki: Pki
) -> None:
    """A refresh command that exits 0 but leaves the store without our certificate is a failure."""
    sandbox.extra = 'trust_refresh = ["true"]'
    result = sandbox.run("apply")
    assert result.returncode == 1
    assert "trust store refresh did not install" in result.stderr
    assert "CN=Other Test CA" in result.stderr
    assert not (sandbox.trust_dir / "reconciler-partner-ca.crt").exists()
    assert not (sandbox.root / "data" / "key.pem").exists()


def test_trust_refresh_runs_only_when_a_trust_entry_changed(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    counter = tmp_path / "refreshes"
    script = tmp_path / "refresh.sh"
    script.write_text(f'#!/bin/sh\necho run >> "{counter}"\nexec openssl rehash "$1"\n')
    script.chmod(0o755)
    sandbox.extra = f'trust_refresh = ["{script}", "{sandbox.trust_dir}"]'
    assert sandbox.run("apply").returncode == 0
    assert counter.read_text().count("run") == 1
    sandbox.state.profile("relay", 'url = "smtps://relay3.example.com"\n')
    assert sandbox.run("apply").returncode == 0
    assert counter.read_text().count("run") == 1
