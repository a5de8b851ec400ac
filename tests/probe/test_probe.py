"""`reconciler probe` against real TLS and SMTP servers on 127.0.0.1, PKI made at test time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

import pytest

from reconciler.cli.probereport import exit_code, format_results, results_to_json
from reconciler.core.desired import DesiredState, GatewayFile, Profile, ProfileTls, TrustEntry
from reconciler.errors import StateRejectedError
from reconciler.probe.prober import ProbeResult, probe_desired, probe_profiles
from reconciler.support.devpki import issue
from tests.helpers.state import Pki
from tests.helpers.tls import SilentServer, SmtpServer, TlsServer, closed_port, server_context

TIMEOUT_S = 3.0


# conftest's `pki`: the servers present gateway.test (SANs localhost, 127.0.0.1) plus the
# intermediate; the desired trust entry is the root.


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[TlsServer]:
    with TlsServer(server_context(pki.chain(), pki.leaf.key_pem)) as server:
        yield server


@pytest.fixture
def starttls_server(pki: Pki) -> Iterator[SmtpServer]:
    with SmtpServer(server_context(pki.chain(), pki.leaf.key_pem)) as server:
        yield server


@pytest.fixture
def plain_smtp_server() -> Iterator[SmtpServer]:
    with SmtpServer(None, offer_starttls=False) as server:
        yield server


def profile(name: str, scheme: str, port: int, tls: ProfileTls, host: str = "127.0.0.1") -> Profile:
    kind = "smtp" if scheme.startswith("smtp") else "core"
    return Profile(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        scheme=scheme,  # type: ignore[arg-type]
        host=host,
        port=port,
        path="",
        tls=tls,
    )


def probe_one(p: Profile, trust: bytes, **kwargs: bool) -> ProbeResult:
    (result,) = probe_profiles([p], trust, timeout_s=TIMEOUT_S, **kwargs)
    return result


@pytest.mark.parametrize("scheme", ["https", "smtps"])
def test_implicit_tls_trusted_with_the_desired_ca(
    tls_server: TlsServer, pki: Pki, scheme: str
) -> None:
    result = probe_one(profile("relay", scheme, tls_server.port, "implicit"), pki.root.cert_pem)
    assert result.status == "trusted", result.detail
    assert result.leaf_subject == "CN=gateway.test"
    assert result.leaf_not_after == pki.leaf.cert.not_valid_after_utc
    assert result.target == f"127.0.0.1:{tls_server.port}"
    assert exit_code([result]) == 0


def test_implicit_tls_untrusted_without_the_ca_still_reports_the_leaf(
    tls_server: TlsServer, pki: Pki
) -> None:
    result = probe_one(profile("relay", "smtps", tls_server.port, "implicit"), b"")
    assert result.status == "untrusted"
    assert "unable to get local issuer certificate" in result.detail
    assert result.leaf_subject == "CN=gateway.test"
    assert result.leaf_not_after == pki.leaf.cert.not_valid_after_utc
    assert exit_code([result]) == 1


@pytest.mark.parametrize("anchor", ["leaf", "intermediate"])
def test_a_certificate_below_the_root_as_trust_entry_is_trusted(
    tls_server: TlsServer, pki: Pki, anchor: str
) -> None:
    """A server's own (non-CA) certificate or an intermediate as trust entry: partial chain."""
    trust = pki.leaf.cert_pem if anchor == "leaf" else pki.intermediate.cert_pem
    result = probe_one(profile("relay", "https", tls_server.port, "implicit"), trust)
    assert result.status == "trusted", result.detail


def test_another_ca_does_not_make_the_server_trusted(tls_server: TlsServer, pki: Pki) -> None:
    result = probe_one(
        profile("relay", "https", tls_server.port, "implicit"), pki.other_ca.cert_pem
    )
    assert result.status == "untrusted"


def test_only_the_desired_entries_without_the_system_store(tls_server: TlsServer, pki: Pki) -> None:
    p = profile("relay", "https", tls_server.port, "implicit")
    assert probe_one(p, pki.root.cert_pem, system_store=False).status == "trusted"
    assert probe_one(p, b"", system_store=False).status == "untrusted"


def test_host_name_mismatch_is_untrusted(pki: Pki) -> None:
    wrong = issue(pki.intermediate, "elsewhere.test", sans=("elsewhere.test",))
    with TlsServer(server_context(pki.chain(wrong), wrong.key_pem)) as server:
        result = probe_one(profile("relay", "https", server.port, "implicit"), pki.root.cert_pem)
    assert result.status == "untrusted"
    assert "mismatch" in result.detail
    assert result.leaf_subject == "CN=elsewhere.test"


def test_localhost_name_is_verified_against_dns_san(tls_server: TlsServer, pki: Pki) -> None:
    p = profile("relay", "https", tls_server.port, "implicit", host="localhost")
    result = probe_one(p, pki.root.cert_pem)
    assert result.status == "trusted", result.detail
    assert result.target == f"localhost:{tls_server.port}"


@pytest.mark.parametrize("tls", ["starttls-required", "starttls-optional"])
def test_starttls_trusted_with_the_desired_ca(
    starttls_server: SmtpServer, pki: Pki, tls: ProfileTls
) -> None:
    result = probe_one(profile("mx", "smtp", starttls_server.port, tls), pki.root.cert_pem)
    assert result.status == "trusted", result.detail
    assert result.leaf_subject == "CN=gateway.test"
    assert result.downgrade_warning is None


def test_starttls_untrusted_without_the_ca(starttls_server: SmtpServer) -> None:
    result = probe_one(profile("mx", "smtp", starttls_server.port, "starttls-required"), b"")
    assert result.status == "untrusted"
    assert "certificate verify failed" in result.detail
    assert result.leaf_subject == "CN=gateway.test"


def test_no_starttls_fails_a_required_profile(plain_smtp_server: SmtpServer, pki: Pki) -> None:
    p = profile("mx", "smtp", plain_smtp_server.port, "starttls-required")
    result = probe_one(p, pki.root.cert_pem)
    assert result.status == "no-starttls"
    assert result.detail == "server does not offer STARTTLS"
    assert result.downgrade_warning is None
    assert exit_code([result]) == 1


def test_no_starttls_only_warns_for_an_optional_profile(
    plain_smtp_server: SmtpServer, pki: Pki
) -> None:
    p = profile("mx", "smtp", plain_smtp_server.port, "starttls-optional")
    result = probe_one(p, pki.root.cert_pem)
    assert result.status == "no-starttls"
    assert result.downgrade_warning is not None
    assert "clear text" in result.downgrade_warning
    assert exit_code([result]) == 0
    assert f"warning: mx: {result.downgrade_warning}" in format_results([result])


def test_smtp_refused_banner_is_unreachable(pki: Pki) -> None:
    with SmtpServer(None, banner=("554 5.3.2 too busy",)) as server:
        result = probe_one(profile("mx", "smtp", server.port, "starttls-required"), b"")
    assert result.status == "unreachable"
    assert result.detail == "SMTP banner: server greeted with 554 5.3.2 too busy"


def test_closed_port_is_unreachable() -> None:
    result = probe_one(profile("gone", "smtps", closed_port(), "implicit"), b"")
    assert result.status == "unreachable"
    assert result.detail.startswith("connect: ")
    assert "refused" in result.detail.lower()
    assert result.leaf_subject is None


def test_implicit_tls_against_a_clear_text_server_fails_the_handshake(
    plain_smtp_server: SmtpServer,
) -> None:
    result = probe_one(profile("mx", "smtps", plain_smtp_server.port, "implicit"), b"")
    assert result.status == "unreachable"
    assert result.detail.startswith("TLS handshake failed")


def test_a_silent_server_times_out_within_the_bound() -> None:
    with SilentServer() as server:
        results = probe_profiles(
            [
                profile("silent-smtps", "smtps", server.port, "implicit"),
                profile("silent-smtp", "smtp", server.port, "starttls-required"),
            ],
            b"",
            timeout_s=0.5,
        )
    assert [(r.status, r.detail) for r in results] == [
        ("unreachable", "TLS handshake: timed out after 0.5 s"),
        ("unreachable", "SMTP banner: timed out after 0.5 s"),
    ]


def test_profiles_without_tls_are_skipped_and_do_not_fail() -> None:
    results = probe_profiles(
        [profile("core", "http", 80, "none"), profile("clear", "smtp", 25, "none")],
        b"",
        timeout_s=TIMEOUT_S,
    )
    assert [r.status for r in results] == ["skipped", "skipped"]
    assert exit_code(results) == 0


def test_many_profiles_in_parallel_keep_profile_order(
    tls_server: TlsServer,
    starttls_server: SmtpServer,
    plain_smtp_server: SmtpServer,
    pki: Pki,
) -> None:
    profiles = [
        profile("a-https", "https", tls_server.port, "implicit"),
        profile("b-http", "http", 80, "none"),
        profile("c-mx", "smtp", starttls_server.port, "starttls-required"),
        profile("d-gone", "smtps", closed_port(), "implicit"),
        profile("e-plain", "smtp", plain_smtp_server.port, "starttls-optional"),
    ] + [profile(f"f-{i}", "smtps", tls_server.port, "implicit") for i in range(6)]
    results = probe_profiles(profiles, pki.root.cert_pem, timeout_s=TIMEOUT_S, parallel=3)
    assert [r.name for r in results] == [p.name for p in profiles]
    assert [r.status for r in results[:5]] == [
        "trusted",
        "skipped",
        "trusted",
        "unreachable",
        "no-starttls",
    ]
    assert {r.status for r in results[5:]} == {"trusted"}
    assert exit_code(results) == 1  # d-gone


def test_output_formats(tls_server: TlsServer, pki: Pki) -> None:
    results = probe_profiles(
        [
            profile("relay", "https", tls_server.port, "implicit"),
            profile("core-web", "http", 80, "none"),
        ],
        pki.root.cert_pem,
        timeout_s=TIMEOUT_S,
    )
    text = format_results(results)
    lines = text.splitlines()
    assert lines[0].split() == [
        "PROFILE",
        "SERVER",
        "TARGET",
        "TLS",
        "STATUS",
        "LEAF",
        "NOT",
        "AFTER",
        "DETAIL",
    ]
    # aligned: every row's TARGET column starts where the header's does
    column = lines[0].index("TARGET")
    assert lines[1][column:].startswith(f"127.0.0.1:{tls_server.port}")
    assert lines[2][column:].startswith("127.0.0.1:80")
    assert lines[-1] == "1 trusted, 0 failed, 1 skipped (no TLS)"

    document = results_to_json(results)
    assert json.loads(json.dumps(document)) == document
    assert document[0]["status"] == "trusted"
    assert document[0]["ok"] is True
    assert document[0]["leaf_subject"] == "CN=gateway.test"
    not_after = document[0]["leaf_not_after"]
    assert isinstance(not_after, str)
    assert not_after.endswith("Z")
    assert datetime.fromisoformat(not_after) == pki.leaf.cert.not_valid_after_utc
    assert document[1]["status"] == "skipped"


def test_probe_desired_uses_the_desired_trust_entries(tls_server: TlsServer, pki: Pki) -> None:
    desired = DesiredState(
        revision="sha256:test",
        gateway=GatewayFile(),
        identity=None,
        trust=(TrustEntry(name="probe-ca", pem=pki.root.cert_pem, certs=()),),
        profiles=(profile("relay", "smtps", tls_server.port, "implicit"),),
    )
    (result,) = probe_desired(desired, timeout_s=TIMEOUT_S)
    assert result.status == "trusted", result.detail


def test_unloadable_trust_entries_are_a_clear_error() -> None:
    with pytest.raises(StateRejectedError, match="trust entries cannot be loaded"):
        probe_profiles([], b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")


def test_bad_bounds_are_rejected() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        probe_profiles([], b"", timeout_s=0)
    with pytest.raises(ValueError, match="parallel"):
        probe_profiles([], b"", parallel=0)
