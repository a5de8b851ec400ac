"""One build in this source tree at a time, across the suite's worker processes.

`make image` (its `pip wheel .`) and `python -m build` write setuptools' build/ and egg-info in
the source tree: two at once trip over each other (one's `rm -rf build/image-wheel-new` removed
the other's fresh wheel). The tests that build share an xdist group, yet the scheduler has been
seen running them on both workers, each with its own session fixtures; a lock makes that safe.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from tests.helpers import REPO

LOCK = REPO / "build" / ".tree-build.lock"


@contextmanager
def building_in_the_tree() -> Iterator[None]:
    """Held while a build writes in the source tree; another worker's build waits for it."""
    LOCK.parent.mkdir(exist_ok=True)
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # blocks: the other build takes minutes at most
        yield
    finally:
        os.close(fd)
