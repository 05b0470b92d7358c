"""`reconcile --since REV` against the real kube-apiserver: a pull request's plan and apply read and
touch only the workspaces it changes, in a few requests however many workspaces the namespace holds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import git
import pytest

from tests.conftest import ControlPlane
from tests.e2e.helpers import Admin, Repo, reconcile, workspace
from tests.reliability.proxy import FaultProxy

pytestmark = pytest.mark.cluster

VSCODE = "jane-doe-vscode"
JUPYTER = "john-tan-jupyterlab"
NEW = "ann-lee-vscode"
TAKEN = "bo-chan-vscode"  # a name somebody else's Deployment already has


@pytest.fixture
def proxy(control_plane: ControlPlane) -> Iterator[FaultProxy]:
    with FaultProxy(control_plane.kubeconfig) as p:
        yield p


def commit(repo: Repo, message: str) -> str:
    g = git.Repo.init(repo.path, initial_branch="main")
    with g.config_writer() as config:
        config.set_value("user", "name", "Test")
        config.set_value("user", "email", "test@example.org")
    g.git.add("-A")
    g.git.commit("-q", "--allow-empty", "-m", message)
    return g.head.commit.hexsha


def names(result: dict) -> dict[str, str]:
    return {w["name"]: w["action"] for w in result["workspaces"]}


def test_a_pull_requests_plan_and_apply_touch_only_its_workspaces(
        repo: Repo, admin: Admin, control_plane: ControlPlane, proxy: FaultProxy, tmp_path: Path) -> None:
    kc = control_plane.kubeconfig
    r = reconcile("--repo", str(repo), "--no-wait", "--output", "json", kubeconfig=kc)
    assert r.code == 0, str(r)
    base = commit(repo, "both example workspaces, applied")
    # Drift outside the pull request: the full plan sees it, a --since plan does not read it.
    admin.apps.patch_namespaced_deployment(VSCODE, admin.ns, {"spec": {"replicas": 0}})
    admin.apps.create_namespaced_deployment(admin.ns, {
        "metadata": {"name": TAKEN, "labels": {"app": "theirs"}},
        "spec": {"selector": {"matchLabels": {"app": "theirs"}}, "template": {
            "metadata": {"labels": {"app": "theirs"}},
            "spec": {"containers": [{"name": "c", "image": "registry.example.org/theirs:1"}]}}}})

    # The pull request: one workspace added, one whose name is taken, one deleted (not yet committed).
    repo.add_workspace(NEW, "ann-lee")
    repo.add_workspace(TAKEN, "bo-chan")
    repo.remove(f"workspaces/{JUPYTER}.yaml")
    through = proxy.kubeconfig(tmp_path)
    r = reconcile("--repo", str(repo), "--dry-run", "--output", "json", "--since", base, kubeconfig=through)
    assert r.code == 1 and f"{TAKEN} was left alone" in r.stderr, str(r)
    assert names(r.json) == {NEW: "create", TAKEN: "conflict", JUPYTER: "delete"}, "the drifted one is not planned"
    assert r.json["scope"] == {"since": base, "workspaces": sorted([JUPYTER, NEW, TAKEN]), "notRead": 1,
                               "reason": ""}
    seen = proxy.seen()
    lists = [s for s in seen if s.path.endswith(("/deployments", "/services", "/ingresses"))]
    assert len(lists) == 3
    for s in lists:  # by label, only the three workspaces' objects
        assert parse_qs(s.query)["labelSelector"] == [
            f"app.kubernetes.io/managed-by=workspace-reconciler,app.kubernetes.io/instance in "
            f"({','.join(sorted([JUPYTER, NEW, TAKEN]))})"]
    gets = sorted(s.path.rsplit("/", 1)[1] for s in seen if s.method == "GET" and s not in lists
                  and "/persistentvolumeclaims" not in s.path and not s.path.endswith("/nodes"))
    assert gets == sorted([NEW] * 3 + [TAKEN] * 3), "a GET of each wanted object that is not ours, no other"
    assert not [s for s in seen if VSCODE in s.path + s.query], "nothing of the drifted workspace is read"
    assert len(seen) == 3 + 6 + 2  # the LISTs, the GETs, the PVCs and the nodes
    assert f"Planned 3 workspaces, changed since {base[:12]}: {NEW}, {TAKEN}, {JUPYTER}; the repo's 1 other " \
        "workspace was not read" in reconcile("--repo", str(repo), "--dry-run", "--since", base, kubeconfig=kc).stdout

    # Merged without the taken name: the apply creates one, deletes one, leaves the drift alone.
    repo.remove(f"workspaces/{TAKEN}.yaml")
    proxy.reset()
    r = reconcile("--repo", str(repo), "--output", "json", "--timeout", "60", "--since", base, kubeconfig=through)
    assert r.code == 0, str(r)
    assert names(r.json) == {NEW: "create", JUPYTER: "delete"}
    assert workspace(r.json, NEW)["ready"] is True
    writes = sorted((s.method, s.path.rsplit("/", 2)[-2]) for s in proxy.seen(writes=True)
                    if "/leases" not in s.path)
    assert writes == [("DELETE", "deployments"), ("DELETE", "ingresses"), ("DELETE", "services"),
                      ("PATCH", "deployments"), ("PATCH", "ingresses"), ("PATCH", "services")]
    assert admin.get("Deployment", VSCODE)["spec"]["replicas"] == 0, "the drift outside the scope is untouched"
    assert JUPYTER not in admin.names("Deployment") and NEW in admin.names("Deployment")

    # The drift check (no --since) still sees it; a change to project.yaml plans everything.
    full = reconcile("--repo", str(repo), "--dry-run", "--output", "json", kubeconfig=kc)
    assert names(full.json)[VSCODE] == "update" and full.json["scope"] is None
    repo.edit("project.yaml", lambda d: d["spec"]["quota"].update(cpu="65"))
    everything = reconcile("--repo", str(repo), "--dry-run", "--output", "json", "--since", base, kubeconfig=kc)
    assert everything.json["scope"]["workspaces"] is None
    assert everything.json["scope"]["reason"] == f"project.yaml changed since {base}"
    assert names(everything.json)[VSCODE] == "update"


def test_removing_every_workspace_file_through_since_is_refused_as_a_mass_delete(
        repo: Repo, admin: Admin, control_plane: ControlPlane) -> None:
    kc = control_plane.kubeconfig
    assert reconcile("--repo", str(repo), "--no-wait", kubeconfig=kc).code == 0
    base = commit(repo, "applied")
    for name in repo.workspaces():
        repo.remove(f"workspaces/{name}.yaml")
    r = reconcile("--repo", str(repo), "--no-wait", "--since", base, kubeconfig=kc)
    assert r.code == 1 and "deletes every managed workspace (2 of 2)" in r.stderr, str(r)
    assert sorted(admin.names("Deployment")) == sorted([VSCODE, JUPYTER]), "nothing was deleted"
