"""Measuring kit shared by every benchmark: statistics, progress lines, processes, waiting.

Nothing here knows about reconciler's internals: benchmarks drive the real command line and read
what the hook, /proc and the files say, the way an operator would.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parent.parent


def tree() -> Path:
    """The source tree whose `reconciler` is measured: this one, or another (`--tree`)."""
    return Path(os.environ.get("BENCH_TREE") or REPO)


PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


Limited = Literal["median", "max", "ratio"]


class BenchError(Exception):
    """A benchmark could not measure what it set out to (a daemon that never converged...)."""


# -- figures -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stats:
    """A sample summarised: n, median, p90, min, max (in the sample's unit)."""

    n: int
    median: float
    p90: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        if not values:
            raise BenchError("no values measured")
        ordered = sorted(values)
        # Nearest-rank p90: with n < 10 it is the maximum, which is the honest answer.
        rank = max(0, min(len(ordered) - 1, -(-9 * len(ordered) // 10) - 1))
        return cls(len(ordered), statistics.median(ordered), ordered[rank], ordered[0], ordered[-1])

    def as_dict(self) -> dict[str, float | int]:
        return {
            "n": self.n,
            "median": round(self.median, 3),
            "p90": round(self.p90, 3),
            "min": round(self.min, 3),
            "max": round(self.max, 3),
        }


@dataclass(slots=True)
class Figure:
    """One row of the results table."""

    bench: str
    name: str
    unit: str
    stats: Stats
    baseline: Stats | None = None
    baseline_name: str | None = None
    target: str | None = None
    met: bool | None = None
    note: str = ""
    samples: tuple[float, ...] = ()
    """The values `stats` summarises (pooled across the turns of a `--compare` run)."""
    baseline_samples: tuple[float, ...] = ()
    limit: float | None = None
    """The target as a number: the most `limit_of` may be."""
    limit_of: Limited = "median"

    def check(self) -> None:
        """Set `met` (and a default `target` text) from `limit`."""
        if self.limit is None:
            return
        value = {"median": self.stats.median, "max": self.stats.max, "ratio": self.ratio}
        found = value[self.limit_of]
        self.met = found is not None and found <= self.limit
        if self.target is None:
            suffix = {"median": "", "max": " (every run)", "ratio": "x baseline"}
            self.target = f"<= {self.limit:g}{suffix[self.limit_of]}"

    @property
    def key(self) -> tuple[str, str]:
        return self.bench, self.name

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline.median == 0:
            return None
        return self.stats.median / self.baseline.median

    def as_dict(self) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "name": self.name,
            "unit": self.unit,
            **self.stats.as_dict(),
            "baseline": self.baseline.as_dict() if self.baseline else None,
            "baseline_name": self.baseline_name,
            "ratio": round(self.ratio, 3) if self.ratio is not None else None,
            "target": self.target,
            "met": self.met,
            "note": self.note,
            "samples": [round(value, 6) for value in self.samples],
        }


def figure(
    bench: str,
    name: str,
    unit: str,
    values: Sequence[float],
    *,
    baseline: Sequence[float] = (),
    baseline_name: str | None = None,
    at_most: float | None = None,
    of: Limited | None = None,
    target: str | None = None,
    note: str = "",
) -> Figure:
    """A figure from its raw values. `at_most`: a target for `of`: the median, the maximum or
    the ratio of the medians to the baseline's (the default with a baseline); `target`: how the
    table words it."""
    made = Figure(
        bench,
        name,
        unit,
        Stats.of(values),
        Stats.of(baseline) if baseline else None,
        baseline_name,
        target,
        note=note,
        samples=tuple(values),
        baseline_samples=tuple(baseline),
        limit=at_most,
        limit_of=of or ("ratio" if baseline else "median"),
    )
    made.check()
    return made


def merged(figures: Sequence[Figure]) -> list[Figure]:
    """Figures of the same bench and name (measured in several turns) as one, their samples
    pooled and the target checked on the pool; the order of first appearance is kept."""
    pooled: dict[tuple[str, str], list[Figure]] = {}
    for one in figures:
        pooled.setdefault(one.key, []).append(one)
    result = []
    for group in pooled.values():
        first = group[0]
        if len(group) == 1 or not all(f.samples for f in group):
            result.append(group[-1])
            continue
        values = [v for f in group for v in f.samples]
        baseline = [v for f in group for v in f.baseline_samples]
        result.append(
            figure(
                first.bench,
                first.name,
                first.unit,
                values,
                baseline=baseline,
                baseline_name=first.baseline_name,
                at_most=first.limit,
                of=first.limit_of,
                target=first.target,
                note=first.note,
            )
        )
    return result


@dataclass(slots=True)
class Report:
    """Everything one `python -m bench` run measured."""

    quick: bool
    figures: list[Figure] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def add(self, one: Figure) -> Figure:
        self.figures.append(one)
        progress(f"  {format_row(one)}")
        return one


def format_row(figure: Figure) -> str:
    s = figure.stats
    text = (
        f"{figure.bench}: {figure.name}: median {s.median:.3f} {figure.unit} "
        f"(n={s.n}, p90 {s.p90:.3f}, min {s.min:.3f}, max {s.max:.3f})"
    )
    if figure.baseline is not None:
        text += f"; baseline {figure.baseline.median:.3f}"
        if figure.ratio is not None:
            text += f", ratio {figure.ratio:.2f}x"
    if figure.target:
        text += f"; target {figure.target}: {'met' if figure.met else 'NOT met'}"
    return text


_STARTED = time.monotonic()


# -- deferred deletion -------------------------------------------------------------------------


class Trash:
    """Directories a benchmark is done with, moved aside at once and deleted when the run ends.

    Deleting a directory of thousands of files leaves the file system deferred work (ext4 frees
    the inodes and blocks in the background), and the next burst of creates pays for it: a cold
    pass timed right after such a deletion measured the disk's housekeeping, not the pass. A
    rename costs nothing; the deletion waits until nothing is being timed.
    """

    def __init__(self) -> None:
        self._dir: Path | None = None
        self._count = 0

    def discard(self, path: Path) -> None:
        """Move `path` out of the way now (deleted by `empty`); gone at once if it cannot move."""
        if not os.path.lexists(path):
            return
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="reconciler-bench-trash-"))
        self._count += 1
        try:
            os.rename(path, self._dir / str(self._count))
        except OSError:  # another file system: nothing to gain by waiting
            shutil.rmtree(path, ignore_errors=True)

    def empty(self) -> None:
        """Delete everything discarded so far: when the run ends, as nothing is timed then."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


TRASH = Trash()
atexit.register(TRASH.empty)


def progress(message: str) -> None:
    """One line on stderr, with the seconds since the run started."""
    print(f"[bench {time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


# -- waiting -------------------------------------------------------------------------------------


def wait_for(
    condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.002
) -> Any:
    """Poll `condition` until it returns something truthy; BenchError after `timeout_s`.

    Polling is fine here: the benchmark's own checks run between measured windows, and a short
    interval keeps the poller's wake-ups from blurring the figures it waits for.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def hook_times(path: Path) -> list[int]:
    """The nanosecond timestamps the hook wrote, one per run."""
    return [int(line.split()[0]) for line in read_lines(path) if line.strip()]


# -- processes -----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as handle:
        stat = handle.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    """VmRSS of a process, in MB (10^6 bytes)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    raise BenchError(f"process {pid} has no VmRSS (a zombie?)")


def wait_idle(pid: int, window_s: float, timeout_s: float) -> None:
    """Wait until the process used no CPU for `window_s` (its debounce and settle are over)."""
    deadline = time.monotonic() + timeout_s
    last = cpu_seconds(pid)
    since = time.monotonic()
    while time.monotonic() - since < window_s:
        if time.monotonic() > deadline:
            raise BenchError(f"process {pid} did not go idle within {timeout_s:g} s")
        time.sleep(0.05)
        now = cpu_seconds(pid)
        if now != last:
            last, since = now, time.monotonic()


def timed_run(
    argv: Sequence[str], env: dict[str, str] | None = None, timeout_s: float | None = None
) -> tuple[float, float, int]:
    """Run a command to its end: (wall seconds, child CPU seconds, exit code); TimeoutExpired
    after `timeout_s`."""
    before = os.times()
    started = time.perf_counter()
    proc = subprocess.run(
        list(argv),
        env=env,
        cwd=tree(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        timeout=timeout_s,
    )
    wall = time.perf_counter() - started
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu, proc.returncode


class NotifySocket:
    """A systemd-style NOTIFY_SOCKET, drained by a thread: tells when the daemon says READY=1.

    Drained continuously because a datagram socket nobody reads fills after a few messages
    (net.unix.max_dgram_qlen), and then the daemon's next STATUS= send blocks, as it would
    under a systemd that stopped reading.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return  # closed
            if not data:
                return  # shut down (systemd never sends an empty message)
            message = data.decode("utf-8", "replace")
            self.messages.append(message)
            if "READY=1" in message:
                self.ready.set()

    def wait_ready(self, timeout_s: float) -> bool:
        """True once READY=1 arrived; False if nothing said so within `timeout_s`."""
        return self.ready.wait(timeout_s)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


@dataclass
class Daemon:
    """A running `reconciler run`, its log file and notify socket."""

    proc: subprocess.Popen[bytes]
    log: Path
    notify: NotifySocket
    started: float

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        return "\n".join(read_lines(self.log)[-lines:])


def start_daemon(config: Path, workdir: Path, name: str = "daemon") -> Daemon:
    """Start `python -m reconciler run` with RECONCILER_CONFIG=config; output to a log file."""
    log = workdir / f"{name}.log"
    notify = NotifySocket(workdir / f"{name}.notify")
    env = {**os.environ, "RECONCILER_CONFIG": str(config), "NOTIFY_SOCKET": str(notify.path)}
    env.pop("RECONCILER_TEST_CRASH_AT", None)
    env.pop("RECONCILER_TEST_FAULT", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PYTHON, "-m", "reconciler", "run"],
            cwd=tree(),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Daemon(proc, log, notify, time.perf_counter())


def wait_converged(daemon: Daemon, var_dir: Path, timeout_s: float) -> float:
    """Wait for the daemon's first pass to end; seconds from start. READY=1, else status.json."""
    if daemon.notify.wait_ready(min(timeout_s, 5.0)):
        return time.perf_counter() - daemon.started
    status = var_dir / "status.json"

    def done() -> bool:
        if not daemon.alive():
            raise BenchError(f"the daemon exited {daemon.proc.returncode}:\n{daemon.tail()}")
        if daemon.notify.wait_ready(0.01):
            return True
        with contextlib.suppress(FileNotFoundError):
            return status.stat().st_mtime_ns / 1e9 > time.time() - (
                time.perf_counter() - daemon.started
            )
        return False

    wait_for(done, timeout_s, "the daemon's first pass", interval_s=0.02)
    return time.perf_counter() - daemon.started


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 30) -> int | None:
    """SIGTERM the process's group (it was started in its own session), then wait."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait()
    return proc.returncode


@contextlib.contextmanager
def running_daemon(config: Path, workdir: Path, name: str = "daemon") -> Iterator[Daemon]:
    daemon = start_daemon(config, workdir, name)
    try:
        yield daemon
    finally:
        stop(daemon.proc)
        daemon.notify.close()
