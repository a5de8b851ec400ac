"""Server profiles: their servers, type, TLS and credential references; credential contents."""

from __future__ import annotations

from typing import Literal

from reconciler.core.collect import Findings
from reconciler.core.desired import (
    CREDENTIAL_FIELDS,
    Credential,
    Finding,
    PolicySection,
    Profile,
    ProfileFile,
    ProfileTls,
    ProfileType,
    Scheme,
    Server,
    TransportEncryption,
)
from reconciler.core.paths import CONTROL_CHARS, path_problem
from reconciler.core.secret import SecretBytes
from reconciler.core.server_url import parse_url

DEFAULT_PORTS: dict[str, int] = {"http": 8008, "https": 8008, "smtp": 25, "smtps": 465}
"""Default port by scheme, as the gateway defines them: Core listens on 8008 (http or https)."""
CORE_DEFAULT_PORT = 8008
VAULT_DEFAULT_PORT = 8010
VAULT_DEFAULT_PATH = "/vault_rest"
_TYPE_SCHEMES: dict[str, tuple[Scheme, ...]] = {
    "smtp": ("smtp", "smtps"),
    "core": ("http", "https"),
    "vault": ("http", "https"),
}
_Parsed = list[tuple[str, Scheme | None, tuple[str, int | None, str] | None]]
"""Each server's field, and its scheme and (host, port, path) where they could be read."""


def check_profile(
    name: str, model: ProfileFile, *, file: str, policy: PolicySection
) -> tuple[Profile | None, list[Finding]]:
    """Validate and normalise one server profile (the one-server `url` or the full form).

    Every server's host is lowercased and kept without IPv6 brackets; its port is explicit (the
    type's default when absent: smtp 25, smtps 465, core 8008, vault 8010); its path is "" when
    the URL has none (vault: `/vault_rest`), else as given (core and vault only). Credentials
    are not read here: see `check_credential`.
    """
    profile, findings = _check_profile(name, model, file, policy)
    return profile, list(findings)


def _check_profile(
    name: str, model: ProfileFile, file: str, policy: PolicySection
) -> tuple[Profile | None, tuple[Finding, ...]]:
    # Not cached here: a daemon keeps each profile file's verdict (core.evaluate), so a pass over
    # thousands of unchanged profiles does not come here.
    out = Findings()
    if model.url is not None and model.servers is not None:
        out.error(
            file,
            "servers",
            "give either url (one server) or servers (one or more), not both",
            rule="profile-servers",
        )
        return None, tuple(out.items)
    if model.url is None and model.servers is None:
        out.error(
            file,
            "url",
            'required key is missing: url = "SCHEME://HOST[:PORT]" or servers = [...] '
            "(one or more, in order of preference)",
            rule="profile-servers",
        )
        return None, tuple(out.items)
    listed = (
        [("url", model.url)]
        if model.url is not None
        else [(f"servers[{i}]", url) for i, url in enumerate(model.servers or ())]
    )
    parsed = [(field, *parse_url(url, file, out, field)) for field, url in listed]
    kind = _profile_type(model, parsed, file, out)
    if model.mode is not None and len(listed) < 2:
        out.error(
            file,
            "mode",
            f"{model.mode} only means something with two or more servers; remove it or list "
            "more servers",
            rule="profile-servers",
        )
    _check_credential_refs(model, kind, file, out)
    te = model.transport_encryption
    _check_transport_encryption(te, parsed, file, out)
    servers = _servers(parsed, kind, te, model.url is not None, file, policy, out)
    if kind is None or out.has_error or not servers:
        return None, tuple(out.items)
    first = servers[0]
    profile = Profile(
        name=name,
        kind=kind,
        scheme=first.scheme,
        host=first.host,
        port=first.port,
        path=first.path,
        tls=first.tls,
        servers=tuple(servers),
        mode=model.mode or "failover",
    )
    return profile, tuple(out.items)


def _check_transport_encryption(
    te: TransportEncryption | None, parsed: _Parsed, file: str, out: Findings
) -> None:
    """`transport_encryption` is given exactly when a server is smtp:// (STARTTLS or not)."""
    smtp_fields = [field for field, scheme, _ in parsed if scheme == "smtp"]
    if te is not None and not smtp_fields and all(s is not None for _, s, _ in parsed):
        scheme = next((s for _, s, _ in parsed if s is not None), None)
        out.error(
            file,
            "transport_encryption",
            f"only allowed with smtp:// URLs, not {scheme}://; remove it "
            "(https and smtps use TLS from the first byte, http never does)",
            rule="profile-te-not-allowed",
        )
    elif te is None and smtp_fields:
        out.error(
            file,
            "transport_encryption",
            "required for smtp:// URLs: none, starttls-optional or starttls-required "
            "(or use smtps:// for TLS from the first byte)",
            rule="profile-te-missing",
        )


def _servers(
    parsed: _Parsed,
    kind: ProfileType | None,
    te: TransportEncryption | None,
    one: bool,
    file: str,
    policy: PolicySection,
    out: Findings,
) -> list[Server]:
    """The profile's servers, normalised (default ports and path), each once; `one`: the `url`
    form, whose messages need not name the server."""
    if kind is None:
        return []
    servers: list[Server] = []
    seen: dict[tuple[str, int], str] = {}
    for field, scheme, location in parsed:
        if scheme is None or location is None:
            continue
        host, port, path = location
        if port is None:
            port = _default_port(kind, scheme)
            if kind == "core":
                shown = _address(scheme, host, port, path)
                out.warning(
                    file,
                    field,
                    f"no port given: {shown} uses the gateway's Core default port "
                    f"{CORE_DEFAULT_PORT}; write the port (:443 for HTTPS on its usual port) "
                    "if the server listens elsewhere",
                    rule="profile-core-port",
                )
        if kind == "vault" and not path:
            path = VAULT_DEFAULT_PATH
        address = _address(scheme, host, port, path)
        if (host, port) in seen:
            out.error(
                file,
                field,
                f"{address}: the same server as {seen[host, port]}",
                rule="profile-servers",
            )
            continue
        seen[host, port] = field
        tls = _server_tls(scheme, te, file, field, "" if one else f" ({address})", policy, out)
        if tls is not None:
            servers.append(Server(scheme, host, port, path, tls))
    return servers


def _profile_type(
    model: ProfileFile,
    parsed: _Parsed,
    file: str,
    out: Findings,
) -> ProfileType | None:
    """The profile's service type: as given, checked against every server's scheme, or implied."""
    schemes = [(field, scheme) for field, scheme, _ in parsed if scheme is not None]
    if model.type is not None:
        wanted = _TYPE_SCHEMES[model.type]
        for field, scheme in schemes:
            if scheme not in wanted:
                out.error(
                    file,
                    field,
                    f"{scheme}:// is not a {model.type} server: {model.type} profiles use "
                    + " or ".join(f"{w}://" for w in wanted),
                    rule="profile-type",
                )
        return model.type
    implied = {"smtp" if scheme in ("smtp", "smtps") else "core" for _, scheme in schemes}
    if len(implied) > 1:
        out.error(
            file,
            "servers",
            "mixes SMTP (smtp://, smtps://) and HTTP (http://, https://) servers: a profile "
            "holds servers of one type",
            rule="profile-type",
        )
        return None
    if not implied:
        return None
    return "smtp" if implied == {"smtp"} else "core"


def _check_credential_refs(
    model: ProfileFile, kind: ProfileType | None, file: str, out: Findings
) -> None:
    """Where a credential file may be named; its content is judged by `check_credential`."""
    for field, owner in CREDENTIAL_FIELDS.items():
        path = getattr(model, field)
        if path is None:
            continue
        if kind is not None and owner != kind:
            out.error(
                file,
                field,
                f"only allowed on {owner} profiles, not on a {kind} profile",
                rule="credential-ref",
            )
        elif CONTROL_CHARS.search(path):
            out.error(file, field, "contains a control character", rule="credential-ref")
        elif (problem := path_problem(path)) is not None:
            # The identity's rule: a kubelet `..TIMESTAMP` directory goes at the next update.
            out.error(file, field, problem, rule="credential-ref")
        elif not path.startswith("/"):
            out.error(
                file,
                field,
                "must be an absolute path inside one of key_dirs (a mounted secret); a "
                "credential never lives in the desired state",
                rule="credential-ref",
            )


MAX_CREDENTIAL_BYTES = 4096
"""A password or API key file larger than this is an error (a mistake, not a credential)."""


def check_credential(
    field: str, source: str, data: SecretBytes, *, file: str
) -> tuple[Credential | None, list[Finding]]:
    """A credential file's content (already read from key_dirs): not empty, not over the limit.

    Findings name the profile file and the field, never the value.
    """
    out = Findings()
    value = data.reveal()
    if not value.strip():
        out.error(file, field, f"{source}: the credential file is empty", rule="credential-file")
    elif len(value) > MAX_CREDENTIAL_BYTES:
        out.error(
            file,
            field,
            f"{source}: {len(value)} bytes: over the {MAX_CREDENTIAL_BYTES}-byte limit for a "
            "credential",
            rule="credential-file",
        )
    if out.has_error:
        return None, out.items
    assert field in ("password_file", "api_key_file")
    return Credential(field, source, data), out.items  # type: ignore[arg-type]


def _default_port(kind: ProfileType, scheme: Scheme) -> int:
    if kind == "vault":
        return VAULT_DEFAULT_PORT
    return DEFAULT_PORTS[scheme]


def _address(scheme: str, host: str, port: int, path: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}{path}"


def _server_tls(
    scheme: Scheme,
    te: TransportEncryption | None,
    file: str,
    field: str,
    server: str,
    policy: PolicySection,
    out: Findings,
) -> ProfileTls | None:
    """One server's `tls`, recording its clear-text findings; `server` names it in the full form."""
    clear: Literal["error", "warning"] = "error" if policy.require_tls_outbound else "warning"
    why_error = " (policy.require_tls_outbound is true)" if policy.require_tls_outbound else ""
    if scheme != "smtp":
        if scheme == "http":
            out.add(
                clear,
                file,
                field,
                f"http:// is clear text{why_error}; use https://{server}",
                rule="profile-cleartext",
            )
            return "none"
        return "implicit"
    if te is None:
        return None  # reported once for the profile
    if te == "none":
        out.add(
            clear,
            file,
            "transport_encryption",
            f"none sends mail in clear text{why_error}; use smtps:// or starttls-required{server}",
            rule="profile-cleartext",
        )
        return te
    if te == "starttls-optional":
        out.add(
            clear,
            file,
            "transport_encryption",
            "starttls-optional falls back to clear text when the server does not offer "
            f"STARTTLS (or an attacker strips it){why_error}; use starttls-required{server}",
            rule="profile-cleartext",
        )
    out.warning(
        file,
        field,
        "smtps (implicit TLS) is preferred over STARTTLS; "
        f"use smtps://HOST:465 if the server supports it{server}",
        rule="profile-starttls",
    )
    return te
