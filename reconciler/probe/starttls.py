"""The SMTP side of a probe: banner, EHLO and STARTTLS, bounded in time and in reply size."""

from __future__ import annotations

import contextlib
import socket
import time

# SMTP replies are short; a server that sends more is broken or hostile, not worth reading.
_MAX_REPLY_LINE = 4096
_MAX_REPLY_LINES = 100
# What a server said is quoted in a message at most this long (outputs scrub it: it is raw).
_MAX_QUOTED = 200


class NoStartTlsError(Exception):
    """The SMTP server does not offer or refuses STARTTLS."""


class SmtpProtocolError(Exception):
    """The server does not speak SMTP as expected."""


class Deadline:
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


def starttls_dialog(sock: socket.socket, deadline: Deadline, phase: list[str]) -> None:
    """Banner, EHLO, STARTTLS; returns when the server is ready for the TLS handshake."""
    reader = _ReplyReader(sock, deadline)
    phase[0] = "SMTP banner"
    code, lines = reader.reply()
    if code != 220:
        raise SmtpProtocolError(f"server greeted with {code} {_said(lines)}".rstrip())
    phase[0] = "EHLO"
    sock.settimeout(deadline.remaining())
    sock.sendall(b"EHLO " + _address_literal(sock).encode("ascii") + b"\r\n")
    code, lines = reader.reply()
    if code != 250:
        send_quit(sock)
        raise NoStartTlsError(f"server does not offer STARTTLS (EHLO answered {code})")
    if not any(line.split(" ", 1)[0].upper() == "STARTTLS" for line in lines[1:]):
        send_quit(sock)
        raise NoStartTlsError("server does not offer STARTTLS")
    phase[0] = "STARTTLS"
    sock.settimeout(deadline.remaining())
    sock.sendall(b"STARTTLS\r\n")
    code, lines = reader.reply()
    if code != 220:
        send_quit(sock)
        raise NoStartTlsError(f"server refused STARTTLS: {code} {_said(lines)}".rstrip())
    if reader.buffered:
        # Clear text after the 220 would be read as if it came over TLS (STARTTLS injection).
        raise SmtpProtocolError("server sent data after its STARTTLS reply")


class _ReplyReader:
    """Reads SMTP replies (multi-line: `250-...` until `250 ...`) within the deadline."""

    __slots__ = ("_buffer", "_deadline", "_sock")

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
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
                raise SmtpProtocolError(f"not an SMTP reply: {line[:80]!r}")
            texts.append(line[4:])
            if line[3:4] != "-":
                return int(line[:3]), texts
        raise SmtpProtocolError(f"reply longer than {_MAX_REPLY_LINES} lines")

    def _line(self) -> str:
        while b"\n" not in self._buffer:
            if len(self._buffer) > _MAX_REPLY_LINE:
                raise SmtpProtocolError(f"reply line longer than {_MAX_REPLY_LINE} bytes")
            self._sock.settimeout(self._deadline.remaining())
            chunk = self._sock.recv(4096)
            if not chunk:
                raise SmtpProtocolError("server closed the connection")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.rstrip(b"\r").decode("utf-8", "replace")


def _said(lines: list[str]) -> str:
    """A reply's text as a message quotes it: bounded; the outputs escape what it holds."""
    text = " ".join(lines)
    return text if len(text) <= _MAX_QUOTED else text[: _MAX_QUOTED - 3] + "..."


def send_quit(sock: socket.socket) -> None:
    """Say goodbye without waiting for the answer: the server logs a clean end, nothing more."""
    # OSError: a server that already hung up needs no QUIT.
    with contextlib.suppress(OSError):
        sock.sendall(b"QUIT\r\n")


def _address_literal(sock: socket.socket) -> str:
    # RFC 5321 allows an address literal for EHLO; it needs no DNS and is always true.
    address = sock.getsockname()[0]
    return f"[IPv6:{address}]" if ":" in address else f"[{address}]"
