"""A pass's progress on a terminal: one line on stderr, rewritten in place, then cleared.

Only for a person watching: `apply` uses it when stderr is a terminal and the log format is
console. The line shows the step the pass is in and how long the pass has taken, refreshed a few
times a second by a thread of its own, so a long step (thousands of files swapped, a slow hook)
is never silence.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

__all__ = ["TerminalProgress"]

#: How often the elapsed time on the line is refreshed.
TICK_S = 0.2


class TerminalProgress:
    """`reconcile.Progress` drawn on a terminal; `close` clears the line."""

    def __init__(self) -> None:
        # Whatever else is written to stderr meanwhile (a log line, a warning) goes through
        # `_Around`, which clears the progress line first and draws it again below.
        self._stream: TextIO = sys.stderr
        sys.stderr = _Around(self, self._stream)
        self._started = time.monotonic()
        self._step = "starting"
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="progress", daemon=True)
        self._thread.start()

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._started

    def step(self, what: str) -> None:
        with self._lock:
            self._step = what
        self._draw()

    def close(self) -> None:
        """Stop refreshing and clear the line (the summary takes its place)."""
        self._stop.set()
        self._thread.join(timeout=2)
        with self._lock:
            sys.stderr = self._stream
            self._stream.write("\r\x1b[K")
            self._stream.flush()

    def write_around(self, text: str) -> int:
        """`text` on its own lines, the progress line cleared before it and drawn again after."""
        with self._lock:
            self._stream.write("\r\x1b[K" + text)
            if text.endswith("\n"):
                self._draw()
            return len(text)

    def _tick(self) -> None:
        while not self._stop.wait(TICK_S):
            self._draw()

    def _draw(self) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            line = f"reconciler: {self.elapsed_s:5.1f} s  {self._step} ..."
            self._stream.write(f"\r\x1b[K{line}")
            self._stream.flush()


class _Around:
    """stderr while the progress line is shown: writes go around it."""

    def __init__(self, progress: TerminalProgress, stream: TextIO) -> None:
        self._progress = progress
        self._stream = stream

    def write(self, text: str) -> int:
        return self._progress.write_around(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()
