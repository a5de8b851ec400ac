"""The identity from certbot's live directory, in the layout and renewal order of certbot's code.

`tests.helpers.certbot` runs certbot's own lineage code (Debian's python3-certbot) offline: the
lineage, its numbered archive files, the relative links of `live/NAME` and the relinking of a
renewal are certbot's, only the CA's answer is generated here.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.core.evaluate import StateInput, evaluate
from reconciler.source.state import read_snapshot
from reconciler.support import devpki
from tests.helpers.certbot import CertbotTree, local_runner, require_certbot
from tests.helpers.daemon import Daemon, wait_for
from tests.helpers.passes import install_record_hook
from tests.helpers.sandbox import Sandbox
from tests.helpers.state import Pki, StateDir, standard_state

NAME = "gateway.test"


@pytest.fixture
def certbot(tmp_path: Path) -> CertbotTree:
    python = require_certbot()
    return CertbotTree(
        str(tmp_path / "letsencrypt"), str(tmp_path / "certbot-scratch"), local_runner(python)
    )


def certbot_identity(live: str) -> str:
    return (
        f'[identity]\ncert = "{live}/fullchain.pem"\nkey = "{live}/privkey.pem"\n\n'
        '[console]\nhttps = true\ntls_policy = "intermediate"\n'
    )


def with_lineage(tmp_path: Path, pki: Pki, certbot: CertbotTree) -> StateDir:
    """A desired state whose identity is certbot's lineage NAME, holding pki.leaf."""
    certbot.issue(NAME, pki.leaf, pki.intermediate.cert_pem)
    state = standard_state(tmp_path / "state", pki)
    state.gateway(certbot_identity(certbot.live(NAME)))
    return state


def identity_read(inp: StateInput) -> tuple[bytes | None, bytes | None]:
    """The certificate chain and the key a read found."""
    assert inp.cert is not None
    assert inp.key is not None
    return inp.cert.data, inp.key.data.reveal() if inp.key.data is not None else None


def errors_of(inp: StateInput) -> list[str]:
    return [f"{f.field}: {f.reason}" for f in inp.findings if f.severity == "error"]


def test_certbots_live_directory_as_a_key_dir_is_read_through_its_links(
    tmp_path: Path, pki: Pki, certbot: CertbotTree
) -> None:
    state = with_lineage(tmp_path, pki, certbot)
    live = certbot.live(NAME)
    assert os.readlink(f"{live}/privkey.pem") == f"../../archive/{NAME}/privkey1.pem"
    inp = read_snapshot(state.path, [Path(live)])
    assert inp.findings == ()
    assert inp.cert is not None
    assert inp.cert.path == f"{live}/fullchain.pem"
    assert identity_read(inp) == (pki.chain(), pki.leaf.key_pem)
    evaluation = evaluate(inp, datetime.now(UTC))
    assert evaluation.desired is not None, [str(f) for f in evaluation.findings]


def test_a_renewal_is_read_with_its_new_key(tmp_path: Path, pki: Pki, certbot: CertbotTree) -> None:
    state = with_lineage(tmp_path, pki, certbot)
    live = Path(certbot.live(NAME))
    before = read_snapshot(state.path, [live])
    certbot.renew(NAME, pki.leaf2, pki.intermediate.cert_pem)
    assert os.readlink(live / "fullchain.pem") == f"../../archive/{NAME}/fullchain2.pem"
    after = read_snapshot(state.path, [live])
    assert after.findings == ()
    assert after.content_digest != before.content_digest
    assert identity_read(after) == (pki.chain(pki.leaf2), pki.leaf2.key_pem)


def test_a_renewal_that_reuses_the_key_is_read(
    tmp_path: Path, pki: Pki, certbot: CertbotTree
) -> None:
    """`certbot renew --reuse-key`: a new certificate for the lineage's current key."""
    state = with_lineage(tmp_path, pki, certbot)
    same_key = devpki.issue(pki.intermediate, "gateway.test", key=pki.leaf.key)
    certbot.renew(NAME, same_key, pki.intermediate.cert_pem, reuse_key=True)
    inp = read_snapshot(state.path, [Path(certbot.live(NAME))])
    assert inp.findings == ()
    assert identity_read(inp) == (pki.chain(same_key), pki.leaf.key_pem)


def test_the_whole_live_tree_as_a_key_dir_is_read_too(
    tmp_path: Path, pki: Pki, certbot: CertbotTree
) -> None:
    """key_dirs = ["/etc/letsencrypt/live"]: every lineage under it."""
    state = with_lineage(tmp_path, pki, certbot)
    inp = read_snapshot(state.path, [Path(certbot.config_dir) / "live"])
    assert inp.findings == ()


@pytest.mark.parametrize("where", ["another lineage", "outside the tree", "the live README"])
def test_a_link_anywhere_but_the_lineages_archive_is_refused(
    tmp_path: Path, pki: Pki, certbot: CertbotTree, where: str
) -> None:
    state = with_lineage(tmp_path, pki, certbot)
    certbot.issue("other.test", pki.leaf2, pki.intermediate.cert_pem)
    live = Path(certbot.live(NAME))
    stray = tmp_path / "stray.pem"
    stray.write_bytes(pki.leaf2.key_pem)
    target = {
        "another lineage": "../../archive/other.test/privkey1.pem",
        "outside the tree": str(stray),
        "the live README": "../README",
    }[where]
    (live / "planted.pem").symlink_to(target)
    state.gateway(certbot_identity(str(live)).replace("privkey.pem", "planted.pem"))
    inp = read_snapshot(state.path, [live])
    archive = os.path.realpath(certbot.archive(NAME))
    assert errors_of(inp) == [
        f"identity.key: {live}/planted.pem: leads outside key_dirs and certbot's {archive}"
    ]
    assert inp.key is not None
    assert inp.key.data is None


def test_an_archive_that_is_a_link_elsewhere_is_no_certbot_archive(
    tmp_path: Path, pki: Pki, certbot: CertbotTree
) -> None:
    state = with_lineage(tmp_path, pki, certbot)
    archive = Path(certbot.archive(NAME))
    elsewhere = tmp_path / "elsewhere"
    archive.rename(elsewhere)
    archive.symlink_to(elsewhere)
    live = certbot.live(NAME)
    inp = read_snapshot(state.path, [Path(live)])
    assert errors_of(inp) == [
        f"identity.cert: {live}/fullchain.pem: leads outside key_dirs",
        f"identity.key: {live}/privkey.pem: leads outside key_dirs",
    ]


def test_a_lineage_being_relinked_is_in_transit_not_rejected(
    tmp_path: Path, pki: Pki, certbot: CertbotTree
) -> None:
    """Between certbot's first `previous_` link and the removal of the last one, the four links
    may belong to two versions: read again, never a mismatch rejected (or applied)."""
    state = with_lineage(tmp_path, pki, certbot)
    certbot.renew(NAME, pki.leaf2, pki.intermediate.cert_pem)
    live = Path(certbot.live(NAME))
    # certbot's update_all_links_to back to version 1, stopped after its first relink: the
    # `previous_` links made, fullchain at 1, privkey still at 2 (a key that does not match).
    for kind in ("cert", "chain", "fullchain", "privkey"):
        (live / f"previous_{kind}.pem").symlink_to(os.readlink(live / f"{kind}.pem"))
    (live / "fullchain.pem").unlink()
    (live / "fullchain.pem").symlink_to(f"../../archive/{NAME}/fullchain1.pem")
    inp = read_snapshot(state.path, [live])
    assert inp.in_transit
    assert [f.rule for f in inp.findings] == ["state-in-transit"]
    assert f"certbot is relinking {os.path.realpath(live)}" in inp.findings[0].reason
    # certbot finishes: the rest relinked, the `previous_` links removed.
    for kind in ("cert", "chain", "privkey"):
        (live / f"{kind}.pem").unlink()
        (live / f"{kind}.pem").symlink_to(f"../../archive/{NAME}/{kind}1.pem")
    for kind in ("cert", "chain", "fullchain", "privkey"):
        (live / f"previous_{kind}.pem").unlink()
    inp = read_snapshot(state.path, [live])
    assert inp.findings == ()
    assert inp.cert is not None
    assert inp.cert.data == pki.chain()


# -- the daemon ---------------------------------------------------------------------------------


def test_daemon_applies_a_certbot_renewal_without_a_deploy_hook(
    sandbox: Sandbox, pki: Pki, certbot: CertbotTree, start_daemon: Callable[..., Daemon]
) -> None:
    certbot.issue(NAME, pki.leaf, pki.intermediate.cert_pem)
    live = certbot.live(NAME)
    sandbox.identity_from_key_dir(certbot_identity(live), live)
    hook_log = install_record_hook(sandbox)
    daemon = start_daemon()
    cert = sandbox.root / "data" / "cert.pem"
    assert cert.read_bytes() == pki.chain()
    runs = len(hook_log.read_text().splitlines())

    certbot.renew(NAME, pki.leaf2, pki.intermediate.cert_pem)
    # The hooks run once every target of the pass is in place; until then a reader can catch
    # the run of renames half done (the new cert.pem, the old key.pem).
    wait_for(
        lambda: len(hook_log.read_text().splitlines()) > runs, "the hook after the renewal", daemon
    )
    assert cert.read_bytes() == pki.chain(pki.leaf2)
    assert (sandbox.root / "data" / "key.pem").read_bytes() == pki.leaf2.key_pem
    assert not daemon.audit("state.rejected"), "a renewal half relinked was rejected"
    renewed = [r for r in daemon.audit("change.applied") if r["path"].endswith("data/cert.pem")]
    assert "gateway2.test" in renewed[-1]["subject"]
    assert daemon.stop(signal.SIGTERM) == 0
