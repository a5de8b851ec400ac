"""The directory backend's links made in process are the links `openssl rehash` makes.

Every scenario runs the same file operations on two directories, then `HashLinks.refresh` on one
(the same object from step to step: after the first, it looks only at the buckets that changed)
and the real `openssl rehash` on the other, and compares every link's name and target. Each runs
twice: once finding the changes by listing the directory, once told of them by name, as the
daemon's watch tells it.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from reconciler.support.devpki import Issued, issue, make_ca
from reconciler.truststore.hashlinks import HashLinks
from tests.helpers.proc import capath_verifies, read_calls

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")

PREFIX = "reconciler-"


def links_of(directory: Path) -> dict[str, str]:
    """Every symbolic link of `directory`: name -> target, as written."""
    return {p.name: os.readlink(p) for p in sorted(directory.iterdir()) if p.is_symlink()}


class Twins:
    """Two trust directories changed alike: one linked in process, one by `openssl rehash`."""

    def __init__(self, base: Path, *, told: bool) -> None:
        self.ours = base / "ours"
        self.theirs = base / "theirs"
        for directory in (self.ours, self.theirs):
            directory.mkdir()
        self.links = HashLinks()
        self.written: dict[str, bytes] = {}
        self.told = told
        self.changed: set[str] = set()

    def __iter__(self) -> Iterator[Path]:
        return iter((self.ours, self.theirs))

    def write(self, name: str, data: bytes) -> None:
        """As a pass writes an entry: a new file renamed into place."""
        self.changed.add(name)
        for directory in self:
            temporary = directory / f".{name}.tmp"
            temporary.write_bytes(data)
            temporary.replace(directory / name)
        if name.startswith(PREFIX):
            self.written[name] = data

    def remove(self, name: str) -> None:
        self.changed.add(name)
        for directory in self:
            (directory / name).unlink()

    def symlink(self, name: str, target: str) -> None:
        self.changed.add(name)
        for directory in self:
            (directory / name).symlink_to(target)

    def refresh(self) -> dict[str, str]:
        """Both refreshed; their links, which must be equal."""
        if self.told:
            self.links.saw(self.changed)
        self.changed = set()
        self.links.refresh(self.ours, PREFIX, self.written)
        self.written = {}
        subprocess.run(
            ["openssl", "rehash", str(self.theirs)], capture_output=True, timeout=60, check=False
        )
        ours, theirs = links_of(self.ours), links_of(self.theirs)
        assert ours == theirs
        # A process that starts now (no memory of the directory) finds nothing to change.
        HashLinks().refresh(self.ours, PREFIX)
        assert links_of(self.ours) == ours
        return ours


@pytest.fixture(params=[False, True], ids=["listed", "told"])
def twins(tmp_path: Path, request: pytest.FixtureRequest) -> Twins:
    return Twins(tmp_path, told=request.param)


def _same_subject(name: str, count: int) -> list[Issued]:
    """CAs whose subjects are equal (one hash), each with its own key: a bucket of collisions."""
    return [make_ca(name) for _ in range(count)]


def test_collisions_are_numbered_in_name_order_and_a_removal_keeps_the_numbers(
    twins: Twins,
) -> None:
    first, second, third = _same_subject("Colliding CA", 3)
    other = make_ca("Other CA")
    twins.write(f"{PREFIX}b.crt", second.cert_pem)
    twins.write(f"{PREFIX}a.crt", first.cert_pem)
    twins.write(f"{PREFIX}other.crt", other.cert_pem)
    links = twins.refresh()
    assert sorted(links.values()) == [f"{PREFIX}a.crt", f"{PREFIX}b.crt", f"{PREFIX}other.crt"]
    # The first goes: its link stays (dangling), or the second would sit behind a gap.
    twins.remove(f"{PREFIX}a.crt")
    links = twins.refresh()
    assert f"{PREFIX}a.crt" in links.values()
    # A third one takes the next free number; a replaced file keeps its bucket's numbers.
    twins.write(f"{PREFIX}c.crt", third.cert_pem)
    twins.refresh()
    twins.write(f"{PREFIX}b.crt", make_ca("Colliding CA").cert_pem)
    twins.refresh()
    twins.write(f"{PREFIX}a.crt", first.cert_pem)
    twins.refresh()


def test_a_certificate_in_two_files_is_linked_once_and_moves_when_that_file_goes(
    twins: Twins,
) -> None:
    ca = make_ca("Twice CA")
    twins.write(f"{PREFIX}one.crt", ca.cert_pem)
    twins.write(f"{PREFIX}two.crt", ca.cert_pem)
    twins.write("admin.pem", ca.cert_pem)
    assert list(twins.refresh().values()) == ["admin.pem"]
    twins.remove("admin.pem")
    twins.refresh()
    twins.remove(f"{PREFIX}one.crt")
    twins.refresh()


def test_files_the_reconciler_does_not_manage_are_linked_as_the_tool_links_them(
    twins: Twins,
) -> None:
    ca, crl_issuer, keyed = make_ca("Admin CA"), make_ca("CRL Issuer"), make_ca("Keyed CA")
    now = dt.datetime.now(dt.UTC)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(crl_issuer.cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=7))
        .sign(crl_issuer.key, hashes.SHA256())
    )
    key_pem = keyed.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    twins.write("admin-ca.PEM", ca.cert_pem)  # the extension in any case
    twins.write("issuer.crl", crl.public_bytes(serialization.Encoding.PEM))
    twins.write("keyed.pem", keyed.cert_pem + key_pem)  # one X509_INFO: linked
    twins.write("pair.cer", ca.cert_pem + keyed.cert_pem)  # two: skipped
    twins.write("garbage.crt", b"not a certificate\n")
    twins.write("broken.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    twins.write("notes.txt", ca.cert_pem)  # not an extension rehash reads
    twins.write(f"{PREFIX}entry.crt", make_ca("Managed CA").cert_pem)
    links = twins.refresh()
    assert any(name.split(".")[1].startswith("r") for name in links)  # the CRL's link
    assert sorted(set(links.values())) == [
        "admin-ca.PEM",
        "issuer.crl",
        "keyed.pem",
        f"{PREFIX}entry.crt",
    ]
    twins.remove("issuer.crl")
    twins.remove("keyed.pem")
    twins.refresh()


def test_links_left_by_others_are_kept_or_removed_as_the_tool_does(twins: Twins) -> None:
    first, second = _same_subject("Stale Link CA", 2)
    twins.write(f"{PREFIX}a.crt", first.cert_pem)
    links = twins.refresh()
    bucket = next(iter(links)).split(".")[0]
    # A stale link far above the count, and one to a file that holds another certificate.
    twins.symlink(f"{bucket}.7", "gone.crt")
    twins.symlink("0badcafe.0", f"{PREFIX}a.crt")
    twins.write(f"{PREFIX}b.crt", second.cert_pem)
    twins.refresh()


def test_a_store_emptied_loses_its_links(twins: Twins) -> None:
    cas = [make_ca(f"Going CA {n}") for n in range(4)]
    for number, ca in enumerate(cas):
        twins.write(f"{PREFIX}{number}.crt", ca.cert_pem)
    assert len(twins.refresh()) == 4
    for number in range(4):
        twins.remove(f"{PREFIX}{number}.crt")
    assert twins.refresh() == {}


def test_every_certificate_of_a_managed_file_holding_several_is_found(tmp_path: Path) -> None:
    """The tool skips such a file; each of its certificates gets a link, and OpenSSL's CApath
    lookup then finds each (it loads the whole file a link names)."""
    trust = tmp_path / "trust"
    trust.mkdir()
    first, second = make_ca("Pair One"), make_ca("Pair Two")
    (trust / f"{PREFIX}pair.crt").write_bytes(first.cert_pem + second.cert_pem)
    links = HashLinks()
    links.refresh(trust, PREFIX)
    assert sorted(links_of(trust).values()) == [f"{PREFIX}pair.crt"] * 2
    for ca in (first, second):
        leaf = tmp_path / "leaf.pem"
        leaf.write_bytes(issue(ca, "svc.example.com").cert_pem)
        verified = capath_verifies(trust, leaf)
        assert verified.returncode == 0, verified.stderr
    # A single-certificate neighbour in one of its buckets changes: the pair stays linked.
    single = make_ca("Pair One")
    (trust / f"{PREFIX}single.crt").write_bytes(single.cert_pem)
    links.refresh(trust, PREFIX)
    assert sorted(links_of(trust).values()).count(f"{PREFIX}pair.crt") == 2
    # The neighbour goes: its bucket is made again, and the pair keeps a link in it (its other
    # certificate's link does not stand in for it: a lookup by this subject never reads it).
    (trust / f"{PREFIX}single.crt").unlink()
    links.refresh(trust, PREFIX)
    assert sorted(links_of(trust).values()) == [f"{PREFIX}pair.crt"] * 2
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(issue(first, "svc.example.com").cert_pem)
    verified = capath_verifies(trust, leaf)
    assert verified.returncode == 0, verified.stderr


def _linked_store(tmp_path: Path, entries: int) -> tuple[Path, HashLinks]:
    """A trust directory of `entries` CAs, linked once by a HashLinks that remembers it."""
    trust = tmp_path / "trust"
    trust.mkdir()
    for number in range(entries):
        (trust / f"{PREFIX}{number:02d}.crt").write_bytes(make_ca(f"Stored CA {number}").cert_pem)
    links = HashLinks()
    links.refresh(trust, PREFIX)
    return trust, links


def test_a_later_refresh_reads_only_the_files_that_changed(tmp_path: Path) -> None:
    """After the first refresh in a process, a one-entry change reads that one file."""
    trust, links = _linked_store(tmp_path, 30)
    (trust / f"{PREFIX}07.crt").unlink()
    (trust / f"{PREFIX}07.crt").write_bytes(make_ca("Read CA 7 renewed").cert_pem)
    before = read_calls()
    links.refresh(trust, PREFIX)
    assert read_calls() - before < 10
    assert sorted(links_of(trust).values()) == sorted(p.name for p in trust.glob(f"{PREFIX}*"))


def test_told_of_the_changes_a_refresh_lists_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon tells the refresh what its watch saw: no listing of the directory, which
    costs as much as its size; without being told since the last refresh, it lists again."""
    trust, links = _linked_store(tmp_path, 10)
    listed: list[object] = []
    real_scandir = os.scandir

    def counted(path: object) -> object:
        listed.append(path)
        return real_scandir(path)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "scandir", counted)
    renewed = make_ca("Told CA 3 renewed").cert_pem
    (trust / f"{PREFIX}03.crt").unlink()
    (trust / f"{PREFIX}03.crt").write_bytes(renewed)
    links.saw([f"{PREFIX}03.crt"])
    links.refresh(trust, PREFIX)
    assert listed == []
    assert sorted(links_of(trust).values()) == sorted(p.name for p in trust.glob(f"{PREFIX}*"))
    listed.clear()
    links.refresh(trust, PREFIX)  # not told since: it cannot know, so it looks
    assert listed == [str(trust)]


def test_a_file_that_cannot_be_read_fails_the_refresh_a_fifo_is_skipped(tmp_path: Path) -> None:
    """The tool fails on a file it cannot open (and blocks on a FIFO): a dangling link named
    like a certificate fails the refresh; a FIFO is skipped, never opened."""
    from reconciler.errors import ApplyError

    trust = tmp_path / "trust"
    trust.mkdir()
    os.mkfifo(trust / "pipe.pem")
    (trust / f"{PREFIX}ok.crt").write_bytes(make_ca("Readable CA").cert_pem)
    HashLinks().refresh(trust, PREFIX)
    assert list(links_of(trust).values()) == [f"{PREFIX}ok.crt"]
    (trust / "foreign.pem").symlink_to("nowhere.pem")
    with pytest.raises(ApplyError, match=r"foreign\.pem: cannot open file"):
        HashLinks().refresh(trust, PREFIX)
    # A private key alone in a file named like a certificate makes the tool fail, and this too.
    keyed = tmp_path / "keyed"
    keyed.mkdir()
    key = make_ca("Key Holder").key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (keyed / "stray-key.pem").write_bytes(key)
    rehashed = subprocess.run(["openssl", "rehash", str(keyed)], check=False, timeout=60)
    assert rehashed.returncode != 0
    with pytest.raises(ApplyError, match=r"stray-key\.pem: it holds a private key"):
        HashLinks().refresh(keyed, PREFIX)


def test_a_file_where_a_link_belongs_is_not_replaced(tmp_path: Path) -> None:
    from reconciler.errors import ApplyError
    from reconciler.truststore.certfiles import pem_cert_ders

    trust = tmp_path / "trust"
    trust.mkdir()
    ca = make_ca("Blocked CA")
    from reconciler.core.subject_hash import subject_hash

    name_hash = subject_hash(pem_cert_ders(ca.cert_pem)[0])
    (trust / f"{name_hash}.0").write_bytes(b"someone's file\n")
    (trust / f"{PREFIX}blocked.crt").write_bytes(ca.cert_pem)
    with pytest.raises(ApplyError, match=rf"{name_hash}\.0: is not a link"):
        HashLinks().refresh(trust, PREFIX)
    assert (trust / f"{name_hash}.0").read_bytes() == b"someone's file\n"
