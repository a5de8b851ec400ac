"""A stand-in for `openssl rehash DIR` in the scale benchmarks: links without parsing certificates.

The directory trust store proves a refresh worked by reading the `HASH.N` links it finds, so a
plain no-op (`true`) would fail every pass that changes a trust entry. This script makes one link
per managed file, incrementally (a one-entry change costs one link), named by a counter rather
than the subject hash: OpenSSL could not look certificates up by these names, which the
benchmarks never ask it to. `openssl rehash` itself takes about 2.6 s for 10,000 entries here;
that is the OS tool's cost, not reconciler's, and is reported separately.

Usage: python bench/rehash.py TRUST_DIR [PREFIX]
"""

from __future__ import annotations

import os
import re
import sys

_LINK = re.compile(r"^[0-9a-f]{8}\.[0-9]+$")


def rehash(directory: str, prefix: str) -> None:
    links: dict[str, str] = {}
    managed: set[str] = set()
    for entry in os.scandir(directory):
        if _LINK.match(entry.name) and entry.is_symlink():
            links[os.readlink(entry.path)] = entry.name
        elif entry.name.startswith(prefix) and entry.name.endswith(".crt"):
            managed.add(entry.name)
    for target, link in list(links.items()):
        if target not in managed:
            os.unlink(os.path.join(directory, link))
            del links[target]
    used = set(links.values())
    counter = 0
    for name in sorted(managed - links.keys()):
        while f"{counter:08x}.0" in used:
            counter += 1
        link = f"{counter:08x}.0"
        os.symlink(name, os.path.join(directory, link))
        used.add(link)


if __name__ == "__main__":
    rehash(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "reconciler-")
