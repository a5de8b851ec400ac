"""Outbound proof (`reconciler probe`): is every server of every TLS profile trusted?

For each server of each profile the probe connects like the gateway would (TLS at once for https
and smtps; banner, EHLO and STARTTLS first for smtp) and verifies the chain and the host name
against the system store plus the desired trust entries, which need not be applied yet: a CI job
can prove a change before it is merged. Results are per server; a profile with some servers
failing and some passing is "degraded" (its preferred server failing is not fine just because a
fallback answers). Reads the network only; changes nothing.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from reconciler.core.desired import DesiredState, Profile, ProfileTls, Server
from reconciler.probe.connect import (
    Leaf,
    bare_host,
    connect,
    presenting_context,
    verifying_context,
)
from reconciler.probe.starttls import Deadline, NoStartTlsError, SmtpProtocolError

__all__ = ["ProbeStatus", "ProbeResult", "probe_profiles", "probe_desired"]

ProbeStatus = Literal["trusted", "untrusted", "unreachable", "no-starttls", "skipped"]


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
    verifying = verifying_context(extra_trust_pem, system_store=system_store)
    presenting = presenting_context()
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


def _probe_one(
    profile: Profile,
    number: int,
    server: Server,
    verifying: ssl.SSLContext,
    presenting: ssl.SSLContext,
    timeout_s: float,
) -> ProbeResult:
    started = time.monotonic()

    def done(status: ProbeStatus, detail: str, leaf: Leaf | None = None) -> ProbeResult:
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
        leaf = connect(server, verifying, Deadline(timeout_s), phase)
    except NoStartTlsError as exc:
        result = done("no-starttls", str(exc))
        if server.tls == "starttls-optional":
            warning = f"{exc}: mail to {result.target} would be sent in clear text"
            return replace(result, downgrade_warning=warning)
        return result
    except ssl.SSLCertVerificationError as exc:
        detail = f"certificate verify failed: {exc.verify_message or exc.reason or exc}"
        try:
            presented = connect(server, presenting, Deadline(timeout_s), ["connect"])
        except (OSError, SmtpProtocolError, NoStartTlsError):
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
    except SmtpProtocolError as exc:
        return done("unreachable", f"{phase[0]}: {exc}")
    return done("trusted", "chain and host name verified", leaf)


def _target(server: Server) -> str:
    host = bare_host(server.host)
    return f"[{host}]:{server.port}" if ":" in host else f"{host}:{server.port}"


def _result(
    profile: Profile,
    number: int,
    server: Server,
    status: ProbeStatus,
    detail: str,
    leaf: Leaf | None = None,
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
