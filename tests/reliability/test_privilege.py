"""Privilege: a workspace file cannot make a pod privileged, and the Roles stay in their lane.

- No field of a workspace file reaches the pod spec: every pod-shaped key (privileged,
  hostNetwork, image, securityContext, volumes, ...) at every level of a workspace file is
  rejected with its own `path:line:col`.
- Every pod the reconciler renders, for every example and for any valid workspace hypothesis can
  write, runs as non-root with no privilege escalation, all capabilities dropped, RuntimeDefault
  seccomp, no host namespaces, only PVC volumes, no service-account token, and the image of its
  environment block; the real apiserver admits those pods under the `restricted` Pod Security
  Standard (and refuses a privileged pod there, so the check is live).
- The apply Role acts only in its namespace (403 elsewhere, for the API and for `reconcile`), can
  neither read Secrets nor touch PVCs; the plan Role can read no Secret and write nothing.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from reconciler.errors import ValidationFailed
from reconciler.render import render
from reconciler.validate import load_repo
from tests.conftest import ControlPlane, admin_client
from tests.e2e.helpers import ROOT, Admin, Repo, reconcile
from tests.reliability.conftest import record
from tests.reliability.fleet import run_env

BASE = ROOT / "tests" / "data" / "base"
WORKSPACE = """apiVersion: workspaces/v1
kind: Workspace
metadata:
  name: alice-code
spec:
  owner: alice
  environment: vscode
  compute: small
  dataSources: [team-pvc]
"""
POD_KEYS = {
    "privileged": "true", "hostNetwork": "true", "hostPID": "true", "hostIPC": "true",
    "hostPath": "{path: /}", "image": "evil.example/root:latest", "securityContext": "{runAsUser: 0, privileged: true}",
    "volumes": "[{name: root, hostPath: {path: /}}]", "volumeMounts": "[{name: root, mountPath: /host}]",
    "runAsUser": "0", "runAsNonRoot": "false", "allowPrivilegeEscalation": "true",
    "capabilities": "{add: [SYS_ADMIN]}", "serviceAccountName": "default", "automountServiceAccountToken": "true",
    "nodeName": "node-1", "command": "[sh, -c, id]", "args": "[--allow-root]", "env": "{LD_PRELOAD: /x.so}",
    "initContainers": "[{name: x, image: evil}]", "containers": "[{name: x, image: evil}]",
    "labels": "{app: x}", "annotations": "{container.apparmor.security.beta.kubernetes.io/workspace: unconfined}",
    "template": "{spec: {hostNetwork: true}}",
}
LEVELS = ("top", "metadata", "spec")


def _with_key(key: str, value: str, level: str) -> tuple[str, int, int]:
    """The workspace file with `key: value` inserted at `level`; the line and column of the key."""
    lines = WORKSPACE.splitlines()
    if level == "top":
        lines.append(f"{key}: {value}")
        return "\n".join(lines) + "\n", len(lines), 1
    at = lines.index("spec:") if level == "metadata" else len(lines)
    lines.insert(at, f"  {key}: {value}")
    return "\n".join(lines) + "\n", at + 1, 3


def _errors(root: Path) -> list[str]:
    with pytest.raises(ValidationFailed) as failed:
        load_repo(root)
    return [str(e) for e in failed.value.errors]


@pytest.mark.parametrize("level", LEVELS)
def test_no_pod_field_can_be_set_from_any_level_of_a_workspace_file(tmp_path: Path, level: str) -> None:
    """Each pod-shaped key, at each level, is refused on its own line: nothing of it can reach the pod."""
    refused = 0
    for key, value in POD_KEYS.items():
        root = tmp_path / f"{level}-{key}"
        shutil.copytree(BASE, root)
        text, line, col = _with_key(key, value, level)
        (root / "workspaces" / "alice-code.yaml").write_text(text)
        errors = _errors(root)
        field = key if level == "top" else f"{level}.{key}"
        assert f"workspaces/alice-code.yaml:{line}:{col}: unknown field '{field}'" in "\n".join(errors), \
            f"{key} at {level}: {errors}"
        refused += 1
    record(f"pod fields in a workspace file ({level})", keys_tried=len(POD_KEYS), refused_with_line=refused)


def test_a_pod_field_inside_a_list_entry_is_refused_on_its_line(tmp_path: Path) -> None:
    shutil.copytree(BASE, tmp_path / "repo")
    text = WORKSPACE.replace("dataSources: [team-pvc]",
                             "dataSources:\n    - team-pvc\n    - {name: root, hostPath: {path: /}}")
    (tmp_path / "repo" / "workspaces" / "alice-code.yaml").write_text(text)
    errors = _errors(tmp_path / "repo")
    assert any(e.startswith("workspaces/alice-code.yaml:11:7: spec.dataSources[1]: Input should be a valid string")
               for e in errors), errors


# --- what a rendered pod may be ----------------------------------------------------------------

def assert_restricted(deployment: dict[str, Any], images: set[str], claims: set[str]) -> None:
    """The pod of a rendered Deployment meets the restricted Pod Security Standard and our own rules."""
    name = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    ctx = pod["securityContext"]
    assert ctx["runAsNonRoot"] is True and ctx.get("runAsUser", 1) != 0, name
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, name
    for key in ("hostNetwork", "hostPID", "hostIPC", "hostUsers", "shareProcessNamespace", "nodeName",
                "serviceAccountName", "serviceAccount", "hostAliases", "ephemeralContainers"):
        assert not pod.get(key), f"{name}: {key}"
    assert pod["automountServiceAccountToken"] is False, name
    for v in pod.get("volumes", []):
        if v["name"] == "dshm":  # a compute block's /dev/shm: memory, sized, nothing of the host's
            assert set(v) == {"name", "emptyDir"} and v["emptyDir"]["medium"] == "Memory", f"{name}: volume {v}"
            assert v["emptyDir"]["sizeLimit"], f"{name}: volume {v}"
            continue
        assert set(v) == {"name", "persistentVolumeClaim"}, f"{name}: volume {v}"
        assert v["persistentVolumeClaim"]["claimName"] in claims, f"{name}: volume {v}"
    for c in pod.get("initContainers", []) + pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["capabilities"] == {"drop": ["ALL"]}, name
        assert not sc.get("privileged") and sc.get("runAsUser", 1) != 0 and sc["runAsNonRoot"] is True, name
        assert sc.get("seccompProfile", {"type": "RuntimeDefault"}) == {"type": "RuntimeDefault"}, name
        assert c["image"] in images, f"{name}: image {c['image']}"
        assert not any(p.get("hostPort") for p in c.get("ports", [])), name
        assert not c.get("volumeDevices"), name


def _restricted_repo(root: Path) -> int:
    repo = load_repo(root)
    images = {e.spec.image for e in repo.environments.values()}
    claims = {d.spec.pvc for d in repo.data_sources.values()}
    desired = render(repo)
    for w in desired:
        dep = next(o for o in w.objects if o["kind"] == "Deployment")
        assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == \
            repo.environments[w.environment].spec.image, "the image is the environment block's"
        assert_restricted(dep, images, claims)
        svc = next(o for o in w.objects if o["kind"] == "Service")
        assert svc["spec"]["type"] == "ClusterIP" and not svc["spec"].get("externalIPs"), w.name
    return len(desired)


@pytest.mark.parametrize("root", [ROOT, BASE, BASE.parent / "seed"],
                         ids=["example-repo", "tests-data-base", "tests-data-seed"])
def test_every_rendered_example_pod_is_restricted(root: Path) -> None:
    assert _restricted_repo(root) >= 2


_logins = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(owner=_logins, suffix=_logins, environment=st.sampled_from(["vscode", "jupyter"]),
       compute=st.sampled_from(["small", "gpu-one"]), sources=st.lists(st.just("team-pvc"), max_size=1),
       state=st.sampled_from(["running", "stopped"]))
def test_any_valid_workspace_renders_a_restricted_pod(tmp_path_factory: pytest.TempPathFactory, owner: str,
                                                     suffix: str, environment: str, compute: str,
                                                     sources: list[str], state: str) -> None:
    root = tmp_path_factory.mktemp("ws")
    shutil.copytree(BASE, root, dirs_exist_ok=True)
    name = f"{owner}-{suffix}"
    (root / "workspaces" / f"{name}.yaml").write_text(
        f"apiVersion: workspaces/v1\nkind: Workspace\nmetadata: {{name: {name}}}\n"
        f"spec: {{owner: {owner}, environment: {environment}, compute: {compute}, "
        f"dataSources: [{', '.join(sources)}], state: {state}}}\n")
    try:
        _restricted_repo(root)
    except ValidationFailed as failed:  # a name collision or the quota: not a rendering question
        assert all("quota" in str(e) or "duplicate" in str(e) or "exceeds" in str(e) for e in failed.errors), \
            [str(e) for e in failed.errors]


@pytest.mark.cluster
def test_the_apiserver_admits_the_rendered_pods_under_the_restricted_pod_security_standard(
        control_plane: ControlPlane, admin: Admin, namespace: str, tmp_path: Path) -> None:
    admin.core.patch_namespace(namespace, {"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}})
    with pytest.raises(ApiException) as refused:  # the control: PodSecurity admission is on and enforcing
        admin.core.create_namespaced_pod(namespace, {"metadata": {"name": "privileged-probe"}, "spec": {
            "containers": [{"name": "c", "image": "x", "securityContext": {"privileged": True}}]}})
    assert refused.value.status == 403 and "violates PodSecurity" in refused.value.body
    repo = Repo(tmp_path / "repo", namespace)
    r = reconcile("--repo", str(repo), "--no-wait", kubeconfig=control_plane.kubeconfig, env=run_env())
    assert r.code == 0, str(r)
    names = repo.workspaces()
    deadline = time.monotonic() + 60
    while True:
        pods = admin.core.list_namespaced_pod(namespace).items
        owners = {p.metadata.labels.get("app.kubernetes.io/instance") for p in pods}
        if owners >= set(names):
            break
        for d in admin.apps.list_namespaced_deployment(namespace).items:
            for cond in (d.status.conditions or []):
                assert cond.type != "ReplicaFailure", f"{d.metadata.name}: {cond.message}"
        assert time.monotonic() < deadline, f"pods of {set(names) - owners} were never admitted"
        time.sleep(0.5)
    record("rendered pods under restricted Pod Security admission", workspaces=len(names), admitted=len(names),
           privileged_probe="refused (403)")


# --- the Roles ----------------------------------------------------------------------------------

def _status(call: Callable[[], object]) -> int:
    try:
        call()
    except ApiException as e:
        return int(e.status)
    return 200


def _deployment(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {"metadata": {"name": name, "labels": labels}, "spec": {
        "replicas": 0, "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}}


@pytest.fixture
def other_namespace(control_plane: ControlPlane) -> Any:
    core = client.CoreV1Api(admin_client(control_plane.kubeconfig))
    name = f"other-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_secret(name, {"metadata": {"name": "s"}, "string_data": {"k": "v"}})
    yield name
    core.delete_namespace(name)


@pytest.mark.cluster
def test_the_apply_role_acts_only_in_its_namespace_and_never_on_secrets_or_pvcs(
        control_plane: ControlPlane, admin: Admin, namespace: str, other_namespace: str, make_user: Any,
        tmp_path: Path) -> None:
    admin.install_roles()
    admin.core.create_namespaced_secret(namespace, {"metadata": {"name": "s"}, "string_data": {"k": "v"}})
    kc = make_user(["workspace-reconciler-apply"])
    api = config.new_client_from_config(config_file=str(kc))
    core, apps, coord = client.CoreV1Api(api), client.AppsV1Api(api), client.CoordinationV1Api(api)
    rbac = client.RbacAuthorizationV1Api(api)
    lease = {"metadata": {"name": "workspace-reconciler"}, "spec": {"holderIdentity": "x"}}
    allowed = {
        "list deployments here": lambda: apps.list_namespaced_deployment(namespace),
        "create a deployment here": lambda: apps.create_namespaced_deployment(namespace, _deployment("mine")),
    }
    denied = {
        "list deployments elsewhere": lambda: apps.list_namespaced_deployment(other_namespace),
        "create a deployment elsewhere": lambda: apps.create_namespaced_deployment(other_namespace,
                                                                                   _deployment("x")),
        "create a service elsewhere": lambda: core.create_namespaced_service(
            other_namespace, {"metadata": {"name": "x"}, "spec": {"ports": [{"port": 80}]}}),
        "take a lease elsewhere": lambda: coord.create_namespaced_lease(other_namespace, lease),
        "read a secret elsewhere": lambda: core.read_namespaced_secret("s", other_namespace),
        "read a secret here": lambda: core.read_namespaced_secret("s", namespace),
        "list secrets here": lambda: core.list_namespaced_secret(namespace),
        "create a pvc here": lambda: core.create_namespaced_persistent_volume_claim(namespace, {
            "metadata": {"name": "x"}, "spec": {"accessModes": ["ReadWriteOnce"],
                                                "resources": {"requests": {"storage": "1Gi"}}}}),
        "delete a pvc here": lambda: core.delete_namespaced_persistent_volume_claim("sample-project-pvc", namespace),
        "create a pod here": lambda: core.create_namespaced_pod(namespace, {
            "metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
        "exec into a pod here": lambda: core.connect_post_namespaced_pod_exec("x", namespace, command=["id"]),
        "bind a role here": lambda: rbac.create_namespaced_role_binding(namespace, {
            "metadata": {"name": "x"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                                   "name": "cluster-admin"},
            "subjects": [{"kind": "User", "name": "x", "apiGroup": "rbac.authorization.k8s.io"}]}),
        "list namespaces": lambda: core.list_namespace(),
        "list nodes": lambda: core.list_node(),
    }
    for what, call in allowed.items():
        assert _status(call) in (200, 201), what
    for what, call in denied.items():
        assert _status(call) == 403, f"the apply Role may not {what}"
    repo = Repo(tmp_path / "repo", other_namespace)
    r = reconcile("--repo", str(repo), "--no-wait", kubeconfig=kc, env=run_env())
    assert r.code == 1 and "forbidden (403)" in r.stderr, str(r)
    assert len([line for line in r.stderr.splitlines() if line.strip()]) == 1, str(r)
    assert Admin(control_plane.kubeconfig, other_namespace).names("Deployment") == []
    record("apply Role boundaries", allowed=len(allowed), denied_403=len(denied),
           reconcile_elsewhere="exit 1, forbidden (403)")


@pytest.mark.cluster
def test_the_plan_role_reads_no_secret_and_writes_nothing(control_plane: ControlPlane, admin: Admin, namespace: str,
                                                         make_user: Any) -> None:
    admin.install_roles()
    admin.core.create_namespaced_secret(namespace, {"metadata": {"name": "s"}, "string_data": {"k": "v"}})
    kc = make_user(["workspace-reconciler-plan"])
    api = config.new_client_from_config(config_file=str(kc))
    core, apps, coord = client.CoreV1Api(api), client.AppsV1Api(api), client.CoordinationV1Api(api)
    assert _status(lambda: apps.list_namespaced_deployment(namespace)) == 200
    denied = {
        "read a secret": lambda: core.read_namespaced_secret("s", namespace),
        "list secrets": lambda: core.list_namespaced_secret(namespace),
        "watch secrets": lambda: core.list_namespaced_secret(namespace, watch=True, timeout_seconds=1),
        "create a deployment": lambda: apps.create_namespaced_deployment(namespace, _deployment("x")),
        "patch a deployment": lambda: apps.patch_namespaced_deployment("x", namespace, {"spec": {"replicas": 1}}),
        "delete a service": lambda: core.delete_namespaced_service("x", namespace),
        "take the lease": lambda: coord.create_namespaced_lease(namespace, {
            "metadata": {"name": "workspace-reconciler"}, "spec": {"holderIdentity": "x"}}),
        "read a configmap": lambda: core.read_namespaced_config_map("kube-root-ca.crt", namespace),
    }
    for what, call in denied.items():
        assert _status(call) == 403, f"the plan Role may not {what}"
    record("plan Role boundaries", denied_403=len(denied))
