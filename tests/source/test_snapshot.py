"""The snapshot reader: one consistent read of STATE, links resolved once, escapes and limits."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.core.desired import MAX_FILE_BYTES, Finding
from reconciler.core.evaluate import StateInput
from reconciler.source.state import read_snapshot
from tests.helpers.state import GATEWAY_TOML, Pki, StateDir, standard_state

SHA256_REVISION = re.compile(r"^sha256:[0-9a-f]{64}$")


def _errors(inp: StateInput) -> list[Finding]:
    return [f for f in inp.findings if f.severity == "error"]


def _warnings(inp: StateInput) -> list[Finding]:
    return [f for f in inp.findings if f.severity == "warning"]


def _has_error(inp: StateInput, file: str, *words: str) -> bool:
    return any(f.file == file and all(w in str(f) for w in words) for f in _errors(inp))


# -- a plain directory ---------------------------------------------------------------------------


def test_plain_directory_reads_every_input(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    state.write("trust/zeta.crt", pki.root.cert_pem)
    state.write("trust/alpha.pem", pki.intermediate.cert_pem)

    inp = read_snapshot(state.path)

    assert inp.findings == ()
    assert inp.gateway is not None
    assert inp.gateway.path == "gateway.toml"
    assert inp.gateway.data == GATEWAY_TOML.encode()
    assert inp.cert is not None
    assert (inp.cert.path, inp.cert.data) == ("tls/cert.pem", pki.chain())
    assert inp.key is not None
    assert inp.key.path == "tls/key.pem"
    assert inp.key.data is not None
    assert inp.key.data.reveal() == pki.leaf.key_pem
    assert [name for name, _ in inp.trust] == ["alpha", "partner-ca", "zeta"]
    assert [src.path for _, src in inp.trust] == [
        "trust/alpha.pem",
        "trust/partner-ca.pem",
        "trust/zeta.crt",
    ]
    assert dict(inp.trust)["zeta"].data == pki.root.cert_pem
    assert [name for name, _ in inp.profiles] == ["core", "relay"]
    assert dict(inp.profiles)["relay"].data == b'url = "smtps://relay.example.com"\n'


def test_key_bytes_never_show_in_repr(tmp_path: Path, pki: Pki) -> None:
    inp = read_snapshot(standard_state(tmp_path / "state", pki).path)
    body = pki.leaf.key_pem.decode().splitlines()[1]
    assert body not in repr(inp)
    assert body not in str(inp)


def test_names_are_sorted_whatever_the_creation_order(tmp_path: Path, pki: Pki) -> None:
    state = StateDir(tmp_path / "state")
    state.gateway("")
    for name in ("m", "b", "z", "a0", "a"):
        state.profile(name, 'url = "https://core.example.com"\n')
    inp = read_snapshot(state.path)
    assert [name for name, _ in inp.profiles] == ["a", "a0", "b", "m", "z"]


def test_dotfiles_are_ignored_silently(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    state.write("trust/.hidden.pem", b"junk")
    state.write("trust/.partner-ca.pem.swp", b"junk")
    state.write("profiles/.draft.toml", b"junk = [")
    inp = read_snapshot(state.path)
    assert inp.findings == ()
    assert [name for name, _ in inp.trust] == ["partner-ca"]
    assert [name for name, _ in inp.profiles] == ["core", "relay"]


def test_other_files_in_trust_are_ignored_with_a_warning(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    state.write("trust/README.md", b"notes")
    state.write("trust/partner-ca.der", b"\x30\x82")
    state.write("profiles/notes.txt", b"notes")
    inp = read_snapshot(state.path)
    assert _errors(inp) == []
    warned = {f.file: f.reason for f in _warnings(inp)}
    # One warning per directory: how many, and the first few names.
    assert set(warned) == {"trust/", "profiles/"}
    assert warned["trust/"].startswith("2 files ignored, not NAME.pem or NAME.crt")
    assert "'README.md'" in warned["trust/"]
    assert "'partner-ca.der'" in warned["trust/"]
    assert warned["profiles/"] == "1 file ignored, not NAME.toml: 'notes.txt'"
    assert [name for name, _ in inp.trust] == ["partner-ca"]


@pytest.mark.parametrize(
    "entry",
    ["Upper.pem", "-dash.pem", "has space.pem", "a" * 64 + ".pem", "ünï.crt", "_under.crt"],
    ids=["upper", "leading-dash", "space", "too-long", "non-ascii", "leading-underscore"],
)
def test_bad_name_is_an_error_naming_the_file(tmp_path: Path, pki: Pki, entry: str) -> None:
    state = standard_state(tmp_path / "state", pki)
    state.write(f"trust/{entry}", pki.root.cert_pem)
    inp = read_snapshot(state.path)
    assert _has_error(inp, f"trust/{entry}", "must match"), inp.findings
    assert [name for name, _ in inp.trust] == ["partner-ca"]


def test_longest_allowed_name_is_accepted(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    name = "a" * 63
    state.write(f"trust/{name}.pem", pki.root.cert_pem)
    inp = read_snapshot(state.path)
    assert inp.findings == ()
    assert name in dict(inp.trust)


def test_same_name_as_pem_and_crt_is_an_error(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    state.write("trust/partner-ca.crt", pki.root.cert_pem)
    inp = read_snapshot(state.path)
    errors = _errors(inp)
    assert len(errors) == 1, errors
    message = str(errors[0])
    assert "partner-ca.crt" in message
    assert "partner-ca.pem" in message


def test_subdirectories_in_trust(tmp_path: Path, pki: Pki) -> None:
    """A plain subdirectory is ignored with a warning; one named like a trust file is an error."""
    state = standard_state(tmp_path / "state", pki)
    (state.path / "trust" / "archive").mkdir()
    state.write("trust/archive/old.pem", pki.root.cert_pem)
    (state.path / "trust" / "looks-like.pem").mkdir()
    inp = read_snapshot(state.path)
    assert any(f.file == "trust/" and "'archive'" in f.reason for f in _warnings(inp))
    assert _has_error(inp, "trust/looks-like.pem", "not a regular file")
    assert "old" not in dict(inp.trust)


def test_trust_that_is_a_file_is_an_error(tmp_path: Path, pki: Pki) -> None:
    state = StateDir(tmp_path / "state")
    state.gateway("")
    state.write("trust", b"not a directory")
    inp = read_snapshot(state.path)
    assert _has_error(inp, "trust", "not a directory")


def test_gateway_may_be_absent_from_the_snapshot(tmp_path: Path, pki: Pki) -> None:
    """The reader reports what is there; `evaluate` says gateway.toml is required."""
    state = StateDir(tmp_path / "state")
    state.trust("ca", pki.root.cert_pem)
    inp = read_snapshot(state.path)
    assert inp.gateway is None
    assert inp.findings == ()


# -- path escapes ------------------------------------------------------------------------------


def _point_cert_to(state: StateDir, cert: str) -> None:
    text = (state.path / "gateway.toml").read_text()
    state.write("gateway.toml", text.replace('cert = "tls/cert.pem"', f'cert = "{cert}"'))


def test_dotdot_path_is_an_escape(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    (tmp_path / "x").write_bytes(pki.chain())
    _point_cert_to(state, "../x")
    inp = read_snapshot(state.path)
    assert _has_error(inp, "../x", "outside")
    assert inp.cert is not None
    assert inp.cert.data is None


def test_dotdot_that_comes_back_inside_is_fine(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    _point_cert_to(state, "tls/../tls/cert.pem")
    inp = read_snapshot(state.path)
    assert inp.findings == ()
    assert inp.cert is not None
    assert inp.cert.data == pki.chain()


def test_absolute_cert_path_is_an_error(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    outside = tmp_path / "abs-cert.pem"
    outside.write_bytes(pki.chain())
    _point_cert_to(state, str(outside))
    inp = read_snapshot(state.path)
    errors = _errors(inp)
    assert len(errors) == 1, errors
    assert errors[0].field == "identity.cert"
    assert str(outside) in str(errors[0])
    assert inp.cert is not None
    assert inp.cert.data is None


def test_absolute_cert_path_inside_key_dirs_is_read(tmp_path: Path, pki: Pki) -> None:
    """The certificate too may come from key_dirs (a TLS Secret that cert-manager renews)."""
    state = standard_state(tmp_path / "state", pki)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "cert.pem").write_bytes(pki.chain())
    _point_cert_to(state, str(secrets / "cert.pem"))
    inp = read_snapshot(state.path, [secrets])
    assert _errors(inp) == []
    assert inp.cert is not None
    assert inp.cert.data == pki.chain()


def test_symlink_pointing_outside_is_an_escape(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    outside = tmp_path / "outside.pem"
    outside.write_bytes(pki.chain())
    (state.path / "tls/cert.pem").unlink()
    (state.path / "tls/cert.pem").symlink_to(outside)
    inp = read_snapshot(state.path)
    assert _has_error(inp, "tls/cert.pem", "outside")


def test_relative_symlink_climbing_out_is_an_escape(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    (tmp_path / "evil.pem").write_bytes(pki.other_ca.cert_pem)
    (state.path / "trust" / "evil.pem").symlink_to("../../evil.pem")
    inp = read_snapshot(state.path)
    assert _has_error(inp, "trust/evil.pem", "outside")
    assert dict(inp.trust)["evil"].data is None


def test_symlinked_folder_pointing_outside_is_an_escape(tmp_path: Path, pki: Pki) -> None:
    state = StateDir(tmp_path / "state")
    state.gateway("")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "p.toml").write_text('url = "https://core.example.com"\n')
    (state.path / "profiles").symlink_to(elsewhere)
    inp = read_snapshot(state.path)
    assert _has_error(inp, "profiles", "outside")
    assert inp.profiles == ()


def test_symlink_staying_inside_is_followed(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    state.write("common/ca.pem", pki.root.cert_pem)
    (state.path / "trust" / "root.pem").symlink_to("../common/ca.pem")
    (state.path / "tls/cert.pem").rename(state.path / "common/chain.pem")
    (state.path / "tls/cert.pem").symlink_to(state.path / "common/chain.pem")  # absolute, inside
    inp = read_snapshot(state.path)
    assert inp.findings == ()
    assert dict(inp.trust)["root"].data == pki.root.cert_pem
    assert inp.cert is not None
    assert inp.cert.data == pki.chain()


def test_dotdata_link_pointing_outside_is_an_escape(tmp_path: Path, pki: Pki) -> None:
    state = StateDir(tmp_path / "state")
    state.path.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "gateway.toml").write_text("[console]\n")
    (state.path / "..data").symlink_to(elsewhere)
    (state.path / "gateway.toml").symlink_to("..data/gateway.toml")
    inp = read_snapshot(state.path)
    assert _has_error(inp, "gateway.toml", "outside")


# -- key_dirs ----------------------------------------------------------------------------------


def _use_key(state: StateDir, key: str) -> None:
    text = (state.path / "gateway.toml").read_text()
    state.write("gateway.toml", text.replace('key = "tls/key.pem"', f'key = "{key}"'))


def test_absolute_key_inside_key_dirs_is_read(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "key.pem").write_bytes(pki.leaf.key_pem)
    _use_key(state, str(secrets / "key.pem"))
    inp = read_snapshot(state.path, [tmp_path / "other", secrets])
    assert inp.findings == ()
    assert inp.key is not None
    assert inp.key.path == str(secrets / "key.pem")
    assert inp.key.data is not None
    assert inp.key.data.reveal() == pki.leaf.key_pem


def test_absolute_key_in_a_secret_volume_with_dotdata_links(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    secrets = tmp_path / "secret-volume"
    stamp = secrets / "..2026_11_27_10_00_00.123"
    stamp.mkdir(parents=True)
    (stamp / "tls.key").write_bytes(pki.leaf.key_pem)
    (secrets / "..data").symlink_to(stamp.name)
    (secrets / "tls.key").symlink_to("..data/tls.key")
    _use_key(state, str(secrets / "tls.key"))
    inp = read_snapshot(state.path, [secrets])
    assert inp.findings == ()
    assert inp.key is not None
    assert inp.key.data is not None
    assert inp.key.data.reveal() == pki.leaf.key_pem


@pytest.mark.parametrize("key_dirs", [[], ["secrets"]], ids=["no-key-dirs", "other-key-dir"])
def test_absolute_key_outside_key_dirs_is_an_error(
    tmp_path: Path, pki: Pki, key_dirs: list[str]
) -> None:
    state = standard_state(tmp_path / "state", pki)
    (tmp_path / "secrets").mkdir()
    stray = tmp_path / "stray-key.pem"
    stray.write_bytes(pki.leaf.key_pem)
    _use_key(state, str(stray))
    inp = read_snapshot(state.path, [tmp_path / d for d in key_dirs])
    errors = _errors(inp)
    assert len(errors) == 1, errors
    assert errors[0].field == "identity.key"
    assert "key_dirs" in errors[0].reason
    assert str(stray) in errors[0].reason
    assert inp.key is not None
    assert inp.key.data is None


def test_key_symlink_out_of_key_dirs_is_an_error(tmp_path: Path, pki: Pki) -> None:
    """The key's real path counts: a link inside key_dirs to elsewhere is not inside."""
    state = standard_state(tmp_path / "state", pki)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    stray = tmp_path / "stray-key.pem"
    stray.write_bytes(pki.leaf.key_pem)
    (secrets / "key.pem").symlink_to(stray)
    _use_key(state, str(secrets / "key.pem"))
    inp = read_snapshot(state.path, [secrets])
    assert any(f.field == "identity.key" and "key_dirs" in f.reason for f in _errors(inp))


def test_key_dir_prefix_is_not_inside(tmp_path: Path, pki: Pki) -> None:
    """/x/secrets-evil is not inside /x/secrets."""
    state = standard_state(tmp_path / "state", pki)
    (tmp_path / "secrets").mkdir()
    evil = tmp_path / "secrets-evil"
    evil.mkdir()
    (evil / "key.pem").write_bytes(pki.leaf.key_pem)
    _use_key(state, str(evil / "key.pem"))
    inp = read_snapshot(state.path, [tmp_path / "secrets"])
    assert any(f.field == "identity.key" for f in _errors(inp))


# -- limits and odd files ----------------------------------------------------------------------


def test_file_of_exactly_one_mib_is_read(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    state.write("trust/big.pem", b"#" * MAX_FILE_BYTES)
    inp = read_snapshot(state.path)
    assert inp.findings == ()
    data = dict(inp.trust)["big"].data
    assert data is not None
    assert len(data) == MAX_FILE_BYTES


@pytest.mark.parametrize("rel", ["trust/big.pem", "gateway.toml", "tls/key.pem"])
def test_file_over_one_mib_is_an_error(tmp_path: Path, pki: Pki, rel: str) -> None:
    state = standard_state(tmp_path / "state", pki)
    if rel == "gateway.toml":
        state.write(rel, GATEWAY_TOML + "#" * (MAX_FILE_BYTES + 1 - len(GATEWAY_TOML)))
    else:
        state.write(rel, b"#" * (MAX_FILE_BYTES + 1))
    inp = read_snapshot(state.path)
    assert _has_error(inp, rel, "1 MiB"), inp.findings


@pytest.mark.timeout(20)
def test_fifo_is_not_a_regular_file_and_does_not_hang(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    os.mkfifo(state.path / "trust" / "pipe.pem")
    (state.path / "tls/cert.pem").unlink()
    os.mkfifo(state.path / "tls/cert.pem")
    inp = read_snapshot(state.path)
    assert _has_error(inp, "trust/pipe.pem", "not a regular file")
    assert _has_error(inp, "tls/cert.pem", "not a regular file")


def test_directory_where_a_file_is_expected(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    (state.path / "tls/key.pem").unlink()
    (state.path / "tls/key.pem").mkdir()
    inp = read_snapshot(state.path)
    assert _has_error(inp, "tls/key.pem", "not a regular file")


def test_gateway_that_is_a_directory(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    (state.path / "gateway.toml").mkdir(parents=True)
    inp = read_snapshot(state.path)
    assert _has_error(inp, "gateway.toml", "not a regular file")


def test_dangling_symlink_is_a_missing_file(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    (state.path / "tls/cert.pem").unlink()
    (state.path / "tls/cert.pem").symlink_to("gone.pem")
    (state.path / "trust/gone.pem").symlink_to("nowhere.pem")
    inp = read_snapshot(state.path)
    assert _has_error(inp, "tls/cert.pem", "does not exist")
    assert _has_error(inp, "trust/gone.pem", "does not exist")
    assert inp.cert is not None
    assert inp.cert.data is None


def test_missing_identity_files_are_errors(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    state.remove("tls/cert.pem")
    state.remove("tls/key.pem")
    inp = read_snapshot(state.path)
    assert _has_error(inp, "tls/cert.pem", "does not exist")
    assert _has_error(inp, "tls/key.pem", "does not exist")


def test_dangling_gateway_symlink_is_reported(tmp_path: Path) -> None:
    """A gateway.toml link to nothing is not 'absent': the operator must hear about the link."""
    state = StateDir(tmp_path / "state")
    state.path.mkdir()
    (state.path / "gateway.toml").symlink_to("missing.toml")
    inp = read_snapshot(state.path)
    assert _has_error(inp, "gateway.toml", "does not exist"), inp.findings


# -- STATE itself unusable -----------------------------------------------------------------------


def test_missing_state_is_a_finding(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    inp = read_snapshot(missing)
    assert inp.gateway is None
    assert _has_error(inp, str(missing), "does not exist")


def test_state_that_is_a_file_is_a_finding(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.write_text("x")
    inp = read_snapshot(path)
    assert _has_error(inp, str(path), "not a directory")


def test_empty_state_is_a_finding(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.mkdir()
    inp = read_snapshot(path)
    assert _has_error(inp, str(path), "empty")


def test_dangling_state_link_is_a_finding(tmp_path: Path) -> None:
    link = tmp_path / "current"
    link.symlink_to(".worktrees/gone")
    inp = read_snapshot(link)
    assert _has_error(inp, str(link), "does not exist")


# -- Kubernetes ConfigMap volumes and git-sync worktrees ------------------------------------------


@dataclass(frozen=True)
class Version:
    """One complete desired state; A and B differ in gateway.toml and in the certificate."""

    files: dict[str, bytes]

    def write(self, directory: Path) -> None:
        for rel, data in self.files.items():
            path = directory / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


def _versions(pki: Pki) -> tuple[Version, Version]:
    def version(tag: str, leaf_chain: bytes, key: bytes, policy: str) -> Version:
        gateway = GATEWAY_TOML.replace("intermediate", policy) + f"# version {tag}\n"
        return Version(
            {
                "gateway.toml": gateway.encode(),
                "tls/cert.pem": leaf_chain,
                "tls/key.pem": key,
                "trust/partner-ca.pem": pki.other_ca.cert_pem,
                f"trust/only-{tag}.pem": pki.root.cert_pem,
                "profiles/relay.toml": b'url = "smtps://relay.example.com"\n',
                f"profiles/only-{tag}.toml": f'url = "https://{tag}.example.com"\n'.encode(),
            }
        )

    return (
        version("a", pki.chain(pki.leaf), pki.leaf.key_pem, "modern"),
        version("b", pki.chain(pki.leaf2), pki.leaf2.key_pem, "old"),
    )


def _content(inp: StateInput) -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    if inp.gateway is not None:
        found[inp.gateway.path] = inp.gateway.data
    if inp.cert is not None:
        found[inp.cert.path] = inp.cert.data
    if inp.key is not None:
        found[inp.key.path] = inp.key.data.reveal() if inp.key.data is not None else None
    for _, source in (*inp.trust, *inp.profiles):
        found[source.path] = source.data
    return found


def _plain_revision(version: Version, directory: Path) -> str:
    version.write(directory)
    inp = read_snapshot(directory)
    assert inp.findings == ()
    assert _content(inp) == version.files
    return inp.revision


class Swapper:
    """Replaces a link by rename, over and over, deleting the old target at once (kubelet and
    git-sync both do), in a background thread.

    Paced, each swap waits until a read finished after the previous swap: every read overlaps at
    most one swap, so its retries always end in a whole version. Unpaced, it swaps as fast as it
    can (an adversary far beyond any real kubelet or git-sync).
    """

    def __init__(self, swap: Callable[[int], None], rounds: int, *, paced: bool) -> None:
        self.swap = swap
        self.rounds = rounds
        self.paced = paced
        self.done = threading.Event()
        self.read_finished = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            for i in range(self.rounds):
                self.read_finished.clear()
                self.swap(i)
                if self.paced and not self.read_finished.wait(timeout=60):
                    raise TimeoutError("the reader did not finish a read within 60 s")
        except BaseException as exc:  # reported by the test thread
            self.error = exc
        finally:
            self.done.set()

    def __enter__(self) -> Swapper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()


IN_TRANSIT = "kept changing while being read"


def _read_while_swapping(
    state: Path, swapper: Swapper, expected: dict[str, tuple[str, dict[str, bytes]]]
) -> Counter[str]:
    """Read snapshots until the swapper is done; count which version each read saw."""
    seen: Counter[str] = Counter()
    with swapper:
        while not swapper.done.is_set():
            inp = read_snapshot(state)
            swapper.read_finished.set()
            for tag, (revision, files) in expected.items():
                if inp.revision == revision:
                    assert inp.findings == ()
                    assert _content(inp) == files, f"mixed read reported as version {tag}"
                    seen[tag] += 1
                    break
            else:
                # Only an unpaced adversary can outrun the retries, and then the reader must say
                # the state is in transit, never name a vanished file as missing.
                assert not swapper.paced, inp.findings
                assert inp.in_transit, inp.findings
                assert [f.reason for f in inp.findings if IN_TRANSIT in f.reason], inp.findings
                assert len(inp.findings) == 1, inp.findings
                assert (inp.gateway, inp.trust, inp.profiles) == (None, (), ())
                seen["in-transit"] += 1
    assert swapper.error is None, swapper.error
    return seen


def _configmap(state: Path, version: Version, stamp: str) -> None:
    """Lay out STATE as kubelet does for a ConfigMap volume with nested `items` paths."""
    version.write(state / stamp)
    (state / "..data").symlink_to(stamp)
    for top in sorted({rel.split("/")[0] for rel in version.files}):
        (state / top).symlink_to(f"..data/{top}")


def _kubelet_swap(state: Path, version: Version, stamp: str) -> None:
    old = os.readlink(state / "..data")
    version.write(state / stamp)
    tmp = state / "..data_tmp"
    tmp.symlink_to(stamp)
    tmp.rename(state / "..data")
    shutil.rmtree(state / old)


def test_configmap_layout_is_read_through_dotdata(tmp_path: Path, pki: Pki) -> None:
    a, _ = _versions(pki)
    revision = _plain_revision(a, tmp_path / "plain")
    state = tmp_path / "state"
    state.mkdir()
    _configmap(state, a, "..2026_11_27_10_00_00.123")
    inp = read_snapshot(state)
    assert inp.findings == ()
    assert _content(inp) == a.files
    assert inp.revision == revision
    assert [name for name, _ in inp.trust] == ["only-a", "partner-ca"]


@pytest.mark.parametrize("paced", [True, False], ids=["paced", "adversary"])
def test_configmap_swap_during_reads_gives_whole_versions(
    tmp_path: Path, pki: Pki, paced: bool
) -> None:
    a, b = _versions(pki)
    expected = {
        "a": (_plain_revision(a, tmp_path / "plain-a"), a.files),
        "b": (_plain_revision(b, tmp_path / "plain-b"), b.files),
    }
    state = tmp_path / "state"
    state.mkdir()
    _configmap(state, a, "..2026_11_27_10_00_00.000")

    def swap(i: int) -> None:
        _kubelet_swap(
            state, b if i % 2 == 0 else a, f"..2026_11_27_10_{i // 60:02d}_{i % 60:02d}.{i + 1:03d}"
        )

    seen = _read_while_swapping(state, Swapper(swap, 200, paced=paced), expected)
    assert seen["a"] + seen["b"] > 0
    if paced:
        assert seen["a"] > 0
        assert seen["b"] > 0
    final = read_snapshot(state)
    assert _content(final) == a.files  # 200 swaps end on A


@pytest.mark.parametrize("paced", [True, False], ids=["paced", "adversary"])
def test_git_sync_link_swap_during_reads_gives_whole_versions(
    tmp_path: Path, pki: Pki, paced: bool
) -> None:
    a, b = _versions(pki)
    expected = {
        "a": (_plain_revision(a, tmp_path / "plain-a"), a.files),
        "b": (_plain_revision(b, tmp_path / "plain-b"), b.files),
    }
    base = tmp_path / "git-sync"
    worktrees = base / ".worktrees"
    worktrees.mkdir(parents=True)
    a.write(worktrees / "sha-init")
    (base / "current").symlink_to(".worktrees/sha-init")

    def swap(i: int) -> None:
        old = os.readlink(base / "current")
        new = f".worktrees/sha-{i:04d}"
        (b if i % 2 == 0 else a).write(base / new)
        tmp = base / "current.tmp"
        tmp.symlink_to(new)
        tmp.rename(base / "current")
        shutil.rmtree(base / old)

    seen = _read_while_swapping(base / "current", Swapper(swap, 200, paced=paced), expected)
    assert seen["a"] + seen["b"] > 0
    if paced:
        assert seen["a"] > 0
        assert seen["b"] > 0
    assert _content(read_snapshot(base / "current")) == a.files


# -- revision ------------------------------------------------------------------------------------


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [
            "git",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
        env={**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"},
    )
    return done.stdout.strip()


def _git_repo(path: Path, pki: Pki) -> StateDir:
    state = standard_state(path, pki)
    _git(path, "init", "-q")
    _git(path, "add", "-A")
    _git(path, "commit", "-q", "-m", "desired state")
    return state


def test_git_checkout_revision_is_the_commit(tmp_path: Path, pki: Pki) -> None:
    state = _git_repo(tmp_path / "repo", pki)
    head = _git(state.path, "rev-parse", "HEAD")
    assert re.fullmatch(r"[0-9a-f]{40}", head)
    assert read_snapshot(state.path).revision == head

    state.write("README.md", "notes\n")
    _git(state.path, "add", "-A")
    _git(state.path, "commit", "-q", "-m", "docs")
    new_head = _git(state.path, "rev-parse", "HEAD")
    assert new_head != head
    assert read_snapshot(state.path).revision == new_head


def test_git_worktree_revision_is_its_commit(tmp_path: Path, pki: Pki) -> None:
    state = _git_repo(tmp_path / "repo", pki)
    first = _git(state.path, "rev-parse", "HEAD")
    state.write("README.md", "more\n")
    _git(state.path, "add", "-A")
    _git(state.path, "commit", "-q", "-m", "second")
    _git(state.path, "worktree", "add", "-q", str(tmp_path / "wt"), first)
    _git(state.path, "worktree", "add", "-q", "-b", "branch", str(tmp_path / "wt2"))
    assert (tmp_path / "wt" / ".git").is_file()
    assert read_snapshot(tmp_path / "wt").revision == first  # detached, as git-sync checks out
    assert read_snapshot(tmp_path / "wt2").revision == _git(tmp_path / "wt2", "rev-parse", "HEAD")


def test_git_packed_refs_revision(tmp_path: Path, pki: Pki) -> None:
    state = _git_repo(tmp_path / "repo", pki)
    _git(state.path, "pack-refs", "--all")
    assert not (state.path / ".git/refs/heads/main").exists()
    assert read_snapshot(state.path).revision == _git(state.path, "rev-parse", "HEAD")


def test_git_sync_link_to_a_worktree_gives_its_commit(tmp_path: Path, pki: Pki) -> None:
    state = _git_repo(tmp_path / "repo", pki)
    head = _git(state.path, "rev-parse", "HEAD")
    _git(state.path, "worktree", "add", "-q", str(tmp_path / "repo/.worktrees" / head), head)
    (tmp_path / "current").symlink_to(f"repo/.worktrees/{head}")
    assert read_snapshot(tmp_path / "current").revision == head


def test_non_git_revision_is_a_stable_content_digest(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    first = read_snapshot(state.path).revision
    assert SHA256_REVISION.match(first)
    assert read_snapshot(state.path).revision == first

    state.write("README.md", "unrelated\n")
    assert read_snapshot(state.path).revision == first

    copy = tmp_path / "copy"
    shutil.copytree(state.path, copy)
    assert read_snapshot(copy).revision == first  # content, not location


EDITS: dict[str, Callable[[StateDir, Pki], object]] = {
    "gateway": lambda s, p: s.write("gateway.toml", GATEWAY_TOML + "# comment\n"),
    "cert": lambda s, p: s.write("tls/cert.pem", p.chain(p.leaf2)),
    "key": lambda s, p: s.write("tls/key.pem", p.leaf2.key_pem),
    "trust-content": lambda s, p: s.trust("partner-ca", p.root.cert_pem),
    "trust-added": lambda s, p: s.trust("extra", p.root.cert_pem),
    "trust-renamed": lambda s, p: (s.path / "trust/partner-ca.pem").rename(
        s.path / "trust/partner.pem"
    ),
    "trust-removed": lambda s, p: s.remove("trust/partner-ca.pem"),
    "profile-content": lambda s, p: s.profile("relay", 'url = "smtps://relay2.example.com"\n'),
    "profile-added": lambda s, p: s.profile("new", 'url = "https://new.example.com"\n'),
}


@pytest.mark.parametrize("edit", sorted(EDITS), ids=sorted(EDITS))
def test_non_git_revision_changes_with_any_input(tmp_path: Path, pki: Pki, edit: str) -> None:
    state = standard_state(tmp_path / "state", pki)
    before = read_snapshot(state.path).revision
    EDITS[edit](state, pki)
    after = read_snapshot(state.path).revision
    assert SHA256_REVISION.match(after)
    assert after != before


def test_a_dangling_trust_folder_link_is_an_error_not_a_state_in_transit(
    tmp_path: Path, pki: Pki
) -> None:
    from tests.helpers.state import standard_state

    state = standard_state(tmp_path / "state", pki)
    for path in (state.path / "trust").iterdir():
        path.unlink()
    (state.path / "trust").rmdir()
    (state.path / "trust").symlink_to("missing")
    inp = read_snapshot(state.path)
    assert not inp.in_transit
    assert [(f.file, f.reason) for f in inp.findings if f.severity == "error"] == [
        ("trust", "leads to a directory that does not exist")
    ]


def test_a_key_rotated_in_key_dirs_changes_the_content_digest_not_the_commit(
    tmp_path: Path, pki: Pki
) -> None:
    """A git STATE's revision is its commit; what the daemon's backoff compares also sees
    the key mounted from key_dirs, so a rotated key is a new desired state."""
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    key = secrets_dir / "key.pem"
    key.write_bytes(pki.leaf.key_pem)
    state = _git_repo(tmp_path / "repo", pki)
    text = (state.path / "gateway.toml").read_text().replace('"tls/key.pem"', f'"{key}"')
    state.write("gateway.toml", text)
    _git(state.path, "commit", "-q", "-am", "key from key_dirs")
    before = read_snapshot(state.path, [secrets_dir])
    key.write_bytes(pki.leaf2.key_pem)
    after = read_snapshot(state.path, [secrets_dir])
    assert before.revision == after.revision == _git(state.path, "rev-parse", "HEAD")
    assert before.content_digest != after.content_digest


def test_a_state_dir_that_vanishes_while_it_is_read_is_read_again_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing read (no gateway.toml, trust/ or profiles/) in a directory that a checkout tool
    then replaces: the look at whether it is empty must not raise. The daemon logged such a
    FileNotFoundError as a crashed pass (found by the long fuzz run)."""
    from reconciler.source import snapshot

    state = tmp_path / "state"
    state.mkdir()
    (state / "README").write_text("not a desired state yet\n")
    real_listdir = os.listdir
    calls: list[str] = []

    def vanishing(path: str) -> list[str]:
        if not calls:  # the first look: the directory goes just before it
            calls.append(path)
            shutil.rmtree(state)
        return real_listdir(path)

    monkeypatch.setattr(snapshot.os, "listdir", vanishing)
    found = read_snapshot(state)
    assert calls == [os.path.realpath(state)]
    assert found.revision == "unknown"
    assert [f.reason for f in found.findings] == ["desired-state directory does not exist"]


def _stale_atime(path: Path) -> None:
    """An access time older than the file's change time: any mount but `noatime` updates it on
    the next read (relatime does once per change)."""
    os.utime(path, ns=(1_000_000_000, path.stat().st_mtime_ns))


def test_reading_the_state_leaves_access_times_as_they_were(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    control = tmp_path / "control.txt"
    control.write_bytes(b"read as any program reads")
    _stale_atime(control)
    control.read_bytes()
    if control.stat().st_atime_ns == 1_000_000_000:
        pytest.skip("this file system does not update access times on reads (noatime)")
    files = [p for p in state.path.rglob("*") if p.is_file()]
    for path in files:
        _stale_atime(path)
    inp = read_snapshot(state.path)
    assert inp.findings == ()
    assert inp.trust
    touched = [str(p) for p in files if p.stat().st_atime_ns != 1_000_000_000]
    assert touched == [], "reads updated the access time (an inode write each)"


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to give the files to another owner")
def test_a_reader_that_may_not_keep_access_times_still_reads_every_file(
    tmp_path: Path, pki: Pki
) -> None:
    """Neither the files' owner nor holding CAP_FOWNER, the kernel refuses O_NOATIME (EPERM):
    the files are read the ordinary way, with the same result."""
    state = standard_state(tmp_path / "state", pki)
    for path in state.path.rglob("*"):
        os.lchown(path, 4321, 4321)
    script = (
        "import sys; from reconciler.source.state import read_snapshot; "
        "inp = read_snapshot(__import__('pathlib').Path(sys.argv[1])); "
        "print(len(inp.trust), len(inp.profiles), inp.gateway is not None, inp.cert is not None,"
        " inp.key is not None and inp.key.data is not None, [f.reason for f in inp.findings])"
    )
    expected = read_snapshot(state.path)
    done = subprocess.run(
        ["setpriv", "--bounding-set=-fowner", "--", sys.executable, "-c", script, str(state.path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    wanted = f"{len(expected.trust)} {len(expected.profiles)} True True True []"
    assert done.stdout.strip() == wanted, done.stderr
