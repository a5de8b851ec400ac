"""Path values of the desired state, refused before any file is opened when they are unsafe."""

from __future__ import annotations

import re

from reconciler.core.secret import looks_like_key

CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
"""A control character: never in a path the desired state names."""
_KUBELET_DIR = re.compile(r"\.\.[^./][^/]*")


def path_problem(path: str) -> str | None:
    """Why a path value in the desired state is refused before any file is opened, or None.

    The reason never quotes the value (a pasted key lands here): control characters (a NUL
    cannot be in a file name), PEM text instead of a path, and a component naming a kubelet
    `..NAME` directory (those come and go with every update; use the visible name, which links
    through `..data`)."""
    if looks_like_key(path):
        return "holds PEM text, not a path (give the path to the key file); value not shown"
    if CONTROL_CHARS.search(path):
        return "must not contain control characters (NUL, newline, ...)"
    if len(path) > 4096:
        return f"{len(path)} characters: at most 4096"
    for part in path.split("/"):
        if part != "..data" and _KUBELET_DIR.fullmatch(part):
            return (
                f"points into the kubelet directory {part!r}, which is replaced at every update: "
                "name the file through the volume's visible links"
            )
    return None
