"""docs/INSTALL.md's cluster half, run as written against the real control plane, then the identities it made.

The test extracts the fenced blocks marked ``install-settings``, ``install-cluster`` and
``install-revoke`` from docs/INSTALL.md, replaces only the settings block (namespace, token
lifetime, output folder) and runs the rest with bash and the ``kubectl`` the suite builds, as the
cluster's admin. Then it uses the two kubeconfigs the document minted (TokenRequest tokens): the
plan one runs ``reconcile --dry-run`` and can neither write nor read Secrets; the apply one applies
and can touch nothing outside the namespace; revoking makes the old tokens fail.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.conftest import ControlPlane, admin_client
from tests.e2e.helpers import Admin, Repo, reconcile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster"))
import launcher  # noqa: E402

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "docs" / "INSTALL.md"
_FENCE = re.compile(r"^```bash (install-[a-z]+)\n(.*?)^```$", re.M | re.S)


def blocks(marker: str) -> list[str]:
    found = [body for m, body in _FENCE.findall(INSTALL.read_text()) if m == marker]
    assert found, f"docs/INSTALL.md has no ```bash {marker} block"
    return found


def run_bash(script: str, kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    env["KUBECONFIG"] = str(kubeconfig)
    env["PATH"] = f"{launcher.binary_dir()}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    p = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, (f"exit {p.returncode}\n--- script\n{script}\n"
                               f"--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}")
    return p


@pytest.fixture
def installed(control_plane: ControlPlane, tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    """The settings the test substitutes, and the output of the install-cluster blocks run as written."""
    namespace = f"install-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "kubeconfigs"
    settings = f"export NAMESPACE={namespace}\nexport TOKEN_DURATION=1h\nexport OUT={out}\n"
    assert len(blocks("install-settings")) == 1
    core = client.CoreV1Api(admin_client(control_plane.kubeconfig))
    try:
        p = run_bash(settings + "\n".join(blocks("install-cluster")), control_plane.kubeconfig)
        yield namespace, out, p.stdout
    finally:
        try:
            core.delete_namespace(namespace)
        except ApiException as e:
            if e.status != 404:
                raise


def _api(kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeconfig))


def _status(call: object) -> int:
    try:
        call()  # type: ignore[operator]
    except ApiException as e:
        return int(e.status)
    return 200


def test_install_md_cluster_commands_make_a_read_only_plan_and_a_namespaced_apply_identity(
        control_plane: ControlPlane, installed: tuple[str, Path, str], tmp_path: Path) -> None:
    namespace, out, printed = installed
    plan_kc, apply_kc = out / "plan.kubeconfig", out / "apply.kubeconfig"
    assert oct(plan_kc.stat().st_mode & 0o777) == "0o600" and oct(out.stat().st_mode & 0o777) == "0o700"
    # The document's own check prints what each identity may do.
    table = {tuple(line.split()[:-1]): line.split()[-1] for line in printed.splitlines()
             if line.startswith(("plan ", "apply ")) and line.split()[-1] in ("yes", "no")}
    assert table == {
        ("plan", "list", "deployments"): "yes", ("plan", "patch", "deployments"): "no",
        ("plan", "get", "secrets"): "no", ("plan", "create", "persistentvolumeclaims"): "no",
        ("apply", "list", "deployments"): "yes", ("apply", "patch", "deployments"): "yes",
        ("apply", "get", "secrets"): "no", ("apply", "create", "persistentvolumeclaims"): "no",
    }, printed
    # The tokens expire after TOKEN_DURATION (1h here), as the document's expiry check prints.
    expiries = dict(re.findall(r"^(plan|apply) token expires (\S+)$", printed, re.M))
    assert set(expiries) == {"plan", "apply"}, printed
    for when in expiries.values():
        left = dt.datetime.strptime(when, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC) - dt.datetime.now(dt.UTC)
        assert dt.timedelta(minutes=55) < left <= dt.timedelta(hours=1), (when, printed)
    # The kubeconfigs carry a bearer token (TokenRequest), not the admin's client certificate.
    assert "token:" in plan_kc.read_text() and "client-key" not in plan_kc.read_text()

    admin = Admin(control_plane.kubeconfig, namespace)
    admin.bound_pvc("sample-project-pvc")
    admin.core.create_namespaced_secret(namespace, {"metadata": {"name": "team-secret"},
                                                    "stringData": {"password": "hunter2"}})
    repo = Repo(tmp_path / "repo", namespace)

    # plan: the dry run works, shows the examples to create, and writes nothing.
    dry = reconcile("--repo", str(repo), "--dry-run", "--output", "json", kubeconfig=plan_kc)
    assert dry.code == 0, str(dry)
    assert {w["name"]: w["action"] for w in dry.json["workspaces"]} == {
        "jane-doe-vscode": "create", "john-tan-jupyterlab": "create"}
    # `reconcile import` needs only these read rights.
    imported = reconcile("import", "--repo", str(repo), "--dry-run", kubeconfig=plan_kc)
    assert imported.code == 0 and "no workspace to import" in imported.stderr, str(imported)
    # ... and an apply with it is refused by the API server, leaving the namespace as it was.
    refused = reconcile("--repo", str(repo), "--no-wait", kubeconfig=plan_kc)
    assert refused.code == 1 and "forbidden (403)" in refused.stderr, str(refused)
    assert admin.names("Deployment") == [] and admin.names("Service") == []
    plan = _api(plan_kc)
    pcore, papps = client.CoreV1Api(plan), client.AppsV1Api(plan)
    assert _status(lambda: pcore.read_namespaced_secret("team-secret", namespace)) == 403
    assert _status(lambda: pcore.list_namespaced_secret(namespace)) == 403
    assert _status(lambda: papps.create_namespaced_deployment(namespace, _deployment("x"))) == 403
    assert _status(lambda: pcore.delete_namespaced_persistent_volume_claim("sample-project-pvc", namespace)) == 403

    # apply: applies the examples (the fake kubelet makes them Ready), and nothing else.
    applied = reconcile("--repo", str(repo), "--timeout", "120", kubeconfig=apply_kc)
    assert applied.code == 0, str(applied)
    assert admin.names("Deployment") == ["jane-doe-vscode", "john-tan-jupyterlab"]
    other = f"other-{uuid.uuid4().hex[:6]}"
    admin.core.create_namespace({"metadata": {"name": other}})
    try:
        apply = _api(apply_kc)
        acore, aapps = client.CoreV1Api(apply), client.AppsV1Api(apply)
        arbac = client.RbacAuthorizationV1Api(apply)
        assert _status(lambda: aapps.create_namespaced_deployment(other, _deployment("y"))) == 403
        assert _status(lambda: aapps.list_namespaced_deployment(other)) == 403
        assert _status(lambda: aapps.list_namespaced_deployment("default")) == 403
        assert _status(lambda: acore.list_namespace()) == 403
        assert _status(lambda: acore.delete_namespace(other)) == 403
        assert _status(lambda: acore.read_namespaced_secret("team-secret", namespace)) == 403
        assert _status(lambda: acore.create_namespaced_persistent_volume_claim(namespace, {
            "metadata": {"name": "z"}, "spec": {"accessModes": ["ReadWriteOnce"],
                                                "resources": {"requests": {"storage": "1Gi"}}}})) == 403
        assert _status(lambda: arbac.create_namespaced_role_binding(namespace, {
            "metadata": {"name": "escalate"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "workspace-reconciler-apply",
                          "namespace": namespace}]})) == 403
        assert _status(lambda: acore.create_namespaced_service_account_token(
            "workspace-reconciler-apply", namespace, {"spec": {"expirationSeconds": 600}})) == 403
    finally:
        admin.core.delete_namespace(other)


def test_install_md_revoke_step_invalidates_the_minted_kubeconfigs(
        control_plane: ControlPlane, installed: tuple[str, Path, str]) -> None:
    namespace, out, _ = installed
    old = out / "plan.kubeconfig"
    old_text = old.read_text()
    assert _status(lambda: client.AppsV1Api(_api(old)).list_namespaced_deployment(namespace)) == 200
    settings = f"export NAMESPACE={namespace}\nexport TOKEN_DURATION=1h\nexport OUT={out}\n"
    run_bash(settings + "\n".join(blocks("install-revoke")), control_plane.kubeconfig)
    old.rename(out / "old.kubeconfig")
    deadline = time.monotonic() + 15  # the token authenticator reads ServiceAccounts from a cache
    while time.monotonic() < deadline:
        code = _status(lambda: client.AppsV1Api(_api(out / "old.kubeconfig")).list_namespaced_deployment(namespace))
        if code == 401:
            break
        time.sleep(0.3)
    assert code == 401
    # Minting again (step 3, as written) gives kubeconfigs that work.
    mint = [b for b in blocks("install-cluster") if "create token" in b]
    assert len(mint) == 1
    run_bash(settings + mint[0], control_plane.kubeconfig)
    assert old.read_text() != old_text
    assert _status(lambda: client.AppsV1Api(_api(old)).list_namespaced_deployment(namespace)) == 200


def _deployment(name: str) -> dict[str, object]:
    return {"metadata": {"name": name}, "spec": {
        "selector": {"matchLabels": {"a": name}},
        "template": {"metadata": {"labels": {"a": name}},
                     "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}


def test_deploy_manifests_applied_without_the_render_step_are_refused(control_plane: ControlPlane) -> None:
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig)}
    p = subprocess.run([str(launcher.binary_dir() / "kubectl"), "apply", "-f", str(ROOT / "deploy" / "rbac")],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "__NAMESPACE__" in p.stderr, p.stderr
    bad = subprocess.run([str(ROOT / "deploy" / "render.sh"), "Team A"], capture_output=True, text=True)
    assert bad.returncode == 64 and "DNS-1123" in bad.stderr and bad.stdout == ""
