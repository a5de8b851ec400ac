"""Outbound proof (`reconciler probe`): is every server of every TLS profile trusted by the store?

For each server of each profile the probe connects like the gateway would (TLS at once for https
and smtps; banner, EHLO and STARTTLS first for smtp) and verifies the chain and the host name
against the system store plus the desired trust entries, which need not be applied yet: a CI job
can prove a change before it is merged. Results are per server; a profile with some servers
failing and some passing is "degraded" (its preferred server failing is not fine just because a
fallback answers). Reads the network only; changes nothing.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from cryptography import x509

from reconciler.core.desired import DesiredState, Profile, ProfileTls, Server
from reconciler.errors import StateRejectedError

__all__ = [
    "ProbeStatus",
    "ProbeResult",
    "probe_profiles",
    "probe_desired",
    "exit_code",
    "profile_verdicts",
    "format_results",
    "results_to_json",
]

ProbeStatus = Literal["trusted", "untrusted", "unreachable", "no-starttls", "skipped"]
ProfileVerdict = Literal["ok", "degraded", "failed", "skipped"]

# SMTP replies are short; a server that sends more is broken or hostile, not worth reading.
_MAX_REPLY_LINE = 4096
_MAX_REPLY_LINES = 100


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one profile's server presented and whether the desired store trusts it."""

    name: str
    target: str
    """host:port ([v6]:port) as connected to."""
    scheme: str
    tls: ProfileTls
    status: ProbeStatus
    detail: str
    """The verification error, the connection error, or what went right."""
    leaf_subject: str | None = None
    """The presented leaf's subject (RFC 4514), also when it is not trusted."""
    leaf_not_after: datetime | None = None
    duration_ms: int = 0
    downgrade_warning: str | None = None
    """Set when a starttls-optional server offers no STARTTLS: mail would go in clear text."""
    server: int = 0
    """The server's position in its profile (0: the preferred one in failover mode)."""
    servers: int = 1
    """How many servers the profile has."""
    mode: str = "failover"

    @property
    def failed(self) -> bool:
        """Whether this result makes `reconciler probe` exit 1."""
        if self.status in ("trusted", "skipped"):
            return False
        if self.status == "no-starttls":
            # starttls-optional falls back to clear text by design: a warning, not a failure.
            return self.tls == "starttls-required"
        return True


def probe_desired(
    desired: DesiredState,
    *,
    timeout_s: float = 10,
    parallel: int = 8,
    system_store: bool = True,
) -> list[ProbeResult]:
    """Probe every profile of a validated desired state against its own trust entries."""
    extra = b"\n".join(entry.pem for entry in desired.trust)
    return probe_profiles(
        desired.profiles, extra, timeout_s=timeout_s, parallel=parallel, system_store=system_store
    )


def probe_profiles(
    profiles: Sequence[Profile],
    extra_trust_pem: bytes,
    *,
    timeout_s: float = 10,
    parallel: int = 8,
    system_store: bool = True,
) -> list[ProbeResult]:
    """One result per server, in profile then server order; servers without TLS are "skipped".

    Each connection is bounded by `timeout_s` in total; when the server is not trusted a second,
    unverified handshake (bounded the same way) reports the leaf it presents. At most `parallel`
    servers are probed at once.
    """
    if timeout_s <= 0:
        raise ValueError("timeout_s must be positive")
    if parallel < 1:
        raise ValueError("parallel must be at least 1")
    verifying = _verifying_context(extra_trust_pem, system_store=system_store)
    presenting = _presenting_context()
    each = [(p, number, server) for p in profiles for number, server in enumerate(p.all_servers)]
    results: list[ProbeResult | None] = [None] * len(each)
    jobs = [(index, job) for index, job in enumerate(each) if job[2].tls != "none"]
    for index, (profile, number, server) in enumerate(each):
        if server.tls == "none":
            results[index] = _result(
                profile, number, server, "skipped", "no TLS: clear text by configuration"
            )
    if jobs:
        with ThreadPoolExecutor(max_workers=min(parallel, len(jobs))) as pool:
            futures = [
                (index, pool.submit(_probe_one, *job, verifying, presenting, timeout_s))
                for index, job in jobs
            ]
            for index, future in futures:
                results[index] = future.result()
    return [result for result in results if result is not None]


def profile_verdicts(results: Sequence[ProbeResult]) -> dict[str, ProfileVerdict]:
    """Per profile: "ok" (every TLS server passed), "degraded" (some passed, some failed: in
    failover mode a failing preferred server is not fine because a later one answers),
    "failed" (none passed) or "skipped" (no TLS server)."""
    by_name: dict[str, list[ProbeResult]] = {}
    for result in results:
        by_name.setdefault(result.name, []).append(result)
    verdicts: dict[str, ProfileVerdict] = {}
    for name, mine in by_name.items():
        probed = [r for r in mine if r.status != "skipped"]
        failed = sum(r.failed for r in probed)
        if not probed:
            verdicts[name] = "skipped"
        elif not failed:
            verdicts[name] = "ok"
        else:
            verdicts[name] = "failed" if failed == len(probed) else "degraded"
    return verdicts


def exit_code(results: Sequence[ProbeResult]) -> int:
    """0 when every server of every TLS profile is trusted (a starttls-optional downgrade only
    warns), else 1: a degraded profile fails the probe too."""
    return 1 if any(result.failed for result in results) else 0


def results_to_json(results: Sequence[ProbeResult]) -> list[dict[str, object]]:
    """Machine output of `reconciler probe --json`: one object per server."""
    verdicts = profile_verdicts(results)
    return [
        {
            "name": r.name,
            "server": r.server,
            "servers": r.servers,
            "mode": r.mode,
            "profile_status": verdicts[r.name],
            "target": r.target,
            "scheme": r.scheme,
            "tls": r.tls,
            "status": r.status,
            "ok": not r.failed,
            "detail": r.detail,
            "leaf_subject": r.leaf_subject,
            "leaf_not_after": _iso(r.leaf_not_after),
            "duration_ms": r.duration_ms,
            "downgrade_warning": r.downgrade_warning,
        }
        for r in results
    ]


def format_results(results: Sequence[ProbeResult]) -> str:
    """Human output of `reconciler probe`: one aligned row per server, then the profiles that are
    not fine, warnings, a summary."""
    header = ("PROFILE", "SERVER", "TARGET", "TLS", "STATUS", "LEAF", "NOT AFTER", "DETAIL")
    rows = [header] + [
        (
            r.name,
            f"{r.server + 1}/{r.servers}",
            r.target,
            r.tls,
            r.status if not r.failed else f"{r.status} !",
            r.leaf_subject or "-",
            _iso(r.leaf_not_after) or "-",
            r.detail,
        )
        for r in results
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
        + "  "
        + row[-1]
        for row in rows
    ]
    verdicts = profile_verdicts(results)
    for name, verdict in verdicts.items():
        if verdict in ("degraded", "failed"):
            lines.append(f"{verdict}: {name}: {_verdict_detail(name, results)}")
    lines += [f"warning: {r.name}: {r.downgrade_warning}" for r in results if r.downgrade_warning]
    counts = {
        "trusted": sum(r.status == "trusted" for r in results),
        "failed": sum(r.failed for r in results),
        "skipped (no TLS)": sum(r.status == "skipped" for r in results),
    }
    degraded = sum(v == "degraded" for v in verdicts.values())
    if degraded:
        counts["degraded profile(s)"] = degraded
    lines.append(", ".join(f"{count} {label}" for label, count in counts.items()))
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _verdict_detail(name: str, results: Sequence[ProbeResult]) -> str:
    mine = [r for r in results if r.name == name and r.status != "skipped"]
    parts = []
    for r in mine:
        role = "preferred server" if r.server == 0 and r.mode == "failover" else "server"
        parts.append(f"{role} {r.server + 1} ({r.target}) {'failed' if r.failed else 'passed'}")
    return "; ".join(parts) + f" ({mine[0].mode})" if mine else ""


# -- one server ---------------------------------------------------------------------------------


class _NoStartTlsError(Exception):
    """The SMTP server does not offer or refuses STARTTLS."""


class _ProtocolError(Exception):
    """The server does not speak SMTP as expected."""


@dataclass(frozen=True, slots=True)
class _Leaf:
    subject: str | None
    not_after: datetime | None


class _Deadline:
    """A total time budget over many socket operations: each gets what is left of it."""

    __slots__ = ("_end",)

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self._end - time.monotonic()
        if left <= 0:
            # settimeout(0) would make the socket non-blocking: fail like a timeout instead.
            raise TimeoutError("timed out")
        return left


def _probe_one(
    profile: Profile,
    number: int,
    server: Server,
    verifying: ssl.SSLContext,
    presenting: ssl.SSLContext,
    timeout_s: float,
) -> ProbeResult:
    started = time.monotonic()

    def done(status: ProbeStatus, detail: str, leaf: _Leaf | None = None) -> ProbeResult:
        return _result(
            profile,
            number,
            server,
            status,
            detail,
            leaf,
            duration_ms=round((time.monotonic() - started) * 1000),
        )

    phase = ["connect"]  # the step in progress, for the error message
    try:
        leaf = _connect(server, verifying, _Deadline(timeout_s), phase)
    except _NoStartTlsError as exc:
        result = done("no-starttls", str(exc))
        if server.tls == "starttls-optional":
            warning = f"{exc}: mail to {result.target} would be sent in clear text"
            return replace(result, downgrade_warning=warning)
        return result
    except ssl.SSLCertVerificationError as exc:
        detail = f"certificate verify failed: {exc.verify_message or exc.reason or exc}"
        try:
            presented = _connect(server, presenting, _Deadline(timeout_s), ["connect"])
        except (OSError, _ProtocolError, _NoStartTlsError):
            presented = None  # the verification error is the news; the leaf is a bonus
        return done("untrusted", detail, presented)
    except TimeoutError:
        return done("unreachable", f"{phase[0]}: timed out after {timeout_s:g} s")
    except ssl.SSLError as exc:
        return done("unreachable", f"TLS handshake failed: {exc.reason or exc}")
    except socket.gaierror as exc:
        return done("unreachable", f"connect: cannot resolve {server.host}: {exc.strerror}")
    except OSError as exc:
        return done("unreachable", f"{phase[0]}: {exc.strerror or exc}")
    except _ProtocolError as exc:
        return done("unreachable", f"{phase[0]}: {exc}")
    return done("trusted", "chain and host name verified", leaf)


def _connect(
    server: Server, context: ssl.SSLContext, deadline: _Deadline, phase: list[str]
) -> _Leaf:
    host = _bare_host(server.host)
    phase[0] = "connect"
    with socket.create_connection((host, server.port), timeout=deadline.remaining()) as sock:
        smtp = server.scheme == "smtp"
        if smtp:
            _starttls_dialog(sock, deadline, phase)
        phase[0] = "TLS handshake"
        sock.settimeout(deadline.remaining())
        with context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False) as tls:
            tls.do_handshake()
            der = tls.getpeercert(binary_form=True)
            if smtp:
                _quit(tls)
    return _describe(der)


def _starttls_dialog(sock: socket.socket, deadline: _Deadline, phase: list[str]) -> None:
    """Banner, EHLO, STARTTLS; returns when the server is ready for the TLS handshake."""
    reader = _ReplyReader(sock, deadline)
    phase[0] = "SMTP banner"
    code, lines = reader.reply()
    if code != 220:
        raise _ProtocolError(f"server greeted with {code} {' '.join(lines)}".rstrip())
    phase[0] = "EHLO"
    sock.settimeout(deadline.remaining())
    sock.sendall(b"EHLO " + _address_literal(sock).encode("ascii") + b"\r\n")
    code, lines = reader.reply()
    if code != 250:
        _quit(sock)
        raise _NoStartTlsError(f"server does not offer STARTTLS (EHLO answered {code})")
    if not any(line.split(" ", 1)[0].upper() == "STARTTLS" for line in lines[1:]):
        _quit(sock)
        raise _NoStartTlsError("server does not offer STARTTLS")
    phase[0] = "STARTTLS"
    sock.settimeout(deadline.remaining())
    sock.sendall(b"STARTTLS\r\n")
    code, lines = reader.reply()
    if code != 220:
        _quit(sock)
        raise _NoStartTlsError(f"server refused STARTTLS: {code} {' '.join(lines)}".rstrip())
    if reader.buffered:
        # Clear text after the 220 would be read as if it came over TLS (STARTTLS injection).
        raise _ProtocolError("server sent data after its STARTTLS reply")


class _ReplyReader:
    """Reads SMTP replies (multi-line: `250-...` until `250 ...`) within the deadline."""

    __slots__ = ("_buffer", "_deadline", "_sock")

    def __init__(self, sock: socket.socket, deadline: _Deadline) -> None:
        self._sock = sock
        self._deadline = deadline
        self._buffer = b""

    @property
    def buffered(self) -> bool:
        return bool(self._buffer)

    def reply(self) -> tuple[int, list[str]]:
        texts: list[str] = []
        while len(texts) < _MAX_REPLY_LINES:
            line = self._line()
            if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in ("", " ", "-"):
                raise _ProtocolError(f"not an SMTP reply: {line[:80]!r}")
            texts.append(line[4:])
            if line[3:4] != "-":
                return int(line[:3]), texts
        raise _ProtocolError(f"reply longer than {_MAX_REPLY_LINES} lines")

    def _line(self) -> str:
        while b"\n" not in self._buffer:
            if len(self._buffer) > _MAX_REPLY_LINE:
                raise _ProtocolError(f"reply line longer than {_MAX_REPLY_LINE} bytes")
            self._sock.settimeout(self._deadline.remaining())
            chunk = self._sock.recv(4096)
            if not chunk:
                raise _ProtocolError("server closed the connection")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.rstrip(b"\r").decode("utf-8", "replace")


def _quit(sock: socket.socket) -> None:
    """Say goodbye without waiting for the answer: the server logs a clean end, nothing more."""
    # OSError: a server that already hung up needs no QUIT.
    with contextlib.suppress(OSError):
        sock.sendall(b"QUIT\r\n")


def _address_literal(sock: socket.socket) -> str:
    # RFC 5321 allows an address literal for EHLO; it needs no DNS and is always true.
    address = sock.getsockname()[0]
    return f"[IPv6:{address}]" if ":" in address else f"[{address}]"


def _bare_host(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _target(server: Server) -> str:
    host = _bare_host(server.host)
    return f"[{host}]:{server.port}" if ":" in host else f"{host}:{server.port}"


def _describe(der: bytes | None) -> _Leaf:
    if not der:
        return _Leaf(None, None)
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return _Leaf("(unparsable certificate)", None)
    return _Leaf(cert.subject.rfc4514_string(), cert.not_valid_after_utc)


def _result(
    profile: Profile,
    number: int,
    server: Server,
    status: ProbeStatus,
    detail: str,
    leaf: _Leaf | None = None,
    *,
    duration_ms: int = 0,
) -> ProbeResult:
    return ProbeResult(
        name=profile.name,
        target=_target(server),
        scheme=server.scheme,
        tls=server.tls,
        server=number,
        servers=len(profile.all_servers),
        mode=profile.mode,
        status=status,
        detail=detail,
        leaf_subject=leaf.subject if leaf else None,
        leaf_not_after=leaf.not_after if leaf else None,
        duration_ms=duration_ms,
    )


def _verifying_context(extra_trust_pem: bytes, *, system_store: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and host name checks
    if system_store:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    # A trust entry may be a server's own (non-CA) certificate: OpenSSL only accepts a chain
    # ending in it as trusted with partial-chain verification.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if extra_trust_pem.strip():
        try:
            context.load_verify_locations(cadata=extra_trust_pem.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError) as exc:
            raise StateRejectedError(
                [f"trust/: the desired trust entries cannot be loaded for the probe: {exc}"]
            ) from exc
    return context


def _presenting_context() -> ssl.SSLContext:
    # Only used after verification failed, to report which leaf the server presents.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None
