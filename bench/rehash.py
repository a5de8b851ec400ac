"""A stand-in for `openssl rehash DIR` in the scale benchmarks: the same links, made incrementally.

The directory trust store proves a refresh worked by finding the `HASH.N` link of every entry a
pass wrote, so a plain no-op (`true`) would fail every pass that changes a trust entry. This
script makes the links `openssl rehash` would (named by the OpenSSL subject hash, computed by
reconciler.core.subject_hash), but only for files that are new or replaced since its last run: it
keeps NAME, inode and link in TRUST_DIR/.bench-rehash.state. A one-entry change costs one
directory listing and one link, where `openssl rehash` re-reads every certificate (seconds
at 10,000 entries): that is the OS tool's cost, not reconciler's, and is reported apart.

It links only files holding exactly one certificate, as rehash does. Usage:
python -S bench/rehash.py TRUST_DIR [PREFIX]
"""

from __future__ import annotations

import binascii
import marshal
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reconciler.core.subject_hash import subject_hash  # after the path is set

# Kept to builtins and the one module above (marshal, not json; no re): the interpreter starts
# for every refresh, and each stdlib import would be a few more milliseconds of every pass.
STATE = ".bench-rehash.state"
_BEGIN = b"-----BEGIN CERTIFICATE-----"
_END = b"-----END CERTIFICATE-----"


def rehash(directory: str, prefix: str) -> None:
    state_path = os.path.join(directory, STATE)
    try:
        with open(state_path, "rb") as handle:
            # loads of the whole file: marshal.load on the file reads it in tiny pieces (much
            # slower). Our own file, in a directory only root writes: no untrusted input.
            known: dict[str, tuple[int, str]] = marshal.loads(handle.read())  # noqa: S302
    except FileNotFoundError:
        known = {}
    managed = {
        entry.name: entry.inode()
        for entry in os.scandir(directory)
        if entry.name.startswith(prefix) and entry.name.endswith(".crt")
    }
    changed = False
    for name, (inode, link) in list(known.items()):
        if managed.get(name) != inode:
            if link:
                _unlink(os.path.join(directory, link))
            del known[name]
            changed = True
    for name in sorted(managed.keys() - known.keys()):
        known[name] = (managed[name], _link_for(directory, name))
        changed = True
    if changed:
        temporary = state_path + ".tmp"
        with open(temporary, "wb") as handle:
            handle.write(marshal.dumps(known))
        os.replace(temporary, state_path)


def _link_for(directory: str, name: str) -> str:
    """Link `name` by its subject hash; "" when it holds no single certificate (rehash skips)."""
    with open(os.path.join(directory, name), "rb") as handle:
        data = handle.read()
    if data.count(_BEGIN) != 1:
        return ""
    start = data.index(_BEGIN) + len(_BEGIN)
    end = data.find(_END, start)
    if end < 0:
        return ""
    try:
        name_hash = subject_hash(binascii.a2b_base64(data[start:end]))
    except ValueError:
        return ""  # a certificate OpenSSL could not read either: rehash skips it too
    counter = 0
    while True:  # the next free collision counter, as rehash numbers them
        link = f"{name_hash}.{counter}"
        try:
            os.symlink(name, os.path.join(directory, link))
        except FileExistsError:
            counter += 1
            continue
        return link


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


if __name__ == "__main__":
    rehash(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "reconciler-")
