"""deploy/kubernetes: every manifest validates strictly; the pieces fit each other and the image.

`kubernetes-validate --strict` checks each file against the Kubernetes schemas offline. It has no
schema for custom resources (cert-manager's Certificate, Prometheus Operator's PodMonitor and
PrometheusRule): it says so with a WARN, which the test accepts for exactly those kinds, and the
fields those resources rely on are checked here by hand; the alert rules go through promtool.
Overlays are expanded here the way kustomize does for what they use (resource lists, nothing
else), and rendered by `kubectl kustomize` too where a kubectl is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.config.load import load_settings
from tests.helpers import REPO
from tests.helpers.gitops import ConfigMapVolume
from tests.helpers.state import Pki

DEPLOY = REPO / "deploy" / "kubernetes"
OVERLAYS = sorted(p.parent.name for p in (DEPLOY / "overlays").glob("*/kustomization.yaml"))
CUSTOM_KINDS = {"Certificate", "PodMonitor", "PrometheusRule"}
VALIDATE = str(Path(sys.executable).parent / "kubernetes-validate")
#: The oldest Kubernetes the manifests claim (docs/kubernetes.md) and the schemas' newest.
VERSIONS = ("1.29.0", None)

Resource = dict[str, Any]


def manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml")


def expand(directory: Path) -> list[Resource]:
    """A kustomization's resources, recursively, with its `labels` added to each one's metadata
    (the kustomize features the manifests use, as docs/kubernetes.md says)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert set(kustomization) <= {"apiVersion", "kind", "resources", "labels"}, kustomization
    found: list[Resource] = []
    for entry in kustomization["resources"]:
        path = (directory / entry).resolve()
        if path.is_dir():
            found += expand(path)
        else:
            found += [r for r in yaml.safe_load_all(path.read_text()) if r]
    for label in kustomization.get("labels", []):
        assert set(label) == {"pairs"}, "only plain labels: no selectors or templates are changed"
        for resource in found:
            resource.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
    return found


def test_the_base_labels_reach_every_resource_of_the_base() -> None:
    """kustomize adds a kustomization's `labels` to its own resources (an overlay's own files
    keep theirs)."""
    resources = expand(DEPLOY / "base")
    assert len(resources) == 5
    for resource in resources:
        labels = resource["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "mail-gateway", resource["kind"]


def one(resources: list[Resource], kind: str, name: str | None = None) -> Resource:
    matches = [r for r in resources if r["kind"] == kind and name in (None, r["metadata"]["name"])]
    assert len(matches) == 1, f"{kind} {name or ''}: {len(matches)} found"
    return matches[0]


def pod_spec(resources: list[Resource]) -> dict[str, Any]:
    spec: dict[str, Any] = one(resources, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(resources: list[Resource], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in pod_spec(resources)["containers"] if c["name"] == name)
    return found


# -- kubernetes-validate --------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS, ids=["oldest", "newest"])
def test_every_manifest_passes_kubernetes_validate_strict(version: str | None) -> None:
    files = manifest_files()
    argv = [VALIDATE, "--strict", *(["-k", version] if version else []), *map(str, files)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    output = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 0, "\n".join(output)
    assert not [line for line in output if line.startswith("ERROR")]
    passed = {line.split()[1] for line in output if line.startswith("INFO") and " passed " in line}
    warned = [line for line in output if line.startswith("WARN")]
    custom = set()
    for line in warned:
        assert "Couldn't find schema for kind" in line, line
        custom.add(line.split("kind ")[1].split()[0])
    assert custom == CUSTOM_KINDS
    resources_of = {
        str(f): {r["kind"] for r in yaml.safe_load_all(f.read_text()) if r} for f in files
    }
    checked = {f for f, kinds in resources_of.items() if not kinds <= CUSTOM_KINDS}
    assert checked <= passed, f"not validated: {sorted(checked - passed)}"


def test_a_manifest_with_an_unknown_field_fails_the_same_check(tmp_path: Path) -> None:
    """The strict check is what catches a misplaced field (not just YAML that parses)."""
    source = (DEPLOY / "overlays" / "configmap" / "deployment.yaml").read_text()
    broken = tmp_path / "deployment.yaml"
    broken.write_text(source.replace("readOnlyRootFilesystem: true", "readOnlyRootFS: true", 1))
    done = subprocess.run(
        [VALIDATE, "--strict", str(broken)], capture_output=True, text=True, check=False
    )
    assert done.returncode != 0
    assert "'readOnlyRootFS' was unexpected" in done.stdout + done.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubectl_kustomize_renders_each_overlay_and_the_result_validates(
    overlay: str, tmp_path: Path
) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl (kustomize) installed: the files are validated one by one")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    out = tmp_path / f"{overlay}.yaml"
    out.write_text(rendered)
    kinds = sorted(r["kind"] for r in yaml.safe_load_all(rendered) if r)
    assert kinds == sorted(r["kind"] for r in expand(DEPLOY / "overlays" / overlay))
    done = subprocess.run(
        [VALIDATE, "--strict", str(out)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- the pieces fit -------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_containers_are_locked_down(overlay: str) -> None:
    resources = expand(DEPLOY / "overlays" / overlay)
    spec = pod_spec(resources)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False
    assert spec["shareProcessNamespace"] is True, "signal-process needs the gateway's processes"
    for entry in spec["containers"]:
        context = entry["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, entry["name"]
        assert context["allowPrivilegeEscalation"] is False, entry["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, entry["name"]
    reconciler = container(resources, "reconciler")
    assert reconciler["resources"]["requests"]["memory"]
    assert reconciler["resources"]["limits"]["memory"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_volumes_probes_and_monitor_refer_to_what_exists(overlay: str, tmp_path: Path) -> None:
    resources = expand(DEPLOY / "overlays" / overlay)
    spec = pod_spec(resources)
    volumes = {v["name"]: v for v in spec["volumes"]}
    config_maps = {r["metadata"]["name"] for r in resources if r["kind"] == "ConfigMap"}
    secret = one(resources, "Certificate")["spec"]["secretName"]
    for volume in volumes.values():
        sources = [*volume.get("projected", {}).get("sources", []), volume]
        for source in sources:
            if "configMap" in source:
                assert source["configMap"]["name"] in config_maps, volume["name"]
            if "secret" in source:
                secret_ref = source["secret"].get("name") or source["secret"].get("secretName")
                assert secret_ref == secret, volume["name"]
    for entry in spec["containers"]:
        for mount in entry.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{entry['name']}: {mount['name']}"
    reconciler = container(resources, "reconciler")
    ports = {p["name"]: p["containerPort"] for p in reconciler["ports"]}
    assert reconciler["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert reconciler["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    monitor = one(resources, "PodMonitor")["spec"]
    labels = one(resources, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert monitor["selector"]["matchLabels"].items() <= labels.items()
    assert [e["port"] for e in monitor["podMetricsEndpoints"]] == ["metrics"]
    service = one(resources, "Service")["spec"]
    assert service["selector"].items() <= labels.items()
    gateway_ports = {p["name"] for p in container(resources, "gateway")["ports"]}
    assert {p["targetPort"] for p in service["ports"]} <= gateway_ports
    settings = _settings(resources, reconciler, tmp_path)
    assert settings.metrics_address == f"0.0.0.0:{ports['metrics']}"


def _settings(resources: list[Resource], reconciler: dict[str, Any], tmp: Path) -> Any:
    """The overlay's reconciler.toml loaded by the reconciler itself (a typo fails here)."""
    env = {e["name"]: e["value"] for e in reconciler["env"]}
    config = Path(env["RECONCILER_CONFIG"])
    mount = next(m for m in reconciler["volumeMounts"] if config.is_relative_to(m["mountPath"]))
    volume = next(v for v in pod_spec(resources)["volumes"] if v["name"] == mount["name"])
    data = one(resources, "ConfigMap", volume["configMap"]["name"])["data"]
    text = data[str(config.relative_to(mount["mountPath"]))]
    path = tmp / "reconciler.toml"
    path.write_text(text)
    return load_settings(path)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_name_mounted_paths_and_shipped_hooks(overlay: str, tmp_path: Path) -> None:
    resources = expand(DEPLOY / "overlays" / overlay)
    reconciler = container(resources, "reconciler")
    settings = _settings(resources, reconciler, tmp_path)
    mounts = [Path(m["mountPath"]) for m in reconciler["volumeMounts"]]
    written = [m for m in reconciler["volumeMounts"] if not m.get("readOnly")]
    targets = (settings.root / "data", settings.root / "nginx", settings.trust_path)
    for path in (*targets, settings.var_dir):
        assert any(path.is_relative_to(m["mountPath"]) for m in written), path
    gateway = container(resources, "gateway")["volumeMounts"]
    for path in targets:  # the gateway sees what the reconciler writes, at the same paths
        shared = next(m for m in written if path.is_relative_to(m["mountPath"]))
        assert any(
            (m["name"], m["mountPath"], m.get("subPath"))
            == (shared["name"], shared["mountPath"], shared.get("subPath"))
            for m in gateway
        ), path
    assert any(settings.state_dir.is_relative_to(m) for m in mounts)
    for key_dir in settings.key_dirs:
        assert key_dir in mounts
    assert any(Path("/tmp") == m for m in mounts)
    containerfile = (REPO / "Containerfile").read_text()
    for hook in settings.hooks:
        script = Path(hook.run[1])
        assert (REPO / "hooks" / script.name).is_file()
        assert f"hooks/{script.name}" in containerfile, f"{script.name} not in the image"
        assert hook.run[0] == "/opt/reconciler/venv/bin/python"


def test_the_configmap_overlays_desired_state_is_valid_once_projected(
    tmp_path: Path, pki: Pki
) -> None:
    """Overlay (a)'s ConfigMap and a cert-manager Secret, projected as the kubelet does, pass
    `reconciler validate`: the example state is a working one."""
    resources = expand(DEPLOY / "overlays" / "configmap")
    volume = next(v for v in pod_spec(resources)["volumes"] if v["name"] == "desired-state")
    secret = {"tls.crt": pki.chain(), "tls.key": pki.leaf.key_pem, "ca.crt": pki.root.cert_pem}
    files: dict[str, bytes] = {}
    for source in volume["projected"]["sources"]:
        if "configMap" in source:
            data = one(resources, "ConfigMap", source["configMap"]["name"])["data"]
            for item in source["configMap"]["items"]:
                files[item["path"]] = data[item["key"]].encode()
        else:
            for item in source["secret"]["items"]:
                files[item["path"]] = secret[item["key"]]
    projected = ConfigMapVolume(tmp_path)
    projected.push(files)
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", "--state", str(projected.state_dir)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_certificate_gives_what_the_identity_needs() -> None:
    certificate = one(expand(DEPLOY / "base"), "Certificate")["spec"]
    assert certificate["secretName"] == "gateway-tls"
    assert {"server auth", "client auth"} <= set(certificate["usages"])
    assert certificate["privateKey"]["algorithm"] in ("ECDSA", "RSA")
    assert certificate["issuerRef"]["name"]


# -- alert rules ----------------------------------------------------------------------------------


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return found


def _rules_file(tmp_path: Path) -> Path:
    rule = one(expand(DEPLOY / "base"), "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def test_alert_rules_pass_promtool_check(tmp_path: Path) -> None:
    done = subprocess.run(
        [_promtool(), "check", "rules", str(_rules_file(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    source = yaml.safe_load((REPO / "deploy/prometheus/reconciler.rules.yml").read_text())
    count = sum(len(group["rules"]) for group in source["groups"])
    assert f"SUCCESS: {count} rules found" in done.stdout


def test_the_prometheusrule_holds_the_shipped_rules_and_the_job_they_select() -> None:
    """One source of rules: the PrometheusRule's groups are deploy/prometheus's (generated from
    it, tests/e2e/test_generated.py), and the PodMonitor names the job those rules select."""
    resources = expand(DEPLOY / "base")
    source = yaml.safe_load((REPO / "deploy/prometheus/reconciler.rules.yml").read_text())
    assert one(resources, "PrometheusRule")["spec"]["groups"] == source["groups"]
    [endpoint] = one(resources, "PodMonitor")["spec"]["podMetricsEndpoints"]
    assert {"targetLabel": "job", "replacement": "reconciler"} in endpoint["relabelings"]
