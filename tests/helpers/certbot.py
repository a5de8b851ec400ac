"""certbot's own lineage code, run offline: issue a certificate into a lineage, renew it.

The driver runs under the interpreter that has Debian's `python3-certbot` (/usr/bin/python3, or
the one inside the booted host) and calls what `certbot certonly` and `certbot renew` call:
`Client.obtain_and_enroll_certificate` (which makes the lineage with
`RenewableCert.new_lineage`) and `renewal.renew_cert` (`save_successor`, then
`update_all_links_to`, then the deploy hooks). The one stand-in is the ACME server: its answer,
the certificate, chain and key, comes from files (generated at run time by `devpki`), so the
files, links, modes and their order on disk are certbot's own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.support import devpki

SYSTEM_PYTHON = "/usr/bin/python3"

DRIVER = '''\
"""certbot's issue and renewal, with the ACME server's answer read from files.

    driver.py CONFIG_DIR issue NAME ANSWER_DIR
    driver.py CONFIG_DIR renew NAME ANSWER_DIR [--reuse-key]

ANSWER_DIR holds cert.pem, chain.pem and key.pem: what the CA would issue.
"""
import os
import sys

from certbot import util
from certbot._internal import cli, client, main as certbot_main, renewal, storage
from certbot._internal.display import obj as display_obj
from certbot._internal.plugins import disco
from certbot.configuration import NamespaceConfig


class OfflineAcme:
    """What certbot asks the ACME client for; the rest is certbot's own code."""

    def __init__(self, config, answer):
        self.config = config
        self.answer = answer

    def _read(self, name):
        with open(os.path.join(self.answer, name), "rb") as handle:
            return handle.read()

    def obtain_certificate(self, domains, old_keypath=None):
        if old_keypath is not None:  # --reuse-key: the lineage's key, as certbot passes it
            with open(old_keypath, "rb") as handle:
                key = util.Key(old_keypath, handle.read())
        else:
            key = util.Key(os.path.join(self.answer, "key.pem"), self._read("key.pem"))
        return self._read("cert.pem"), self._read("chain.pem"), key, None

    def _choose_lineagename(self, domains, certname):
        return client.Client._choose_lineagename(self, domains, certname)


def main(config_dir, command, name, answer, *flags):
    args = [
        "certonly", "--non-interactive", "--config-dir", config_dir,
        "--work-dir", os.path.join(config_dir, ".work"),
        "--logs-dir", os.path.join(config_dir, ".logs"),
        "--cert-name", name, "-d", name, *flags,
    ]
    config = NamespaceConfig(cli.prepare_and_parse_args(disco.PluginsRegistry.find_all(), args))
    # As certbot's main does before any command: its directories, then its display.
    certbot_main.make_or_verify_needed_dirs(config)
    with certbot_main.make_displayer(config) as displayer:
        display_obj.set_display(displayer)
        acme = OfflineAcme(config, answer)
        if command == "issue":
            client.Client.obtain_and_enroll_certificate(acme, [name], name)
        else:
            conf = storage.renewal_file_for_certname(config, name)
            lineage = storage.RenewableCert(conf, config)
            renewal.renew_cert(config, None, acme, lineage)


main(*sys.argv[1:])
'''


def certbot_python() -> str | None:
    """The system interpreter when it has certbot (Debian's python3-certbot); else None."""
    if not os.path.exists(SYSTEM_PYTHON):
        return None
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import certbot._internal.storage"],
        capture_output=True,
        check=False,
    )
    return SYSTEM_PYTHON if probe.returncode == 0 else None


def require_certbot() -> str:
    """The interpreter with certbot, or skip (fail with RECONCILER_REQUIRE_CERTBOT=1, as CI)."""
    python = certbot_python()
    if python is None:
        message = "certbot's code is not installed (apt-get install python3-certbot)"
        if os.environ.get("RECONCILER_REQUIRE_CERTBOT") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return python


Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def local_runner(python: str) -> Runner:
    """Runs the driver with `python` on this machine."""

    def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [python, *argv], capture_output=True, text=True, check=False, timeout=120
        )

    return run


@dataclass
class CertbotTree:
    """A certbot configuration directory (`/etc/letsencrypt` on a host) driven by certbot's code.

    Paths are as certbot sees them; `view` maps one to where this process finds it (the same
    path on this machine, or under a booted machine's root), and `run` runs the driver there."""

    config_dir: str
    scratch: str
    run: Runner
    view: Callable[[str], Path] = Path

    def live(self, name: str) -> str:
        return f"{self.config_dir}/live/{name}"

    def archive(self, name: str) -> str:
        return f"{self.config_dir}/archive/{name}"

    def issue(self, name: str, leaf: devpki.Issued, chain: bytes) -> None:
        """`certbot certonly --cert-name NAME -d NAME`: a new lineage holding `leaf`."""
        self._drive("issue", name, leaf, chain)

    def renew(
        self, name: str, leaf: devpki.Issued, chain: bytes, *, reuse_key: bool = False
    ) -> None:
        """`certbot renew --cert-name NAME`: `leaf` becomes the lineage's next version (with
        `reuse_key`, `leaf` must carry the lineage's current key, as the CA's answer would)."""
        self._drive("renew", name, leaf, chain, *(["--reuse-key"] if reuse_key else []))

    def _drive(
        self, command: str, name: str, leaf: devpki.Issued, chain: bytes, *flags: str
    ) -> None:
        answer = f"{self.scratch}/answer"
        local = self.view(answer)
        shutil.rmtree(local, ignore_errors=True)
        local.mkdir(parents=True, mode=0o700)
        (local / "cert.pem").write_bytes(leaf.cert_pem)
        (local / "chain.pem").write_bytes(chain)
        (local / "key.pem").write_bytes(leaf.key_pem)
        driver = f"{self.scratch}/certbot-driver.py"
        self.view(driver).write_text(DRIVER)
        result = self.run([driver, self.config_dir, command, name, answer, *flags])
        shutil.rmtree(local, ignore_errors=True)
        if result.returncode != 0:
            pytest.fail(f"certbot {command} {name} failed:\n{result.stdout}\n{result.stderr}")
