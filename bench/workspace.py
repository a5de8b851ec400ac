"""A sandboxed gateway for one benchmark: STATE as a Kubernetes volume, ROOT, var, trust, settings.

STATE is laid out the way the kubelet writes a ConfigMap/Secret volume: each version in its own
`..TIMESTAMP` directory, `..data` a link to the current one, and top-level links through
`..data`. A new version is published the kubelet's way (new directory, `..data_tmp` link, rename
over `..data`); the rename is the instant every latency is measured from.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import TRASH

HOOK_SCRIPT = """\
#!/bin/sh
# Benchmark hook: its first act is to write the time; the log file is its one argument.
exec date +%s%N >> "$1"
"""

GATEWAY = """\
[identity]
cert = "tls/cert.pem"
key = "tls/key.pem"

[console]
https = true
tls_policy = "{policy}"

[smtp_inbound]
tls = "optional"
"""

ALL_KINDS = '["identity", "console", "smtp_inbound", "trust", "profiles"]'


def gateway_toml(policy: str = "intermediate") -> bytes:
    return GATEWAY.format(policy=policy).encode()


def profile_toml(number: int, port: int = 465) -> bytes:
    return f'url = "smtps://relay{number}.example.com:{port}"\n'.encode()


class K8sVolume:
    """A desired-state directory published version by version, like a ConfigMap volume."""

    def __init__(self, path: Path, staging: Path) -> None:
        self.path = path
        self.staging = staging
        self.current: Path | None = None
        self.files: dict[str, bytes] = {}
        self._serial = 0

    def publish(self, files: dict[str, bytes]) -> tuple[int, Path | None]:
        """Make `files` the volume's content; (time_ns just before the `..data` rename, old dir).

        Files equal to the current version are hard-linked rather than rewritten (the result
        is the same; it keeps preparing a 10,000-file version quick). The new directory is built
        outside STATE and moved in whole, so the daemon sees one event for it, not thousands.
        """
        self._serial += 1
        name = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{self._serial:06d}"
        self.path.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(dir=self.path if os.environ.get("INSIDE") else self.staging))
        for rel, data in files.items():
            target = build / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if self.current is not None and self.files.get(rel) == data:
                os.link(self.current / rel, target)
            else:
                target.write_bytes(data)
        self.path.mkdir(parents=True, exist_ok=True)
        os.rename(build, self.path / name)
        tmp_link = self.path / "..data_tmp"
        os.symlink(name, tmp_link)
        started = time.time_ns()
        os.rename(tmp_link, self.path / "..data")
        for top in sorted({rel.split("/")[0] for rel in files}):
            link = self.path / top
            if not link.is_symlink():
                os.symlink(f"..data/{top}", link)
        old, self.current, self.files = self.current, self.path / name, dict(files)
        return started, old

    @staticmethod
    def retire(old: Path | None) -> None:
        """Delete a version the `..data` link no longer names, as kubelet does right after the
        swap. Never move it out of the volume instead: a rename out of a watched directory is an
        IN_MOVED_FROM without its pair, which watchdog holds back for half a second, and every
        event after it waits in the same queue (the next swap's included)."""
        if old is not None:
            shutil.rmtree(old)


@dataclass
class Workspace:
    """One gateway sandbox under a fresh temporary directory; `cleanup()` removes it all."""

    base: Path
    quiet_period_ms: int = 200
    max_wait_ms: int = 2000
    extra: str = ""
    volume: K8sVolume = field(init=False)

    def __post_init__(self) -> None:
        for directory in (self.root / "data", self.root / "nginx", self.trust_dir, self.staging):
            directory.mkdir(parents=True, exist_ok=True)
        self.hook.write_text(HOOK_SCRIPT)
        self.hook.chmod(0o755)
        self.volume = K8sVolume(self.state, self.staging)

    @classmethod
    def create(cls, tag: str, **kwargs: object) -> Workspace:
        base = Path(tempfile.mkdtemp(prefix=f"reconciler-bench-{tag}-"))
        return cls(base, **kwargs)  # type: ignore[arg-type]

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def staging(self) -> Path:
        return self.base / "staging"

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def var(self) -> Path:
        return self.base / "var"

    @property
    def trust_dir(self) -> Path:
        return self.base / "trust"

    @property
    def config(self) -> Path:
        return self.base / "reconciler.toml"

    @property
    def hook(self) -> Path:
        return self.base / "hook.sh"

    @property
    def hook_log(self) -> Path:
        return self.base / "hook.log"

    @property
    def audit(self) -> Path:
        return self.var / "audit.jsonl"

    def write_config(self) -> Path:
        """Settings for this sandbox. The trust store is the directory backend with its own
        refresh (no `trust_refresh`), as an operator sets it up."""
        self.config.write_text(
            textwrap.dedent(
                f"""\
                state_dir = "{self.state}"
                root = "{self.root}"
                var_dir = "{self.var}"
                trust_store = "directory"
                trust_dir = "{self.trust_dir}"
                nginx_ssl_on = false
                log_format = "json"
                quiet_period_ms = {self.quiet_period_ms}
                max_wait_ms = {self.max_wait_ms}
                {self.extra}

                [[hooks]]
                name = "bench"
                on = {ALL_KINDS}
                run = ["{self.hook}", "{self.hook_log}"]
                timeout_s = 30
                """
            )
        )
        return self.config

    def env(self) -> dict[str, str]:
        env = {**os.environ, "RECONCILER_CONFIG": str(self.config)}
        env.pop("RECONCILER_TEST_CRASH_AT", None)
        env.pop("RECONCILER_TEST_FAULT", None)
        return env

    def reset_targets(self) -> None:
        """An empty ROOT, var dir and trust dir again (for a cold first pass). The old ones are
        moved aside, not deleted: see `bench.harness.Trash`."""
        for directory in (self.root, self.var, self.trust_dir):
            TRASH.discard(directory)
        for directory in (self.root / "data", self.root / "nginx", self.trust_dir):
            directory.mkdir(parents=True)

    def cleanup(self) -> None:
        TRASH.discard(self.base)
