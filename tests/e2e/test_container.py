"""The container image, built with `make image` and run for real as the gateway's sidecar.

The image runs as Kubernetes would run it: systemd-nspawn on the image's mounted root file system
(podman cannot run containers on these machines), read-only, as the image's non-root user, with a
tmpfs on /tmp, the volumes bound in, and SIGTERM for a stop. The desired state and the TLS Secret
are kubelet-style volumes (tests.helpers.gitops.ConfigMapVolume: `..data` swapped by rename).

Where buildah or systemd-nspawn cannot run (not root, not installed) the tests skip, saying why;
RECONCILER_REQUIRE_BUILDAH=1 (set by .ci/run) turns that into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from reconciler.support import devpki
from tests.helpers import REPO
from tests.helpers.gitops import ConfigMapVolume
from tests.helpers.net import free_port, http_get
from tests.helpers.state import Pki
from tests.helpers.treebuild import building_in_the_tree
from tests.helpers.waiting import wait_for

REQUIRE_ENV = "RECONCILER_REQUIRE_BUILDAH"
IMAGE = "localhost/reconciler:dev"  # what `make image` builds
UID = 10001
SECRET = "/run/secrets/gateway-tls"
ROOT_DIRS = ("data", "nginx", "trust")
#: The image's size target on the Debian base (docs/kubernetes.md).
MAX_IMAGE_MB = 155

# The first test builds the image when no cached one is current (minutes on a cold machine).
# One worker with the packaging tests: both build this project's wheel in its source tree
# (setuptools' build/ and egg-info), and two such builds at once trip over each other.
pytestmark = [
    pytest.mark.xdist_group("packaging-build"),
    pytest.mark.slow,
    pytest.mark.timeout(1800),
]


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "building and running images here needs root"
    for tool in ("buildah", "systemd-nspawn", "mmdebstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


@pytest.fixture(scope="session")
def image() -> str:
    """`make image`, as the guide says: a warm rebuild reuses every cached layer."""
    missing = _missing()
    if missing is not None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{missing}, and {REQUIRE_ENV}=1 says the container tests must run")
        pytest.skip(f"{missing}; set {REQUIRE_ENV}=1 to make this a failure")
    with building_in_the_tree():
        done = subprocess.run(
            # -o: never rebuild the venv this suite is running from (an edited pyproject.toml
            # would).
            ["make", "-o", ".venv/bin/.installed", "image"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=1500,
            check=False,
        )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return IMAGE


@dataclass
class Mounted:
    """A working container of the image, its root file system mounted on the host."""

    name: str
    root: Path
    env: list[str]
    """The image's environment (ENV), which a runtime sets and nspawn does not read."""

    def nspawn(self, *options: str, command: list[str]) -> list[str]:
        """argv of systemd-nspawn running `command` as a container runtime would."""
        return [
            "systemd-nspawn",
            "--quiet",
            "--register=no",
            "--keep-unit",
            f"--machine={self.name}",
            f"--directory={self.root}",
            "--pipe",
            "--read-only",
            "--user=reconciler",
            "--tmpfs=/tmp:mode=1777",  # an emptyDir is world-writable too
            *(f"--setenv={entry}" for entry in self.env),
            "--timezone=off",
            "--resolv-conf=off",
            "--link-journal=no",
            "--kill-signal=SIGTERM",  # what nspawn gets (our stop) reaches the daemon, as kubelet's
            *options,
            "--",
            *command,
        ]


@pytest.fixture
def mounted(image: str) -> Iterator[Mounted]:
    name = f"reconciler-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["buildah", "from", "--quiet", "--name", name, image], capture_output=True, check=True
    )
    try:
        root = subprocess.run(
            ["buildah", "mount", name], capture_output=True, text=True, check=True
        ).stdout.strip()
        inspect = subprocess.run(
            ["buildah", "inspect", "--type", "image", image],
            capture_output=True,
            text=True,
            check=True,
        )
        env = json.loads(inspect.stdout)["OCIv1"]["config"]["Env"]
        yield Mounted(name, Path(root), env)
    finally:
        subprocess.run(["buildah", "umount", name], capture_output=True, check=False)
        subprocess.run(["buildah", "rm", name], capture_output=True, check=False)


# -- the image ----------------------------------------------------------------------------------


def test_image_runs_reconciler_as_a_non_root_user(image: str) -> None:
    inspect = subprocess.run(
        ["buildah", "inspect", "--type", "image", image], capture_output=True, text=True, check=True
    )
    config = json.loads(inspect.stdout)["OCIv1"]["config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["/opt/reconciler/venv/bin/reconciler"]
    assert config["Cmd"] == ["run"]
    listed = subprocess.run(
        ["buildah", "images", "--json", image], capture_output=True, text=True, check=True
    )
    size = json.loads(listed.stdout)[0]["size"]  # as buildah reports it: "149 MB" (SI units)
    number, unit = size.split()
    assert unit == "MB", size
    assert float(number) <= MAX_IMAGE_MB, f"{size}: over {MAX_IMAGE_MB} MB"


def test_root_file_system_is_read_only_and_the_user_not_root(mounted: Mounted) -> None:
    probe = textwrap.dedent(
        """\
        import os, subprocess
        print(os.getuid(), os.getgid())
        for path in ("/etc/probe", "/opt/reconciler/probe", "/var/lib/probe", "/tmp/probe"):
            try:
                open(path, "w").close()
                print(path, "written")
            except OSError as exc:
                print(path, exc.strerror)
        done = subprocess.run(["reconciler", "schema"], capture_output=True, text=True)
        print(done.returncode, done.stdout[:1])
        """
    )
    done = subprocess.run(
        mounted.nspawn(command=["/opt/reconciler/venv/bin/python", "-c", probe]),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    assert lines[0] == f"{UID} {UID}"
    assert lines[1:5] == [
        "/etc/probe Read-only file system",
        "/opt/reconciler/probe Read-only file system",
        "/var/lib/probe Read-only file system",
        "/tmp/probe written",
    ]
    assert lines[5] == "0 {", "the reconciler runs from the read-only image"


# -- the sidecar ----------------------------------------------------------------------------------

HOOK = (
    "import os; open('/var/lib/reconciler/hooks.log', 'a').write("
    "os.environ['RECONCILER_PHASE'] + ' ' + os.environ['RECONCILER_CHANGED'] + chr(10))"
)


def gateway_toml(policy: str = "intermediate") -> bytes:
    return textwrap.dedent(
        f"""\
        [identity]
        cert = "{SECRET}/tls.crt"
        key = "{SECRET}/tls.key"

        [console]
        https = true
        tls_policy = "{policy}"

        [smtp_inbound]
        tls = "optional"
        """
    ).encode()


@dataclass
class Sidecar:
    """The volumes of a pod, on the host, and the reconciler container bound to them."""

    base: Path
    mounted: Mounted
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        for path in (self.base / "state", self.base / "secret"):
            path.mkdir()
        self.state = ConfigMapVolume(self.base / "state")
        self.secret = ConfigMapVolume(self.base / "secret")
        self.root = self.base / "gateway-root"
        self.var = self.base / "var"
        self.settings = self.base / "settings"
        self.settings.mkdir()
        # The pod's shared volume: ROOT's three target directories, as subPath mounts (kubelet
        # creates each subPath directory in the volume).
        for path in (self.var, *(self.root / d for d in ROOT_DIRS)):
            path.mkdir(parents=True)
            os.chown(path, UID, UID)
        self.log = self.base / "sidecar.log"
        (self.settings / "reconciler.toml").write_text(
            textwrap.dedent(
                f"""\
                state_dir = "/etc/reconciler/desired-state"
                root = "/opt/gateway"
                var_dir = "/var/lib/reconciler"
                trust_store = "directory"
                trust_dir = "/opt/gateway/trust"
                key_dirs = ["{SECRET}"]
                nginx_ssl_on = false
                log_format = "json"
                metrics_address = "127.0.0.1:{self.port}"
                quiet_period_ms = 100

                [[hooks]]
                name = "record"
                on = ["identity", "console", "smtp_inbound", "trust", "profiles"]
                run = ["/opt/reconciler/venv/bin/python", "-c", "{HOOK}"]
                timeout_s = 30
                """
            )
        )

    def start(self) -> None:
        argv = self.mounted.nspawn(
            *(f"--bind={self.root / d}:/opt/gateway/{d}" for d in ROOT_DIRS),
            f"--bind={self.var}:/var/lib/reconciler",
            f"--bind-ro={self.state.root}:/etc/reconciler/desired-state",
            f"--bind-ro={self.secret.root}:{SECRET}",
            f"--bind-ro={self.settings}:/etc/reconciler/settings",
            "--setenv=RECONCILER_CONFIG=/etc/reconciler/settings/reconciler.toml",
            "--setenv=NOTIFY_SOCKET=",  # nspawn's; a pod has none
            command=["/opt/reconciler/venv/bin/reconciler", "run"],
        )
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"the container exited with {self.process.returncode}:\n{self.tail()}")
        try:
            return http_get(self.url("/readyz"))[0] == 200
        except OSError:
            return False

    def events(self, event: str, **match: object) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or record.get("event") != event:
                continue
            if all(record.get(k) == v for k, v in match.items()):
                found.append(record)
        return found

    def metric(self, name: str) -> float:
        for line in http_get(self.url("/metrics"))[1].splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"{name} not in /metrics")

    def hook_runs(self) -> list[str]:
        path = self.var / "hooks.log"
        return path.read_text().splitlines() if path.exists() else []

    def daemon_process(self) -> psutil.Process:
        assert self.process is not None
        for child in psutil.Process(self.process.pid).children(recursive=True):
            if "run" in child.cmdline() and any("reconciler" in w for w in child.cmdline()):
                return child
        raise AssertionError("no reconciler process under systemd-nspawn")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture
def sidecar(tmp_path: Path, mounted: Mounted) -> Iterator[Sidecar]:
    pod = Sidecar(tmp_path, mounted)
    yield pod
    if pod.process is not None and pod.process.poll() is None:
        pod.process.kill()
        pod.process.wait()


def _secret(pki: Pki, leaf: devpki.Issued) -> dict[str, bytes]:
    return {"tls.crt": pki.chain(leaf), "tls.key": leaf.key_pem, "ca.crt": pki.root.cert_pem}


def _memory_request_mib() -> float:
    deployment = yaml.safe_load(
        (REPO / "deploy/kubernetes/overlays/configmap/deployment.yaml").read_text()
    )
    containers = deployment["spec"]["template"]["spec"]["containers"]
    reconciler = next(c for c in containers if c["name"] == "reconciler")
    request = reconciler["resources"]["requests"]["memory"]
    assert request.endswith("Mi")
    return float(request[:-2])


def test_sidecar_follows_configmap_and_secret_and_keeps_serving_a_bad_push(
    sidecar: Sidecar, pki: Pki
) -> None:
    state = {
        "gateway.toml": gateway_toml(),
        "profiles/relay.toml": b'url = "smtps://relay.example.com"\n',
        "trust/partner-ca.pem": pki.other_ca.cert_pem,
    }
    sidecar.state.push(state)
    sidecar.secret.push(_secret(pki, pki.leaf))
    sidecar.start()
    detail = sidecar.tail

    # First apply, as the non-root user, in a read-only container.
    wait_for(sidecar.ready, "/readyz after the first pass", timeout=120, detail=detail)
    data = sidecar.root / "data"
    assert (data / "cert.pem").read_bytes() == pki.chain(pki.leaf)
    key = (data / "key.pem").stat()
    assert (key.st_uid, key.st_mode & 0o777) == (UID, 0o600)
    assert sidecar.daemon_process().uids().real == UID
    trust = sidecar.root / "trust"
    assert any(p.is_symlink() for p in trust.iterdir()), "openssl rehash ran in the image"
    assert sidecar.hook_runs()[0].startswith("apply ")
    runs = len(sidecar.hook_runs())

    # The idle daemon fits in what the manifests request for it.
    rss_mib = sidecar.daemon_process().memory_info().rss / 2**20
    assert rss_mib < _memory_request_mib(), f"idle RSS {rss_mib:.1f} MiB"

    # A ConfigMap update: a new tls_policy rewrites the console's ssl.conf; the hook runs.
    state["gateway.toml"] = gateway_toml("modern")
    sidecar.state.push(state)
    ssl_conf = sidecar.root / "nginx" / "ssl.conf"
    wait_for(
        lambda: "ssl_protocols TLSv1.3;" in ssl_conf.read_text(), "the modern policy", 60, detail
    )
    wait_for(lambda: len(sidecar.hook_runs()) > runs, "the hook after the update", 60, detail)
    assert "console" in sidecar.hook_runs()[-1]
    runs = len(sidecar.hook_runs())

    # A cert-manager renewal of the Secret: the new identity is applied, the hook runs.
    sidecar.secret.push(_secret(pki, pki.leaf2))
    wait_for(
        lambda: (data / "cert.pem").read_bytes() == pki.chain(pki.leaf2),
        "the renewed certificate",
        60,
        detail,
    )
    assert (data / "key.pem").read_bytes() == pki.leaf2.key_pem
    wait_for(lambda: len(sidecar.hook_runs()) > runs, "the hook after the renewal", 60, detail)
    assert sidecar.hook_runs()[-1].split() == ["apply", "identity"]

    # A bad push: rejected, the last good configuration stays and the pod stays ready.
    before = {p: p.read_bytes() for p in sorted(sidecar.root.rglob("*")) if p.is_file()}
    state["gateway.toml"] = b"[nonsense]\n"
    sidecar.state.push(state)
    wait_for(lambda: sidecar.events("pass.finished", outcome="rejected"), "the rejection", 60)
    after = {p: p.read_bytes() for p in sorted(sidecar.root.rglob("*")) if p.is_file()}
    assert after == before
    assert sidecar.ready()
    assert sidecar.metric("reconciler_ready") == 1.0
    assert sidecar.metric("reconciler_last_pass_ok") == 0.0
    assert sidecar.metric("reconciler_rejected_states_total") == 1.0

    assert sidecar.stop() == 0, detail()
    assert sidecar.events("daemon.stopped")


def test_sidecar_is_not_ready_until_a_first_state_is_verified(sidecar: Sidecar, pki: Pki) -> None:
    sidecar.state.push({"gateway.toml": b"[nonsense]\n"})
    sidecar.secret.push(_secret(pki, pki.leaf))
    sidecar.start()
    wait_for(
        lambda: sidecar.events("pass.finished", outcome="rejected"), "the rejection", 120,
        sidecar.tail,
    )  # fmt: skip
    code, body = http_get(sidecar.url("/readyz"))
    assert code == 503
    assert body.startswith("no verified configuration in place yet")
    assert http_get(sidecar.url("/healthz"))[0] == 200, "alive all the same: no restart loop"
    assert sidecar.stop() == 0
