"""A server URL as a profile writes it: scheme, host (name, IPv4 or [IPv6]), port and path."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from reconciler.core.collect import Findings
from reconciler.core.desired import Scheme

_SCHEMES: dict[str, Scheme] = {"http": "http", "https": "https", "smtp": "smtp", "smtps": "smtps"}
_HOST_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")
_FORBIDDEN_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


def parse_url(
    url: str, file: str, out: Findings, field: str = "url"
) -> tuple[Scheme | None, tuple[str, int | None, str] | None]:
    """(scheme, (host, port or None when absent, path)); None for a part that is wrong, with the
    reasons recorded under `field`."""
    # urlsplit silently drops tabs/newlines and strips blanks; an operator's typo must not pass.
    if _FORBIDDEN_URL_CHARS.search(url):
        out.error(
            file, field, "contains a blank, control character or backslash", rule="profile-url"
        )
        return None, None
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        out.error(file, field, f"not a valid URL: {exc}", rule="profile-url")
        return None, None
    scheme = parts.scheme.lower()
    typed = _SCHEMES.get(scheme)
    if typed is None:
        shown = f"scheme {scheme!r}" if scheme else "no scheme"
        out.error(
            file,
            field,
            f"{shown} is not supported; write http://, https://, smtp:// or smtps:// "
            "followed by the host",
            rule="profile-url",
        )
        return None, None
    ok = True
    if "?" in url:
        out.error(file, field, "a query (?...) is not allowed", rule="profile-url")
        ok = False
    if "#" in url:
        out.error(file, field, "a fragment (#...) is not allowed", rule="profile-url")
        ok = False
    netloc = parts.netloc
    if "@" in netloc:
        # The user info may hold a password: say it is there, never what it is.
        out.error(
            file,
            field,
            "user info (user@ or user:password@) is not allowed; put no credentials",
            rule="profile-url",
        )
        return typed, None
    if not url[len(parts.scheme) + 1 :].startswith("//") or not netloc:
        out.error(file, field, f"no host: write {scheme}://HOST[:PORT]", rule="profile-url")
        return typed, None
    path = parts.path
    if path and scheme in ("smtp", "smtps"):
        out.error(
            file, field, f"a path ({path!r}) is not allowed on {scheme}:// URLs", rule="profile-url"
        )
        ok = False
    hostport = _split_host_port(netloc, scheme, file, out, field)
    if hostport is None or not ok:
        return typed, None
    host, port = hostport
    return typed, (host, port, path)


def _split_host_port(
    netloc: str, scheme: str, file: str, out: Findings, field: str
) -> tuple[str, int | None] | None:
    if netloc.startswith("["):
        split = _bracketed_host(netloc, file, out, field)
    else:
        split = _named_host(netloc, scheme, file, out, field)
    if split is None:
        return None
    host, port_text = split
    if port_text is None:
        return host.lower(), None
    if not port_text:
        out.error(
            file,
            field,
            "empty port after ':'; write HOST:PORT or leave the port out",
            rule="profile-url",
        )
        return None
    if not port_text.isascii() or not port_text.isdigit():
        out.error(file, field, f"port {port_text!r} is not a number", rule="profile-url")
        return None
    # Length first: int() of a huge digit string is slow and may raise.
    port = int(port_text) if len(port_text) <= 5 else 0
    if not 1 <= port <= 65535:
        out.error(file, field, f"port {port_text} is out of range 1-65535", rule="profile-url")
        return None
    return host.lower(), port


def _bracketed_host(
    netloc: str, file: str, out: Findings, field: str
) -> tuple[str, str | None] | None:
    """([IPv6] without brackets, the port text after `:` or None); None when it is no IPv6."""
    close = netloc.find("]")
    if close < 0:
        out.error(
            file,
            field,
            "an IPv6 address opened with [ is not closed with ]",
            rule="profile-url",
        )
        return None
    host, rest = netloc[1:close].lower(), netloc[close + 1 :]
    if "%" in host:
        out.error(
            file,
            field,
            f"[{host}] has a zone (%...): write the IPv6 address without it (a zone is "
            "local to one host's interfaces)",
            rule="profile-url",
        )
        return None
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        out.error(file, field, f"[{host}] is not an IPv6 address", rule="profile-url")
        return None
    if rest and not rest.startswith(":"):
        out.error(
            file,
            field,
            "unexpected text after the IPv6 address; write [ADDRESS]:PORT",
            rule="profile-url",
        )
        return None
    return host, rest[1:] if rest else None


def _named_host(
    netloc: str, scheme: str, file: str, out: Findings, field: str
) -> tuple[str, str | None] | None:
    """(host name or IPv4 address, the port text after `:` or None); None when it is neither."""
    host, sep, port_text_raw = netloc.partition(":")
    port_text = port_text_raw if sep else None
    if ":" in port_text_raw:
        out.error(
            file,
            field,
            "an IPv6 address must be in brackets: [ADDRESS]:PORT",
            rule="profile-url",
        )
        return None
    host = host.lower()
    if not host:
        out.error(file, field, f"no host: write {scheme}://HOST[:PORT]", rule="profile-url")
        return None
    if not _HOSTNAME.fullmatch(host):
        out.error(
            file,
            field,
            f"host {host!r} is not a valid host name or IPv4 address "
            "(international names in their xn-- form)",
            rule="profile-url",
        )
        return None
    # A name whose last label is a number is meant as an IPv4 literal (no top-level domain
    # is numeric): it must then be one, four numbers 0-255 (999.999.999.999 is neither).
    if host.rstrip(".").rpartition(".")[2].isdigit() and not _is_ipv4(host):
        out.error(
            file,
            field,
            f"host {host!r} is not a valid IPv4 address: four numbers from 0 to 255, "
            "separated by dots",
            rule="profile-url",
        )
        return None
    return host, port_text


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True
