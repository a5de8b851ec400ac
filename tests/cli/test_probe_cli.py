"""`reconciler probe` on a desired state: trust entries count before they are applied."""

from __future__ import annotations

import json

from tests.helpers.sandbox import Sandbox
from tests.helpers.state import Pki
from tests.helpers.tls import SmtpServer, TlsServer, closed_port, server_context


def _profiles_only(sandbox: Sandbox, profiles: dict[str, str]) -> None:
    for name in ("core", "relay"):
        sandbox.state.remove(f"profiles/{name}.toml")
    for name, text in profiles.items():
        sandbox.state.profile(name, text)


def test_probe_trusts_through_a_desired_entry_that_is_not_applied_yet(
    sandbox: Sandbox, pki: Pki
) -> None:
    context = server_context(pki.chain(), pki.leaf.key_pem)
    with TlsServer(context) as tls, SmtpServer(context) as smtp:
        _profiles_only(
            sandbox,
            {
                "relay": f'url = "smtps://127.0.0.1:{tls.port}"\n',
                "mx": f'url = "smtp://127.0.0.1:{smtp.port}"\n'
                'transport_encryption = "starttls-required"\n',
                "plain": 'url = "http://127.0.0.1:8080"\n',
            },
        )
        sandbox.state.trust("test-root", pki.root.cert_pem)
        result = sandbox.run("probe", "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        by_name = {r["name"]: r for r in json.loads(result.stdout)}
        assert by_name["relay"]["status"] == "trusted"
        assert by_name["mx"]["status"] == "trusted"
        assert by_name["plain"]["status"] == "skipped"
        assert not (sandbox.trust_dir / "reconciler-test-root.crt").exists()

        sandbox.state.remove("trust/test-root.pem")
        untrusted = sandbox.run("probe")
        assert untrusted.returncode == 1
        assert "untrusted" in untrusted.stdout


def test_probe_reports_an_unreachable_server_and_fails(sandbox: Sandbox) -> None:
    _profiles_only(sandbox, {"gone": f'url = "smtps://127.0.0.1:{closed_port()}"\n'})
    result = sandbox.run("probe", "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)[0]["status"] == "unreachable"
