"""certbot's live directory as a key dir: its links into the same tree's archive are followed.

certbot keeps each certificate lineage NAME of its configuration directory (`/etc/letsencrypt`)
as numbered files in `archive/NAME/` (`cert3.pem`, `chain3.pem`, `fullchain3.pem`,
`privkey3.pem`; a `privkeyN.pem` may itself link to an earlier one of the same directory) and
points `live/NAME/{cert,chain,fullchain,privkey}.pem` at the current version with relative links
(`../../archive/NAME/cert3.pem`). A renewal writes the next numbered files, then relinks: it
makes `live/NAME/previous_KIND.pem` links to the current targets, replaces the four links one by
one (unlink, then symlink), and removes the `previous_` links last; after a crash in between,
certbot's next run restores the links from them.

So a file of a key dir whose real path leaves the key dir is read only when the directory
holding it is a lineage's `live/NAME` and its real path is inside that lineage's
`archive/NAME`, itself no link (another lineage, another tree, anything else: refused). While a
lineage's `previous_` links exist, it is being relinked and its four files may belong to two
versions: the read is in transit, and is retried.
"""

from __future__ import annotations

import os

from reconciler.source.links import SnapshotMovedError, inside

LIVE = "live"
ARCHIVE = "archive"
KINDS = ("cert", "chain", "fullchain", "privkey")


def archive_of(live_dir: str) -> str | None:
    """The archive directory of the lineage whose live directory is `live_dir` (a real path):
    `TREE/archive/NAME` for `TREE/live/NAME`, when it is a directory and no link; else None."""
    parent, name = os.path.split(live_dir)
    tree, live = os.path.split(parent)
    if live != LIVE or not name or name.startswith("."):
        return None
    archive = os.path.join(tree, ARCHIVE, name)
    if os.path.realpath(archive) != archive or not os.path.isdir(archive):
        return None
    return archive


def _relinking(live_dir: str) -> bool:
    return any(os.path.lexists(os.path.join(live_dir, f"previous_{k}.pem")) for k in KINDS)


class Lineages:
    """The certbot lineages one read went through, and the link of each file it read there."""

    def __init__(self) -> None:
        self._links: dict[str, tuple[str, str | None]] = {}
        """path as named -> (its live directory, the link's text when read, None if no link)."""

    def archive_for(self, path: str, key_dir: str) -> str | None:
        """The archive that `path` (named in `key_dir`, a real path) may lead into: its
        lineage's, when the directory holding it is a certbot live directory; else None.

        Raises SnapshotMovedError while certbot relinks that lineage."""
        live = os.path.realpath(os.path.dirname(os.path.abspath(path)))
        if not inside(live, key_dir):
            return None
        archive = archive_of(live)
        if archive is None:
            return None
        if _relinking(live):
            raise SnapshotMovedError(f"certbot is relinking {live}")
        self._links[path] = (live, _link_text(path))
        return archive

    def check_unchanged(self) -> None:
        """Raise SnapshotMovedError when a lineage read from was relinked since."""
        for path, (live, link) in self._links.items():
            if _link_text(path) != link or _relinking(live):
                raise SnapshotMovedError(f"certbot relinked {live} while it was read")


def _link_text(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None
