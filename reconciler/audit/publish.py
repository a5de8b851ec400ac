"""Publishing the chain's head off the box: the `audit.head` log event, an observer, a witness.

A head published where an attacker on the gateway cannot rewrite it pins the log up to that record
(`reconciler.audit.witness`). `HeadPublisher` publishes one three ways: the operational log event
``audit.head`` (journald and remote logging keep it), a callback (the daemon's metrics), and,
when one is configured, a witness command that reads ``SEQ HASH`` and a newline on stdin.

The witness command is bounded (`reconciler.support.process.run_bounded`: its own process group,
killed at its timeout) and can never fail what it publishes: a failure is counted (``on_failure``),
logged once per distinct failure (``audit.witness_failed``; ``audit.witness_recovered`` when it
works again) and not retried: the next head is witnessed in its place, and since each head covers
every record before it, nothing is lost but the time in between.

`publish` runs the witness at once and waits for it (a command such as `reconciler apply` that is
about to exit); `submit` hands it to a thread of its own, so a slow witness never delays the
daemon's loop. Heads submitted while the witness runs are not queued: only the newest one is
witnessed next.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from reconciler.audit.witness import Head
from reconciler.support.logging import Logger, get_logger
from reconciler.support.process import Completed, run_bounded


def _failure(done: Completed) -> str | None:
    """Why a witness run failed, in words that stay the same from one head to the next."""
    if done.error is not None:
        return done.error
    if done.exit_code != 0:
        return f"exited {done.exit_code}"
    return None


class HeadPublisher:
    """Publishes heads: the log event and `on_head` at once, the witness command when asked."""

    def __init__(
        self,
        witness: Sequence[str] | None = None,
        timeout_s: float = 5.0,
        *,
        on_head: Callable[[Head], None] | None = None,
        on_failure: Callable[[], None] | None = None,
        logger: Logger | None = None,
    ) -> None:
        self._witness_argv = tuple(witness) if witness else ()
        self._timeout_s = timeout_s
        self._on_head = on_head
        self._on_failure = on_failure
        self._log = logger if logger is not None else get_logger("reconciler.audit")
        self._running = threading.Lock()
        """Held while a witness command runs: one at a time."""
        self._failing: str | None = None
        """The failure last reported, until the witness works again."""
        self._cond = threading.Condition()
        self._pending: Head | None = None
        self._closing = False
        self._thread: threading.Thread | None = None

    def configure(self, witness: Sequence[str] | None, timeout_s: float) -> None:
        """Another witness command and timeout (a settings reload), from the next run on."""
        with self._cond:
            self._witness_argv = tuple(witness) if witness else ()
            self._timeout_s = timeout_s

    def publish(self, head: Head) -> None:
        """Announce `head` and witness it here; returns once the witness exited or was killed."""
        self._announce(head)
        self._run_witness(head)

    def submit(self, head: Head) -> None:
        """Announce `head` now and witness it on the publisher's thread; never waits for it."""
        self._announce(head)
        with self._cond:
            if not self._witness_argv or self._closing:
                return
            self._pending = head
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="audit-witness", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the thread once it witnessed the last head submitted: waits for a running
        witness and then that head, each bounded by the timeout, so that none is left behind."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread, wait_s = self._thread, 2 * self._timeout_s + 1
        if thread is not None:
            thread.join(timeout=wait_s)

    def _announce(self, head: Head) -> None:
        self._log.info("audit.head", seq=head.seq, hash=head.hash)
        if self._on_head is not None:
            self._on_head(head)

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closing:
                    self._cond.wait()
                head, self._pending = self._pending, None
            if head is None:
                return
            self._run_witness(head)

    def _run_witness(self, head: Head) -> None:
        with self._cond:
            argv, timeout_s = self._witness_argv, self._timeout_s
        if not argv:
            return
        with self._running:
            done = run_bounded(argv, env={}, timeout_s=timeout_s, stdin=head.line().encode())
            failure = _failure(done)
            if failure is None:
                if self._failing is not None:
                    self._log.info("audit.witness_recovered", seq=head.seq, after=self._failing)
                    self._failing = None
                return
            if self._on_failure is not None:
                self._on_failure()
            first = failure != self._failing
            self._failing = failure
        self._log.log(
            "warning" if first else "debug",
            "audit.witness_failed",
            seq=head.seq,
            witness=argv[0],
            reason=failure,
            output_tail=done.output_tail,
            retry="with the next head",
        )
