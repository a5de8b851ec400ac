"""What the kernel counts for this process and what OpenSSL's own tools say, for tests that must
show work not done (a file not read) or a store OpenSSL really uses."""

from __future__ import annotations

import subprocess
from pathlib import Path


def read_calls() -> int:
    """read(2) calls this process has made so far (/proc/self/io `syscr`)."""
    with open("/proc/self/io") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("syscr:"))


def capath_verifies(capath: Path, cert: Path) -> subprocess.CompletedProcess[str]:
    """`openssl verify -CApath DIR CERT`: whether OpenSSL finds the issuer through the links."""
    return subprocess.run(
        ["openssl", "verify", "-CApath", str(capath), str(cert)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
