"""The identity from a mounted TLS Secret (cert-manager's tls.crt / tls.key / ca.crt in key_dirs).

The Secret volume is written the way the kubelet writes it (tests.helpers.gitops.ConfigMapVolume):
a new `..TIMESTAMP` directory, `..data` swapped by rename, the old directory removed at once.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.core.evaluate import evaluate
from reconciler.source import files as statefiles
from reconciler.source.state import read_snapshot
from reconciler.support import devpki
from tests.helpers.daemon import Daemon, wait_for
from tests.helpers.gitops import ConfigMapVolume
from tests.helpers.passes import install_record_hook
from tests.helpers.sandbox import Sandbox
from tests.helpers.state import Pki, standard_state


def cert_manager_secret(pki: Pki, leaf: devpki.Issued | None = None) -> dict[str, bytes]:
    """What cert-manager puts in a kubernetes.io/tls Secret: the chain, the key, the CA."""
    chosen = leaf or pki.leaf
    return {
        "tls.crt": pki.chain(chosen),
        "tls.key": chosen.key_pem,
        "ca.crt": pki.root.cert_pem,
    }


def secret_identity(secret: Path) -> str:
    return (
        f'[identity]\ncert = "{secret}/tls.crt"\nkey = "{secret}/tls.key"\n\n'
        '[console]\nhttps = true\ntls_policy = "intermediate"\n'
    )


def test_cert_and_key_both_from_a_secret_volume(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    volume = ConfigMapVolume(tmp_path)
    volume.push(cert_manager_secret(pki))
    state.gateway(secret_identity(volume.root))
    inp = read_snapshot(state.path, [volume.root])
    assert inp.findings == ()
    assert inp.cert is not None
    assert (inp.cert.path, inp.cert.data) == (f"{volume.root}/tls.crt", pki.chain())
    evaluation = evaluate(inp, datetime.now(UTC))
    assert evaluation.desired is not None, [str(f) for f in evaluation.findings]
    identity = evaluation.desired.identity
    assert identity is not None


def test_a_renewal_changes_the_content_digest(tmp_path: Path, pki: Pki) -> None:
    """With a git STATE the commit does not move when cert-manager renews: the digest does."""
    state = standard_state(tmp_path / "state", pki)
    volume = ConfigMapVolume(tmp_path)
    volume.push(cert_manager_secret(pki))
    state.gateway(secret_identity(volume.root))
    before = read_snapshot(state.path, [volume.root]).content_digest
    volume.push(cert_manager_secret(pki, pki.leaf2))
    after = read_snapshot(state.path, [volume.root])
    assert after.content_digest != before
    assert after.cert is not None
    assert after.cert.data == pki.chain(pki.leaf2)


@pytest.mark.parametrize("key_dirs", [[], ["other"]], ids=["no-key-dirs", "other-key-dir"])
def test_absolute_cert_outside_key_dirs_is_an_error(
    tmp_path: Path, pki: Pki, key_dirs: list[str]
) -> None:
    state = standard_state(tmp_path / "state", pki)
    (tmp_path / "other").mkdir()
    stray = tmp_path / "stray.crt"
    stray.write_bytes(pki.chain())
    state.gateway(f'[identity]\ncert = "{stray}"\nkey = "tls/key.pem"\n')
    inp = read_snapshot(state.path, [tmp_path / d for d in key_dirs])
    errors = [f for f in inp.findings if f.severity == "error"]
    assert [(f.file, f.field) for f in errors] == [("gateway.toml", "identity.cert")]
    assert f"{stray}: an absolute cert path must be inside one of key_dirs" in errors[0].reason


def test_a_link_out_of_the_secret_volume_is_an_error(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    volume = ConfigMapVolume(tmp_path)
    volume.push(cert_manager_secret(pki))
    outside = tmp_path / "outside.crt"
    outside.write_bytes(pki.chain())
    (volume.root / "escape.crt").symlink_to(outside)
    state.gateway(f'[identity]\ncert = "{volume.root}/escape.crt"\nkey = "{volume.root}/tls.key"\n')
    inp = read_snapshot(state.path, [volume.root])
    errors = [f for f in inp.findings if f.severity == "error"]
    assert len(errors) == 1
    assert errors[0].field == "identity.cert"
    assert errors[0].reason == f"{volume.root}/escape.crt: leads outside key_dirs"


def test_a_path_into_a_kubelet_timestamp_directory_is_an_error(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    volume = ConfigMapVolume(tmp_path)
    volume.push(cert_manager_secret(pki))
    stamp = next(p.name for p in volume.root.iterdir() if p.name.startswith("..2"))
    state.gateway(secret_identity(volume.root / stamp))
    inp = read_snapshot(state.path, [volume.root])
    errors = [f for f in inp.findings if f.severity == "error"]
    assert {f.field for f in errors} == {"identity.cert", "identity.key"}
    assert all(
        f"points into the kubelet directory {stamp!r}, which is replaced" in f.reason
        for f in errors
    )
    assert not any(b"PRIVATE" in str(f).encode() for f in errors)


def test_a_renewal_between_the_cert_and_the_key_is_read_again(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kubelet swaps `..data` right after the cert was read: cert and key must never come
    from two versions (old chain, new key: a mismatch rejected for nothing)."""
    state = standard_state(tmp_path / "state", pki)
    volume = ConfigMapVolume(tmp_path)
    volume.push(cert_manager_secret(pki))
    state.gateway(secret_identity(volume.root))
    real_load = statefiles.FileReader.load
    swapped: list[str] = []

    def load_then_renew(self: statefiles.FileReader, real: str, shown: str, *args, **kw):  # type: ignore[no-untyped-def]
        data = real_load(self, real, shown, *args, **kw)
        if shown.endswith("tls.crt") and not swapped:
            swapped.append(shown)  # the renewal lands between the two reads, once
            volume.push(cert_manager_secret(pki, pki.leaf2))
        return data

    monkeypatch.setattr(statefiles.FileReader, "load", load_then_renew)
    inp = read_snapshot(state.path, [volume.root])
    assert swapped
    assert inp.findings == ()
    assert inp.cert is not None
    assert inp.key is not None
    assert inp.key.data is not None
    assert (inp.cert.data, inp.key.data.reveal()) == (pki.chain(pki.leaf2), pki.leaf2.key_pem)


# -- the daemon ---------------------------------------------------------------------------------


def test_daemon_applies_a_cert_manager_renewal_and_runs_the_hooks(
    sandbox: Sandbox, pki: Pki, start_daemon: Callable[..., Daemon]
) -> None:
    volume = ConfigMapVolume(sandbox.base)
    volume.push(cert_manager_secret(pki))
    sandbox.identity_from_key_dir(secret_identity(volume.root), volume.root)
    hook_log = install_record_hook(sandbox)
    daemon = start_daemon()
    cert = sandbox.root / "data" / "cert.pem"
    assert cert.read_bytes() == pki.chain()
    runs = len(hook_log.read_text().splitlines())

    volume.push(cert_manager_secret(pki, pki.leaf2))
    # The hooks run once every target of the pass is in place; until then a reader can catch
    # the run of renames half done (the new cert.pem, the old key.pem).
    wait_for(
        lambda: len(hook_log.read_text().splitlines()) > runs, "the hook after the renewal", daemon
    )
    assert cert.read_bytes() == pki.chain(pki.leaf2)
    assert (sandbox.root / "data" / "key.pem").read_bytes() == pki.leaf2.key_pem
    phase, _, kinds = hook_log.read_text().splitlines()[-1].split()
    assert phase == "apply"
    assert "identity" in kinds.split(",")
    renewed = [r for r in daemon.audit("change.applied") if r["path"].endswith("data/cert.pem")]
    assert "gateway2.test" in renewed[-1]["subject"]
    assert daemon.stop(signal.SIGTERM) == 0
