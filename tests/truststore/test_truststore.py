"""Trust store backends against the real tools on temporary directories."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from reconciler.config.model import Settings
from reconciler.errors import ApplyError
from reconciler.support.devpki import Issued, issue, make_ca
from reconciler.truststore.backends import (
    DEFAULT_DEBIAN_BUNDLE,
    DEFAULT_RHEL_BUNDLE,
    DebianTrustStore,
    RhelTrustStore,
    trust_store_from_settings,
)
from reconciler.truststore.base import TrustRefreshError, TrustStore
from reconciler.truststore.certfiles import pem_cert_digests
from reconciler.truststore.directory import DirectoryTrustStore
from tests.helpers.proc import capath_verifies
from tests.helpers.sandbox import DebianSandbox


def _entry(store: TrustStore, name: str) -> Path:
    """Where the pass writes the trust entry NAME."""
    return store.trust_dir / f"{store.prefix}{name}.crt"


needs_update_ca_certificates = pytest.mark.skipif(
    shutil.which("update-ca-certificates") is None, reason="update-ca-certificates not installed"
)


def der(issued: Issued) -> bytes:
    return issued.cert.public_bytes(Encoding.DER)


def bundle_ders(path: Path) -> set[bytes]:
    """The bundle's certificates, parsed by cryptography (independent of the module's parser)."""
    data = path.read_bytes()
    return {cert.public_bytes(Encoding.DER) for cert in x509.load_pem_x509_certificates(data)}


@needs_update_ca_certificates
def test_debian_add_change_remove_keeps_bundle_exact_and_foreign_files(
    debian: DebianSandbox,
) -> None:
    store = debian.store()
    assert store.bundle == debian.etcdir / "ca-certificates.crt"
    ca_a, ca_a2, other_ca = make_ca("Entry A"), make_ca("Entry A renewed"), make_ca("Admin CA")
    server = issue(make_ca("Unshipped CA"), "relay.example.test")  # a leaf trusted directly
    foreign = debian.localdir / "admin-installed.crt"
    foreign.write_bytes(other_ca.cert_pem)
    foreign_prefixed_txt = debian.localdir / "reconciler-notes.txt"
    foreign_prefixed_txt.write_bytes(b"not a trust entry")

    # add
    _entry(store, "a").write_bytes(ca_a.cert_pem)
    _entry(store, "relay").write_bytes(server.cert_pem)
    result = store.refresh(removed=False, timeout_s=60)
    assert result.exit_code == 0
    assert "--fresh" not in result.argv
    assert bundle_ders(store.bundle) == {
        der(debian.system_ca),
        der(ca_a),
        der(server),
        der(other_ca),
    }
    assert store.missing_after_refresh([der(ca_a), der(server)]) == []

    # change
    _entry(store, "a").write_bytes(ca_a2.cert_pem)
    store.refresh(removed=False, timeout_s=60)
    assert bundle_ders(store.bundle) == {
        der(debian.system_ca),
        der(ca_a2),
        der(server),
        der(other_ca),
    }
    assert store.missing_after_refresh([der(ca_a2), der(server)]) == []

    # remove
    _entry(store, "relay").unlink()
    result = store.refresh(removed=True, timeout_s=60)
    assert result.argv[-1] == "--fresh"
    assert bundle_ders(store.bundle) == {der(debian.system_ca), der(ca_a2), der(other_ca)}
    assert not (debian.etcdir / "reconciler-relay.pem").is_symlink()
    dangling = [p.name for p in debian.etcdir.iterdir() if p.is_symlink() and not p.exists()]
    assert dangling == []

    assert store.managed_files() == {"a": debian.localdir / "reconciler-a.crt"}
    assert foreign.read_bytes() == other_ca.cert_pem
    assert foreign_prefixed_txt.read_bytes() == b"not a trust entry"


@needs_update_ca_certificates
def test_debian_missing_after_refresh_names_the_missing_subject(debian: DebianSandbox) -> None:
    store = debian.store()
    present, absent = make_ca("Written CA"), make_ca("Never Written CA")
    _entry(store, "written").write_bytes(present.cert_pem)
    store.refresh(removed=False, timeout_s=60)
    assert store.missing_after_refresh([der(present), der(absent)]) == ["CN=Never Written CA"]


@needs_update_ca_certificates
def test_debian_multi_certificate_entry_is_in_the_bundle(debian: DebianSandbox) -> None:
    store = debian.store()
    first, second = make_ca("Bundle One"), make_ca("Bundle Two")
    _entry(store, "pair").write_bytes(first.cert_pem + second.cert_pem)
    store.refresh(removed=False, timeout_s=60)
    assert store.missing_after_refresh([der(first), der(second)]) == []


def test_debian_bundle_is_default_without_etccertsdir() -> None:
    store = trust_store_from_settings(Settings(trust_store="debian"))
    assert isinstance(store, DebianTrustStore)
    assert store.bundle == DEFAULT_DEBIAN_BUNDLE
    assert store.trust_dir == Path("/usr/local/share/ca-certificates")
    assert store.argv_for(removed=False) == ("update-ca-certificates",)
    assert store.argv_for(removed=True) == ("update-ca-certificates", "--fresh")


@pytest.mark.parametrize(
    ("argv", "bundle"),
    [
        pytest.param(
            ("/usr/sbin/update-ca-certificates", "--etccertsdir", "/x/certs"),
            Path("/x/certs/ca-certificates.crt"),
            id="etccertsdir",
        ),
        pytest.param(
            ("update-ca-certificates", "--certbundle", "all.pem"),
            Path("/etc/ssl/certs/all.pem"),
            id="certbundle",
        ),
        pytest.param(
            ("/usr/local/bin/my-refresh", "--etccertsdir", "/x"), DEFAULT_DEBIAN_BUNDLE, id="other"
        ),
    ],
)
def test_debian_bundle_follows_the_argv(argv: tuple[str, ...], bundle: Path) -> None:
    store = trust_store_from_settings(Settings(trust_store="debian", trust_refresh=argv))
    assert isinstance(store, DebianTrustStore)
    assert store.bundle == bundle


@pytest.mark.parametrize(
    ("argv", "removed", "expected"),
    [
        pytest.param(("update-ca-certificates",), False, ("update-ca-certificates",), id="add"),
        pytest.param(
            ("/usr/sbin/update-ca-certificates", "-v"),
            True,
            ("/usr/sbin/update-ca-certificates", "-v", "--fresh"),
            id="remove-full-path",
        ),
        pytest.param(
            ("update-ca-certificates", "--fresh"),
            True,
            ("update-ca-certificates", "--fresh"),
            id="already-fresh",
        ),
        pytest.param(("/opt/refresh.sh",), True, ("/opt/refresh.sh",), id="verbatim-other"),
    ],
)
def test_fresh_is_added_only_for_update_ca_certificates_on_removal(
    argv: tuple[str, ...], removed: bool, expected: tuple[str, ...]
) -> None:
    store = trust_store_from_settings(Settings(trust_store="debian", trust_refresh=argv))
    assert store.argv_for(removed=removed) == expected


def test_managed_files_are_only_prefixed_crt_files(tmp_path: Path) -> None:
    (tmp_path / "gw-one.crt").write_bytes(b"x")
    (tmp_path / "gw-two.crt").symlink_to(tmp_path / "gw-one.crt")
    (tmp_path / "gw-.crt").write_bytes(b"no name")
    (tmp_path / "gw-dir.crt").mkdir()
    (tmp_path / "gw-three.pem").write_bytes(b"x")
    (tmp_path / "other.crt").write_bytes(b"x")
    (tmp_path / "reconciler-four.crt").write_bytes(b"x")
    settings = Settings(trust_store="directory", trust_dir=tmp_path, trust_prefix="gw-")
    store = trust_store_from_settings(settings)
    assert store.managed_files() == {"one": tmp_path / "gw-one.crt", "two": tmp_path / "gw-two.crt"}


def test_managed_files_of_a_missing_directory_is_empty(tmp_path: Path) -> None:
    store = DirectoryTrustStore(tmp_path / "absent", "reconciler-", ("true",))
    assert store.managed_files() == {}


@pytest.mark.parametrize(
    "refresh",
    [None, ("openssl", "rehash", "{trust_dir}")],
    ids=["links-in-process", "trust_refresh-openssl-rehash"],
)
def test_directory_backend_makes_hash_links(
    tmp_path: Path, refresh: tuple[str, ...] | None
) -> None:
    """Without `trust_refresh` the backend makes the links itself; with one, the command runs."""
    trust_dir = tmp_path / "capath"
    trust_dir.mkdir()
    store = trust_store_from_settings(
        Settings(trust_store="directory", trust_dir=trust_dir, trust_refresh=refresh)
    )
    expected = () if refresh is None else ("openssl", "rehash", str(trust_dir))
    assert store.argv_for(removed=True) == expected
    ca, other = make_ca("Directory CA"), make_ca("Directory Other")
    leaf = issue(make_ca("Unshipped"), "direct.example.test")
    foreign = trust_dir / "foreign.crt"
    foreign.write_bytes(other.cert_pem)
    _entry(store, "ca").write_bytes(ca.cert_pem)
    _entry(store, "leaf").write_bytes(leaf.cert_pem)

    store.refresh(removed=False, timeout_s=60)
    links = sorted(p.name for p in trust_dir.iterdir() if p.is_symlink())
    assert len(links) == 3
    assert store.missing_after_refresh([der(ca), der(leaf), der(other)]) == []

    _entry(store, "leaf").unlink()
    store.refresh(removed=True, timeout_s=60)
    assert store.missing_after_refresh([der(ca), der(leaf)]) == ["CN=direct.example.test"]
    assert foreign.read_bytes() == other.cert_pem


def test_directory_backend_trusts_every_certificate_of_a_multi_certificate_entry(
    tmp_path: Path,
) -> None:
    """openssl rehash skips files holding more than one certificate; the backend links each
    certificate of such a file itself, and OpenSSL then finds both through CApath."""
    store = DirectoryTrustStore(tmp_path, "reconciler-", ("openssl", "rehash", str(tmp_path)))
    first, second = make_ca("Pair One"), make_ca("Pair Two")
    _entry(store, "pair").write_bytes(first.cert_pem + second.cert_pem)
    store.refresh(removed=False, timeout_s=60)
    assert store.missing_after_refresh([der(first), der(second)]) == []
    assert store.missing_files_after_refresh([_entry(store, "pair")]) == []
    for ca in (first, second):
        leaf = tmp_path.parent / f"leaf-{ca.cert.subject.rfc4514_string()}.pem"
        leaf.write_bytes(issue(ca, "svc.example.com").cert_pem)
        checked = capath_verifies(tmp_path, leaf)
        assert checked.returncode == 0, checked.stderr


def test_refresh_failure_names_command_and_exit_code(tmp_path: Path) -> None:
    script = "import sys; print('x' * 9000); print('boom: disk full', file=sys.stderr); sys.exit(3)"
    store = DirectoryTrustStore(tmp_path, "reconciler-", (sys.executable, "-c", script))
    with pytest.raises(
        TrustRefreshError, match=r"failed with exit code 3: boom: disk full"
    ) as info:
        store.refresh(removed=False, timeout_s=60)
    assert sys.executable in str(info.value)
    assert info.value.result.exit_code == 3
    assert info.value.result.output_tail.endswith("boom: disk full\n")
    assert len(info.value.result.output_tail.encode()) <= 4096


def test_refresh_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, pathlib\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        f"pathlib.Path({str(pid_file)!r}).write_text(str(child.pid))\n"
        "print('started', flush=True)\n"
        "child.wait()\n"
    )
    store = DirectoryTrustStore(tmp_path, "reconciler-", (sys.executable, "-c", script))
    with pytest.raises(TrustRefreshError, match="timed out after 1 s and was killed") as info:
        store.refresh(removed=False, timeout_s=1)
    assert info.value.result.exit_code is None
    grandchild = int(pid_file.read_text())
    # SIGKILL to the group is delivered at once; wait for the kernel to finish with it.
    try:
        process = psutil.Process(grandchild)
        process.wait(timeout=10)
    except (psutil.NoSuchProcess, psutil.TimeoutExpired):
        # wait() raises TimeoutExpired for a zombie nobody reaps (no init in a container).
        assert not psutil.pid_exists(grandchild) or process.status() == psutil.STATUS_ZOMBIE


def test_refresh_command_not_found_is_an_apply_error(tmp_path: Path) -> None:
    store = DirectoryTrustStore(tmp_path, "reconciler-", (str(tmp_path / "no-such-tool"),))
    with pytest.raises(ApplyError, match="cannot start"):
        store.refresh(removed=False)


def test_rhel_backend_from_settings() -> None:
    store = trust_store_from_settings(Settings(trust_store="rhel"))
    assert isinstance(store, RhelTrustStore)
    assert store.trust_dir == Path("/etc/pki/ca-trust/source/anchors")
    assert store.bundle == DEFAULT_RHEL_BUNDLE
    assert store.argv_for(removed=False) == ("update-ca-trust", "extract")
    assert store.argv_for(removed=True) == ("update-ca-trust", "extract")


@pytest.mark.skipif(
    shutil.which("update-ca-trust") is None,
    reason="update-ca-trust (p11-kit, Red Hat family) is not installed on this Debian host",
)
def test_rhel_refresh_runs() -> None:  # pragma: no cover - only on a Red Hat family host
    store = trust_store_from_settings(Settings(trust_store="rhel"))
    assert store.refresh(removed=False).exit_code == 0


def test_missing_after_refresh_reports_an_unreadable_bundle(tmp_path: Path) -> None:
    store = DebianTrustStore(tmp_path, "reconciler-", ("true",), bundle=tmp_path / "absent.crt")
    assert store.missing_after_refresh([]) == []
    with pytest.raises(ApplyError, match=r"absent\.crt: cannot read it"):
        store.missing_after_refresh([der(make_ca())])


def test_pem_cert_digests_reads_commented_crlf_bundles() -> None:
    one, two = make_ca("One"), make_ca("Two")
    bundle = (
        b"# One\r\n" + one.cert_pem.replace(b"\n", b"\r\n") + b"\r\n# Two\n" + two.cert_pem
        + b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"
    )  # fmt: skip
    assert pem_cert_digests(bundle) == {hashlib.sha256(der(c)).digest() for c in (one, two)}


def test_directory_backend_finds_written_files_by_their_hash_links(tmp_path: Path) -> None:
    """Relative and absolute link targets both count; a file no link names is reported."""
    settings = Settings(trust_store="directory", trust_dir=tmp_path)
    store = trust_store_from_settings(settings)
    linked_relative, linked_absolute, unlinked = (make_ca(f"CA {n}") for n in range(3))
    paths = [_entry(store, name) for name in ("rel", "abs", "none")]
    for path, ca in zip(paths, (linked_relative, linked_absolute, unlinked), strict=True):
        path.write_bytes(ca.cert_pem)
    (tmp_path / "0badcafe.0").symlink_to(paths[0].name)
    (tmp_path / "0badcafe.1").symlink_to(paths[1])
    assert store.missing_files_after_refresh(paths[:2]) == []
    assert store.missing_files_after_refresh(paths) == ["CN=CA 2"]


def _links(directory: Path) -> dict[str, str]:
    return {p.name: str(p.readlink()) for p in directory.iterdir() if p.is_symlink()}


def test_directory_proof_finds_written_entries_by_their_subject_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The link of a written entry is looked up by its subject hash: one readlink, however many
    other links the store holds."""
    store = DirectoryTrustStore(tmp_path, "reconciler-", ("openssl", "rehash", str(tmp_path)))
    ca = make_ca("Lookup CA")
    _entry(store, "ca").write_bytes(ca.cert_pem)
    store.refresh(removed=False, timeout_s=60)
    assert list(_links(tmp_path).values()) == ["reconciler-ca.crt"]
    for counter in range(50):
        (tmp_path / f"{counter:08x}.0").symlink_to(f"other-{counter}.crt")
    read: list[str] = []
    real_readlink = os.readlink

    def counted(path: str | os.PathLike[str]) -> str:
        read.append(os.fspath(path))
        return real_readlink(path)

    monkeypatch.setattr(os, "readlink", counted)
    assert store.missing_files_after_refresh([_entry(store, "ca")]) == []
    assert len(read) == 1


def test_directory_proof_falls_back_to_every_link(tmp_path: Path) -> None:
    """A link under another name than the subject hash (another rehash tool) is still found;
    a file no link names is reported by its subject."""
    store = DirectoryTrustStore(tmp_path, "reconciler-", ("true",))
    linked, unlinked = make_ca("Renamed Link CA"), make_ca("Unlinked CA")
    _entry(store, "linked").write_bytes(linked.cert_pem)
    _entry(store, "unlinked").write_bytes(unlinked.cert_pem)
    (tmp_path / "abcdef01.0").symlink_to("reconciler-linked.crt")
    written = [_entry(store, "linked"), _entry(store, "unlinked")]
    assert store.missing_files_after_refresh(written) == ["CN=Unlinked CA"]


def test_given_the_files_with_several_certificates_only_those_are_linked(tmp_path: Path) -> None:
    """A pass names the trust files that hold several certificates (it rendered them); a full
    `openssl rehash` drops the links made for them earlier, and each refresh puts them back."""
    store = DirectoryTrustStore(tmp_path, "reconciler-", ("openssl", "rehash", str(tmp_path)))
    first, second = make_ca("Kept One"), make_ca("Kept Two")
    pair = _entry(store, "pair")
    pair.write_bytes(first.cert_pem + second.cert_pem)
    store.refresh(removed=False, timeout_s=60, several=[pair])
    assert store.missing_after_refresh([der(first), der(second)]) == []

    # A later pass changes only a single-certificate entry; rehash rebuilds every link.
    single = make_ca("Single")
    _entry(store, "single").write_bytes(single.cert_pem)
    store.refresh(removed=True, timeout_s=60, several=[pair])
    assert store.missing_after_refresh([der(first), der(second), der(single)]) == []

    # Told that no file holds several certificates, the refresh does not look at `pair`: the
    # full rehash dropped its links, so its certificates are reported missing.
    store.refresh(removed=True, timeout_s=60, several=[])
    assert store.missing_after_refresh([der(first), der(second)]) == [
        "CN=Kept One",
        "CN=Kept Two",
    ]
