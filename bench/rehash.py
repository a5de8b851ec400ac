"""A stand-in for `openssl rehash DIR` in the scale benchmarks: the same links, made incrementally.

The directory trust store proves a refresh worked by finding the `HASH.N` link of every entry a
pass wrote, so a plain no-op (`true`) would fail every pass that changes a trust entry. This
script makes the links `openssl rehash` would (named by the OpenSSL subject hash, computed by
reconciler.core.subject_hash), but only for files that are new or replaced since its last run: it
keeps NAME, inode and link in TRUST_DIR/.bench-rehash.state. A one-entry change costs one
directory listing and one link, where `openssl rehash` re-reads every certificate (about 2.6 s
for 10,000 entries here): that is the OS tool's cost, not reconciler's, and is reported apart.

It links only files holding exactly one certificate, as rehash does. Usage:
python -S bench/rehash.py TRUST_DIR [PREFIX]
"""

from __future__ import annotations

import binascii
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reconciler.core.subject_hash import subject_hash  # after the path is set

# Kept to builtins and the one module above (no re, no json): the interpreter starts for every
# refresh, and each stdlib import would be a few more milliseconds of every pass measured.
STATE = ".bench-rehash.state"
_BEGIN = b"-----BEGIN CERTIFICATE-----"
_END = b"-----END CERTIFICATE-----"
_HEX = frozenset("0123456789abcdef")


def rehash(directory: str, prefix: str) -> None:
    state_path = os.path.join(directory, STATE)
    known: dict[str, tuple[int, str]] = {}
    try:
        with open(state_path, encoding="utf-8") as handle:
            for line in handle:
                name, inode, link = line.rstrip("\n").split("\t")
                known[name] = (int(inode), link)
    except FileNotFoundError:
        pass
    managed: dict[str, int] = {}
    links: set[str] = set()
    for entry in os.scandir(directory):
        name = entry.name
        if _is_link_name(name):
            links.add(name)
        elif name.startswith(prefix) and name.endswith(".crt"):
            managed[name] = entry.inode()
    changed = False
    for name, (inode, link) in list(known.items()):
        if managed.get(name) != inode:
            if link:
                _unlink(os.path.join(directory, link))
                links.discard(link)
            del known[name]
            changed = True
    for name in sorted(managed.keys() - known.keys()):
        known[name] = (managed[name], _link_for(directory, name, links))
        changed = True
    if changed:
        temporary = state_path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.writelines(f"{name}\t{inode}\t{link}\n" for name, (inode, link) in known.items())
        os.replace(temporary, state_path)


def _is_link_name(name: str) -> bool:
    """HASH.N as rehash names its links: 8 lowercase hex digits, a dot, a decimal counter."""
    return len(name) > 9 and name[8] == "." and name[9:].isdigit() and _HEX.issuperset(name[:8])


def _link_for(directory: str, name: str, links: set[str]) -> str:
    """Link `name` by its subject hash; "" when it holds no single certificate (rehash skips)."""
    with open(os.path.join(directory, name), "rb") as handle:
        data = handle.read()
    if data.count(_BEGIN) != 1:
        return ""
    start = data.index(_BEGIN) + len(_BEGIN)
    end = data.find(_END, start)
    if end < 0:
        return ""
    name_hash = subject_hash(binascii.a2b_base64(data[start:end]))
    counter = 0
    while f"{name_hash}.{counter}" in links:
        counter += 1
    link = f"{name_hash}.{counter}"
    os.symlink(name, os.path.join(directory, link))
    links.add(link)
    return link


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


if __name__ == "__main__":
    rehash(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "reconciler-")
