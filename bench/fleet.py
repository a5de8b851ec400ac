"""`python -m bench.fleet --gateways 50`: a fleet on this machine, watched by a real Prometheus.

N `reconciler run` daemons, each with its own ROOT, var dir, trust dir and metrics port on
127.0.0.1, all following one fleet repository (`fleet.toml`, `common/`, `gateways/gwNNN/`)
through a git-sync-style checkout: every push is a commit in the origin repository, then a new
detached `git worktree` under `.worktrees/`, a relative link renamed over `current`, the old
worktree removed. Debian's `prometheus` runs with its own config and data dir on a loopback port,
scrapes every daemon each second and evaluates deploy/prometheus/reconciler.rules.yml.

Measured (figures to stdout and bench/results/fleet.json):

* push -> all N converged, as Prometheus sees it: from the link swap until
  `count(reconciler_applied_revision_info{revision="<commit>"}) == N` (p50, max over pushes);
* the idle fleet: the daemons' summed CPU over a window (as % of one core) at a 15 s scrape
  interval (a production one) and at 1 s, and their RSS;
* a bad push seen as alerts: seconds until ReconcilerPushRejected is pending, then firing, for
  every gateway; then a good push converges them again.

With `--check-queries FILE...` (a Grafana dashboard's JSON, or a page with ```promql blocks) the
daemons also run a hook and probe their profiles (servers on 127.0.0.1 where nothing listens),
and after the pushes every query of those files must return series (bench/queries.py).

Every process it starts is in its own session and is stopped in `finally` (SIGTERM, then SIGKILL);
every wait has a deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from bench.harness import (
    PYTHON,
    REPO,
    BenchError,
    Figure,
    Report,
    Stats,
    cpu_seconds,
    progress,
    rss_mb,
    tree,
    wait_for,
)

RULES = REPO / "deploy" / "prometheus" / "reconciler.rules.yml"
DEFAULT_JSON = REPO / "bench" / "results" / "fleet.json"
#: inotify instances one daemon holds (one per watch: STATE, its parent, the repository link's
#: parent, the shared layer and its parent, three target directories, the var dir), with room.
INOTIFY_PER_DAEMON = 12

GATEWAY_TOML = """\
[identity]
cert = "tls/cert.pem"
key = "tls/key.pem"
"""

SHARED_TOML = """\
[console]
https = true
tls_policy = "intermediate"

[smtp_inbound]
tls = "optional"

[policy]
min_days_valid = 7
"""


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports nobody listened on a moment ago (all held open together,
    so that no two are the same)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.org", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if done.returncode != 0:
        raise BenchError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


# -- the fleet repository and its git-sync checkout ----------------------------------------------


class Origin:
    """The fleet's git repository: where pushes land."""

    def __init__(self, path: Path, gateways: int) -> None:
        from bench.pki import identities

        self.path = path
        self.names = [f"gw{n:03d}" for n in range(gateways)]
        path.mkdir(parents=True)
        git(path, "init", "-q", "-b", "main")
        (path / "fleet.toml").write_text('shared = ["common"]\n')
        shared = path / "common"
        for sub in ("trust", "profiles"):
            (shared / sub).mkdir(parents=True)
        (shared / "gateway.toml").write_text(SHARED_TOML)
        ids = identities(gateways)
        (shared / "trust" / "bench-ca.pem").write_bytes(ids[0].ca_pem)
        # Loopback addresses: a probing daemon (--check-queries) connects to them, and to
        # nothing else; nothing listens there, so each probe ends at once as unreachable.
        for number, port in enumerate(free_ports(3)):
            (shared / "profiles" / f"relay{number}.toml").write_text(
                f'url = "smtps://127.0.0.1:{port}"\n'
            )
        for name, files in zip(self.names, ids, strict=True):
            tls = path / "gateways" / name / "tls"
            tls.mkdir(parents=True)
            (tls.parent / "gateway.toml").write_text(GATEWAY_TOML)
            (tls / "cert.pem").write_bytes(files.cert_pem)
            (tls / "key.pem").write_bytes(files.key_pem)
        self.serial = 0
        [self.core_port] = free_ports(1)

    def commit(self, message: str) -> str:
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "-m", message)
        return git(self.path, "rev-parse", "HEAD")

    def push_good(self) -> str:
        """A change every gateway applies: the shared core profile's port."""
        self.serial += 1
        profile = self.path / "common" / "profiles" / "core.toml"
        profile.write_text(f'url = "https://127.0.0.1:{self.core_port}/api/{self.serial}"\n')
        return self.commit(f"core profile, path /api/{self.serial}")

    def push_bad(self) -> str:
        """A change every gateway rejects: an smtp:// profile without transport_encryption."""
        (self.path / "common" / "profiles" / "broken.toml").write_text(
            'url = "smtp://mx.example.org"\n'
        )
        return self.commit("a profile without transport_encryption")

    def fix_bad(self) -> str:
        (self.path / "common" / "profiles" / "broken.toml").unlink()
        return self.commit("remove the broken profile")


class GitSync:
    """git-sync v4's layout: ROOT/.git (a clone), ROOT/.worktrees/HASH, ROOT/current -> link."""

    def __init__(self, root: Path, origin: Path) -> None:
        self.root = root
        git(root.parent, "clone", "-q", "--no-checkout", str(origin), str(root))
        self.link = root / "current"
        self.current: Path | None = None

    def sync(self) -> float:
        """Fetch, check the new commit out in a new worktree, swap the link, remove the old one;
        returns the time.time() of the swap (the instant the daemons can see the push)."""
        git(self.root, "fetch", "-q", "origin", "main")
        commit = git(self.root, "rev-parse", "FETCH_HEAD")
        worktree = self.root / ".worktrees" / commit
        git(self.root, "worktree", "add", "-q", "--detach", str(worktree), commit)
        temporary = self.root / "current.tmp"
        os.symlink(os.path.relpath(worktree, self.root), temporary)
        os.rename(temporary, self.link)
        swapped = time.time()
        old, self.current = self.current, worktree
        if old is not None and old != worktree:
            git(self.root, "worktree", "remove", "--force", str(old))
        return swapped


# -- the daemons and Prometheus ------------------------------------------------------------------


@dataclass
class Gateway:
    name: str
    base: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def config(self, state: Path, *, observed: bool = False) -> Path:
        """The settings; `observed`: also a hook, and a probe at start (then every 10 minutes,
        so that the idle daemons settle), so that every series a dashboard shows exists."""
        for sub in ("root/data", "root/nginx", "trust", "var"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        path = self.base / "reconciler.toml"
        extra = (
            'probe_interval_s = 600\n\n[[hooks]]\nname = "bench"\n'
            'on = ["identity", "console", "smtp_inbound", "trust", "profiles"]\nrun = ["true"]\n'
            if observed
            else ""
        )
        path.write_text(
            f'state_dir = "{state}"\n'
            f'root = "{self.base / "root"}"\n'
            f'var_dir = "{self.base / "var"}"\n'
            'trust_store = "directory"\n'
            f'trust_dir = "{self.base / "trust"}"\n'
            "nginx_ssl_on = false\n"
            'log_format = "json"\n'
            f'metrics_address = "127.0.0.1:{self.port}"\n' + extra
        )
        return path


@dataclass
class Fleet:
    """Everything started, so that `close` can stop it whatever happened."""

    work: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spawn(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> Any:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                cwd=tree(),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


class Prometheus:
    """Debian's prometheus with its own config, data dir and loopback port."""

    def __init__(self, fleet: Fleet, port: int, targets: list[str], binary: str) -> None:
        self.dir = fleet.work / "prometheus"
        self.dir.mkdir()
        self.port = port
        self.config = self.dir / "prometheus.yml"
        self.targets = targets
        self.write_config(1)
        shutil.copy(RULES, self.dir / RULES.name)
        argv = [
            binary,
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]
        self.proc = fleet.spawn(argv, self.dir / "prometheus.log")
        wait_for(self._ready, 60, "prometheus to be ready", interval_s=0.2)

    def write_config(self, scrape_s: int) -> None:
        targets = json.dumps(self.targets)
        self.config.write_text(
            f"global:\n  scrape_interval: {scrape_s}s\n  scrape_timeout: {min(scrape_s, 5)}s\n"
            "  evaluation_interval: 1s\n"
            f"rule_files:\n  - {RULES.name}\n"
            "scrape_configs:\n"
            "  - job_name: reconciler\n"
            f"    static_configs:\n      - targets: {targets}\n"
        )

    def reload(self, scrape_s: int) -> None:
        self.write_config(scrape_s)
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310 (our own loopback)
            pass

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            log = (self.dir / "prometheus.log").read_text(errors="replace")[-2000:]
            raise BenchError(f"prometheus exited {self.proc.returncode}:\n{log}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:  # noqa: S310
                return bool(r.status == 200)
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
            body = json.loads(response.read())
        if body.get("status") != "success":
            raise BenchError(f"query {expr!r}: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def scalar(self, expr: str) -> float:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else 0.0


# -- the measurements ----------------------------------------------------------------------------


def converged(prom: Prometheus, commit: str, count: int, timeout_s: float) -> float:
    """Seconds (time.time()) at which Prometheus first sees all `count` on `commit`."""
    expr = f'count(reconciler_applied_revision_info{{revision="{commit}"}})'
    wait_for(lambda: prom.scalar(expr) >= count, timeout_s, f"{count} on {commit[:12]}", 0.1)
    return time.time()


def alerts(prom: Prometheus, name: str, state: str) -> float:
    return prom.scalar(f'count(ALERTS{{alertname="{name}",alertstate="{state}"}})')


def idle_cpu(pids: list[int], window_s: float) -> float:
    """The daemons' summed CPU over `window_s`, as % of one core."""
    before = {pid: cpu_seconds(pid) for pid in pids}
    started = time.monotonic()
    time.sleep(window_s)
    elapsed = time.monotonic() - started
    used = sum(cpu_seconds(pid) - before[pid] for pid in pids)
    return 100 * used / elapsed


def run(args: argparse.Namespace, work: Path, report: Report) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        raise BenchError("prometheus is not installed (apt-get install prometheus)")
    needed = args.gateways * INOTIFY_PER_DAEMON
    limit = int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())
    if limit < needed:
        raise BenchError(
            f"fs.inotify.max_user_instances is {limit}; {args.gateways} daemons need about "
            f"{needed}: sysctl -w fs.inotify.max_user_instances={max(needed, 1024)}"
        )
    fleet = Fleet(work)
    try:
        progress(f"fleet: {args.gateways} gateways, identities and the repository")
        origin = Origin(work / "origin", args.gateways)
        first = origin.commit("the fleet")
        sync = GitSync(work / "git-sync", origin.path)
        sync.sync()
        *ports, prom_port = free_ports(len(origin.names) + 1)
        gateways = [
            Gateway(n, work / "gw" / n, port) for n, port in zip(origin.names, ports, strict=True)
        ]
        prom = Prometheus(fleet, prom_port, [f"127.0.0.1:{g.port}" for g in gateways], binary)
        progress(f"fleet: prometheus on 127.0.0.1:{prom.port}; starting {len(gateways)} daemons")
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
        started = time.time()
        for gw in gateways:
            config = gw.config(sync.link / "gateways" / gw.name, observed=bool(args.check_queries))
            gw.proc = fleet.spawn(
                [PYTHON, "-m", "reconciler", "run"],
                gw.base / "daemon.log",
                {**env, "RECONCILER_CONFIG": str(config)},
            )
        start_s = converged(prom, first, len(gateways), args.timeout) - started
        progress(f"fleet: all {len(gateways)} converged on the first commit in {start_s:.1f} s")
        report.facts["start_all_converged_s"] = round(start_s, 2)
        pids = [gw.proc.pid for gw in gateways if gw.proc is not None]
        settle(pids)

        latencies = []
        for number in range(args.pushes):
            commit = origin.push_good()
            swapped = sync.sync()
            seen = converged(prom, commit, len(gateways), args.timeout)
            latencies.append(seen - swapped)
            progress(f"fleet: push {number + 1}: all converged {seen - swapped:.2f} s after it")
            settle(pids)
        report.add(
            Figure(
                "fleet", f"push -> all {len(gateways)} converged, seen by PromQL", "s",
                Stats.of(latencies), target="p50 < 5 s", met=Stats.of(latencies).median < 5,
                note="from the git-sync link swap to count(applied_revision_info) == N; 1 s "
                "scrape and rule interval",
            )
        )  # fmt: skip

        if args.check_queries:
            check_queries(prom, args.check_queries, args.timeout, report)

        prom.reload(15)
        settle(pids)
        cpu_15 = [idle_cpu(pids, args.idle_s) for _ in range(args.idle_runs)]
        report.add(
            Figure(
                "fleet", f"idle CPU of {len(gateways)} daemons, 15 s scrapes", "% of one core",
                Stats.of(cpu_15), target="< 1 %", met=Stats.of(cpu_15).median < 1,
                note=f"summed over the daemons, {args.idle_s:g} s windows",
            )
        )  # fmt: skip
        prom.reload(1)
        settle(pids)
        cpu_1 = [idle_cpu(pids, args.idle_s) for _ in range(args.idle_runs)]
        report.add(
            Figure(
                "fleet", f"idle CPU of {len(gateways)} daemons, 1 s scrapes", "% of one core",
                Stats.of(cpu_1), note="each daemon renders /metrics once a second",
            )
        )  # fmt: skip
        rss = [rss_mb(pid) for pid in pids]
        report.add(Figure("fleet", "RSS per idle daemon", "MB", Stats.of(rss)))
        report.facts["rss_total_mb"] = round(sum(rss), 1)

        if args.bad_push:
            bad_push(args, origin, sync, prom, report, len(gateways))
        dead = [gw.name for gw in gateways if gw.proc is not None and gw.proc.poll() is not None]
        if dead:
            raise BenchError(f"daemons exited during the run: {dead}")
    finally:
        fleet.close()


def check_queries(prom: Prometheus, files: list[Path], timeout_s: float, report: Report) -> None:
    """Every query of `files` returns series from the fleet (bench/queries.py)."""
    from bench import queries

    found = [q for path in files for q in queries.queries_from(path)]
    if not found:
        raise BenchError(f"no queries in {', '.join(map(str, files))}")
    counts = queries.check(prom.query, found, timeout_s)
    progress(f"fleet: {len(counts)} queries, each returned series")
    report.facts["queries_checked"] = counts


def bad_push(
    args: argparse.Namespace,
    origin: Origin,
    sync: GitSync,
    prom: Prometheus,
    report: Report,
    want: int,
) -> None:
    """A push every gateway rejects, seen as alerts; then the fix converges them again."""
    progress("fleet: a bad push (every gateway rejects it)")
    bad = origin.push_bad()
    swapped = sync.sync()
    expr = f'count(reconciler_desired_revision_info{{revision="{bad}"}})'
    wait_for(lambda: prom.scalar(expr) >= want, args.timeout, "the bad push read", 0.1)
    seen_s = time.time() - swapped
    name = "ReconcilerPushRejected"
    wait_for(lambda: alerts(prom, name, "pending") >= want, args.timeout, "pending", 0.2)
    pending_s = time.time() - swapped
    wait_for(lambda: alerts(prom, name, "firing") >= want, 180, f"{name} firing", 0.2)
    firing_s = time.time() - swapped
    applied_old = prom.scalar(f'count(reconciler_applied_revision_info{{revision="{bad}"}})')
    progress(
        f"fleet: bad push read by all after {seen_s:.2f} s, {name} pending for all after "
        f"{pending_s:.2f} s, firing after {firing_s:.2f} s (rule: for 1m)"
    )
    report.facts["bad_push"] = {
        "all_read_s": round(seen_s, 2),
        "alert": name,
        "all_pending_s": round(pending_s, 2),
        "all_firing_s": round(firing_s, 2),
        "gateways_that_applied_it": applied_old,
    }
    fixed = origin.fix_bad()
    swapped = sync.sync()
    back = converged(prom, fixed, want, args.timeout) - swapped
    wait_for(lambda: alerts(prom, name, "firing") == 0, 60, "the alert to resolve", 0.2)
    report.facts["fix_all_converged_s"] = round(back, 2)
    progress(f"fleet: the fix converged on all in {back:.2f} s; the alert resolved")


def settle(pids: list[int], quiet_s: float = 2.0, timeout_s: float = 60) -> None:
    """Wait until the daemons are done with their passes: under 0.4 % of a core each (plus 1 %)
    for `quiet_s`. (Serving a scrape a second costs an idle daemon about a fifth of that.)"""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if idle_cpu(pids, quiet_s) < 1 + 0.4 * len(pids):
            return
    progress("fleet: the daemons did not settle; measuring anyway")


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="reconciler-fleet-"))
    try:
        yield path
    finally:
        if keep:
            progress(f"fleet: kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__)
    parser.add_argument("--gateways", type=int, default=50)
    parser.add_argument("--pushes", type=int, default=5)
    parser.add_argument("--idle-s", type=float, default=30.0, help="one idle CPU window")
    parser.add_argument("--idle-runs", type=int, default=3, help="idle windows per figure")
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline of each wait")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--check-queries",
        type=Path,
        nargs="+",
        default=[],
        metavar="FILE",
        help="a Grafana dashboard (.json) or docs page (```promql): each query must return series",
    )
    parser.add_argument(
        "--no-bad-push",
        dest="bad_push",
        action="store_false",
        help="skip the bad push (its alert needs a minute to fire)",
    )
    args = parser.parse_args(argv)
    if args.gateways < 1 or args.pushes < 1 or args.idle_runs < 1:
        parser.error("--gateways, --pushes and --idle-runs must be at least 1")

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # through every `finally`: nothing is left running

    signal.signal(signal.SIGTERM, interrupted)
    report = Report(quick=False)
    try:
        with workdir(args.keep) as work:
            run(args, work, report)
    except BenchError as exc:
        print(f"bench.fleet: {exc}", file=sys.stderr)
        return 1
    data = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "gateways": args.gateways,
        "pushes": args.pushes,
        "figures": [f.as_dict() for f in report.figures],
        "facts": report.facts,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(data, indent=2) + "\n")
    for figure in report.figures:
        s = figure.stats
        target = f"  target {figure.target}: {'met' if figure.met else 'NOT met'}"
        print(
            f"{figure.name} [{figure.unit}]: p50 {s.median:.3f}, max {s.max:.3f}, n={s.n}"
            + (target if figure.target else "")
        )
    for key, value in report.facts.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
