"""`python -m bench.boundary [--compare TREE]`: what the output boundary costs per audit record.

A pass's records leave the process twice, as an audit record and as a log line, and the
boundary sits on both. This measures that path alone: `reconcile.events.Recorder` records each
event into an audit log that keeps the records in memory (their fields made by
`reconciler.audit.record.event_fields`, no file, no fsync) and logs it through the JSON pipeline
to a stream that discards, with one RSA identity key and CREDENTIALS credentials remembered, as a
daemon has them.

Two kinds of records: a trust entry's `change.applied` (a path, two digests, a certificate's
fields: what a cold pass writes thousands of) and a `hook.ran` whose 4 KiB output tail is read
from the command's output file as the hook runner reads it. Each
figure is the median of RUNS runs of RECORDS records, in microseconds per record. With
`--compare TREE` (another source tree, e.g. `git archive 77485fb | tar -x -C TREE`) both trees
are measured in the same run, taking turns, each in a process of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench.harness import REPO

RECORDS = 2000
RUNS = 7
CREDENTIALS = 100

# Runs in a child whose `reconciler` is the tree measured; it only uses what both have.
_MEASURE = r"""
import io, json, sys, tempfile, time
from datetime import UTC, datetime
from reconciler.audit.record import event_fields
from reconciler.core.desired import CertInfo
from reconciler.reconcile.events import ChangeApplied, HookRan, Recorder
from reconciler.support import devpki, redact
from reconciler.support.logging import configure_logging
from reconciler.support.process import output_tail

records, runs, credentials = (int(v) for v in sys.argv[1:4])


class Discard(io.TextIOBase):
    def write(self, text):
        return len(text)


stream = Discard()
if hasattr(redact, "ScrubbedStream"):  # the daemon's stderr was wrapped in the stream scrubber
    stream = redact.ScrubbedStream(stream)
configure_logging("json", stream)
sys.excepthook = sys.__excepthook__  # a failure here must reach stderr, not the discarded log
key = devpki.new_key("rsa2048")
from cryptography.hazmat.primitives import serialization

pem = key.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
values = [f"credential-{n:04d}-0123456789abcdef".encode() for n in range(credentials)]
if hasattr(redact, "in_use"):
    redact.in_use("state", keys=[pem], secrets=values)
else:
    redact.remember_key(pem)
    for value in values:
        redact.remember_secret(value)
now = datetime.now(UTC)


class MemoryAudit:
    # The audit log's record making without its file: what the boundary costs, not the disk.

    def __init__(self):
        self.seq = 0

    def append_many(self, entries):
        records = []
        for event, revision, fields in entries:
            self.seq += 1
            body = event_fields(event, revision, fields)
            records.append({"seq": self.seq, "event": event, "revision": revision, **body})
        return records


recorder = Recorder(MemoryAudit())
output = tempfile.TemporaryFile()
output.write(
    "".join(f"line {i}: restarted worker {i} in 12 ms, ok\n" for i in range(120)).encode()
)


def change(n):
    cert = CertInfo(
        subject=f"CN=Partner CA {n},O=Example Partners,C=DE",
        issuer=f"CN=Partner Root {n % 7},O=Example Partners,C=DE",
        serial=format(10**30 + n, "x"),
        not_before=now,
        not_after=now,
        sha256_fingerprint=format(n, "064x"),
        is_ca=True,
        self_signed=False,
    )
    return ChangeApplied(
        revision="sha256:" + "ab" * 32, kind="trust", action="create",
        path=f"/usr/local/share/ca-certificates/reconciler-partner-{n:05d}.crt",
        before_sha256=None, after_sha256=format(n * 7919, "064x"), certificate=cert,
    )


def hook(n):
    return lambda: HookRan(
        revision="sha256:" + "ab" * 32, hook="reload-console", step="run", phase="apply",
        exit_code=0, duration_ms=12, output_tail=output_tail(output), error=None,
    )


def per_record(events):
    started = time.perf_counter()
    for event in events:
        recorder.record(event() if callable(event) else event)
    return (time.perf_counter() - started) / len(events) * 1e6


result = {}
for name, make in (("change.applied", change), ("hook.ran", hook)):
    events = [make(n) for n in range(records if name == "change.applied" else records // 10)]
    per_record(events[:50])  # warm up
    result[name] = [per_record(events) for _ in range(runs)]
print(json.dumps(result))
"""


def measure(tree: Path, records: int, runs: int, credentials: int) -> dict[str, list[float]]:
    """Per-record microseconds of each kind of record, `runs` times, in `tree`'s reconciler."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYDANTIC_DISABLE_PLUGINS": "__all__"}
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(records), str(runs), str(credentials)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,
        check=False,
        timeout=600,
    )
    if done.returncode != 0:
        raise SystemExit(f"bench.boundary: measuring {tree} failed:\n{done.stderr[-2000:]}")
    result: dict[str, list[float]] = json.loads(done.stdout.splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.boundary", description=__doc__)
    parser.add_argument("--compare", type=Path, help="another source tree, measured alongside")
    parser.add_argument("--records", type=int, default=RECORDS)
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--credentials", type=int, default=CREDENTIALS)
    parser.add_argument("--rounds", type=int, default=3, help="turns each tree takes")
    args = parser.parse_args(argv)
    trees = {"this": REPO}
    if args.compare is not None:
        trees["compare"] = args.compare.resolve()
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            for kind, values in measure(tree, args.records, args.runs, args.credentials).items():
                samples[name].setdefault(kind, []).extend(values)
    print(f"boundary cost per record, us (median of {args.rounds * args.runs} runs)")
    for kind in samples["this"]:
        line = f"  {kind:<15} this {statistics.median(samples['this'][kind]):8.1f}"
        if "compare" in samples:
            other = statistics.median(samples["compare"][kind])
            ratio = other / statistics.median(samples["this"][kind])
            line += f"   compare {other:8.1f}   ({ratio:.1f}x)"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
