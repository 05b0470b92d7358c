"""The reconcile user stories, end to end against the real kube-apiserver (README user stories, docs/CLI.md)."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ControlPlane
from tests.e2e.helpers import RECORDED_LIVE, ROOT, Admin, Repo, reconcile, strip_ansi, workspace

pytestmark = pytest.mark.cluster

VSCODE = "jane-doe-vscode"
JUPYTER = "john-tan-jupyterlab"


@pytest.fixture
def kc(control_plane: ControlPlane) -> Path:
    return control_plane.kubeconfig


def plan(repo: Repo, kc: Path, *extra: str, code: int = 0) -> dict:
    r = reconcile("--repo", str(repo), "--dry-run", "--output", "json", *extra, kubeconfig=kc)
    assert r.code == code, str(r)
    return r.json


def apply(repo: Repo, kc: Path, *extra: str, code: int = 0) -> dict:
    r = reconcile("--repo", str(repo), "--output", "json", "--timeout", "60", *extra, kubeconfig=kc)
    assert r.code == code, str(r)
    return r.json if r.stdout.strip() else {}


def test_adding_a_workspace_file_creates_it_and_a_second_run_changes_nothing(repo: Repo, admin: Admin,
                                                                             kc: Path) -> None:
    p = plan(repo, kc)
    assert p["summary"]["create"] == 2
    w = workspace(p, VSCODE)
    assert w["action"] == "create"
    assert sorted((o["kind"], o["action"]) for o in w["objects"]) == [
        ("Deployment", "create"), ("Ingress", "create"), ("Service", "create")]
    assert w["url"] == f"https://sample-project-{VSCODE}.runai.aisingapore.net"
    assert w["credentialHint"] == (f"kubectl -n {repo.namespace} exec deploy/{VSCODE} -- "
                                   "cat /home/coder/.config/code-server/config.yaml")
    assert admin.names("Deployment") == [], "a dry run writes nothing"

    result = apply(repo, kc)
    assert workspace(result, VSCODE)["action"] == "create"
    dep = admin.get("Deployment", VSCODE)
    labels = dep["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "workspace-reconciler"
    assert labels["app.kubernetes.io/part-of"] == "sample-project"
    assert labels["app.kubernetes.io/instance"] == VSCODE
    assert labels["app.kubernetes.io/name"] == "vscode"
    assert dep["metadata"]["annotations"]["workspace-gitops.io/source"] == f"workspaces/{VSCODE}.yaml"
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"] == container["resources"]["requests"]
    assert {"mountPath": "/sample-project-pvc", "name": "sample-project-pvc"}.items() <= \
        container["volumeMounts"][0].items()
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "sample-project-pvc"
    assert admin.get("Ingress", VSCODE)["spec"]["rules"][0]["host"] == \
        f"sample-project-{VSCODE}.runai.aisingapore.net"
    assert admin.get("Deployment", VSCODE)["status"].get("availableReplicas") == 1, "apply waits until ready"

    again = reconcile("--repo", str(repo), "--dry-run", "--detailed-exitcode", "--output", "json", kubeconfig=kc)
    assert again.code == 0, str(again)
    assert again.json["summary"]["unchanged"] == 2 and again.json["summary"]["update"] == 0

    before = admin.resource_versions()
    second = apply(repo, kc)
    assert second["summary"]["unchanged"] == 2
    assert admin.resource_versions() == before, "a second apply must not write anything"


def test_changing_a_compute_block_updates_every_workspace_using_it_and_warns_of_restarts(
        repo: Repo, admin: Admin, kc: Path) -> None:
    repo.add_workspace("ann-lee-vscode", "ann-lee", compute="cpu-mid")
    apply(repo, kc)
    users = sorted(n for n in repo.workspaces() if repo.read(f"workspaces/{n}.yaml")["spec"]["compute"] == "cpu-mid")
    repo.edit("blocks/compute/cpu-mid.yaml", lambda d: d["spec"].update(cpu="6"))

    p = plan(repo, kc)
    updated = sorted(w["name"] for w in p["workspaces"] if w["action"] == "update")
    assert updated == users
    dep = next(o for o in workspace(p, users[0])["objects"] if o["kind"] == "Deployment")
    assert any(d["path"].endswith("limits.cpu") and d["desired"] == "6" for d in dep["diff"]), dep["diff"]
    text = strip_ansi(reconcile("--repo", str(repo), "--dry-run", kubeconfig=kc).stdout)
    assert "cpu-mid" in text and "restart" in text
    for name in users:
        assert name in text

    apply(repo, kc)
    limits = admin.get("Deployment", users[0])["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["cpu"] == "6"
    assert plan(repo, kc)["summary"]["update"] == 0


def test_removing_an_env_var_and_a_data_source_from_blocks_removes_them_from_the_cluster(
        repo: Repo, admin: Admin, kc: Path) -> None:
    env_file = "blocks/environments/aisg-vscode-server-v4-16-1.yaml"
    repo.edit(env_file, lambda d: d["spec"].update(env={"HF_HOME": "/cache", "EXTRA": "1"}))
    repo.write("blocks/data-sources/scratch.yaml", {
        "apiVersion": "workspaces/v1", "kind": "DataSource", "metadata": {"name": "scratch"},
        "spec": {"pvc": "scratch"}})
    admin.bound_pvc("scratch")
    repo.edit(f"workspaces/{VSCODE}.yaml", lambda d: d["spec"].update(dataSources=["sample-project-pvc", "scratch"]))
    apply(repo, kc)
    container = admin.get("Deployment", VSCODE)["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"] for e in container["env"]} >= {"HF_HOME", "EXTRA"}
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/sample-project-pvc", "/scratch", "/home/coder"]

    repo.edit(env_file, lambda d: d["spec"].update(env={"HF_HOME": "/cache"}))
    repo.edit(f"workspaces/{VSCODE}.yaml", lambda d: d["spec"].update(dataSources=["sample-project-pvc"]))
    p = plan(repo, kc)
    w = workspace(p, VSCODE)
    assert w["action"] == "update"
    diff = next(o for o in w["objects"] if o["kind"] == "Deployment")["diff"]
    removed = [d["path"] for d in diff if d["desired"] is None]
    assert any("EXTRA" in path for path in removed), diff
    assert any("scratch" in path for path in removed), diff

    apply(repo, kc)
    pod = admin.get("Deployment", VSCODE)["spec"]["template"]["spec"]
    assert "EXTRA" not in {e["name"] for e in pod["containers"][0].get("env", [])}
    assert [v["name"] for v in pod["volumes"]] == ["sample-project-pvc"]
    assert admin.names("PersistentVolumeClaim") == ["sample-project-pvc", "scratch"]


def test_deleting_a_workspace_file_tears_it_down_and_keeps_its_pvc(repo: Repo, admin: Admin, kc: Path) -> None:
    apply(repo, kc)
    repo.remove(f"workspaces/{JUPYTER}.yaml")
    p = plan(repo, kc)
    w = workspace(p, JUPYTER)
    assert w["action"] == "delete"
    assert sorted(o["kind"] for o in w["objects"]) == ["Deployment", "Ingress", "Service"]
    text = strip_ansi(reconcile("--repo", str(repo), "--dry-run", kubeconfig=kc).stdout)
    assert "sample-project-pvc" in text and "kept" in text.lower()

    apply(repo, kc)
    for kind in ("Deployment", "Service", "Ingress"):
        assert JUPYTER not in admin.names(kind)
    assert VSCODE in admin.names("Deployment")
    assert admin.names("PersistentVolumeClaim") == ["sample-project-pvc"], "data is never deleted"


def test_a_stopped_workspace_scales_to_zero_and_running_restores_it(repo: Repo, admin: Admin, kc: Path) -> None:
    apply(repo, kc)
    repo.edit(f"workspaces/{VSCODE}.yaml", lambda d: d["spec"].update(state="stopped"))
    apply(repo, kc)
    assert admin.get("Deployment", VSCODE)["spec"]["replicas"] == 0
    assert VSCODE in admin.names("Service") and VSCODE in admin.names("Ingress")
    repo.edit(f"workspaces/{VSCODE}.yaml", lambda d: d["spec"].update(state="running"))
    apply(repo, kc)
    dep = admin.get("Deployment", VSCODE)
    assert dep["spec"]["replicas"] == 1 and dep["status"].get("availableReplicas") == 1


def test_drift_made_with_another_field_manager_shows_as_an_update_and_apply_restores_it(
        repo: Repo, admin: Admin, kc: Path) -> None:
    apply(repo, kc)
    admin.apps.patch_namespaced_deployment(VSCODE, admin.ns, {"spec": {"replicas": 3}}, field_manager="kubectl-edit")
    admin.apps.patch_namespaced_deployment(
        VSCODE, admin.ns, {"spec": {"template": {"spec": {"containers": [{"name": "workspace", "image": "evil:1"}]}}}},
        field_manager="kubectl-edit")
    p = plan(repo, kc)
    w = workspace(p, VSCODE)
    assert w["action"] == "update"
    diff = {d["path"]: d for d in next(o for o in w["objects"] if o["kind"] == "Deployment")["diff"]}
    assert diff["spec.replicas"]["live"] == 3 and diff["spec.replicas"]["desired"] == 1
    assert any(v["live"] == "evil:1" for v in diff.values()), diff
    apply(repo, kc)
    dep = admin.get("Deployment", VSCODE)
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] != "evil:1"
    assert workspace(plan(repo, kc), VSCODE)["action"] == "unchanged"


def test_an_unmanaged_service_with_a_workspace_name_is_a_conflict_until_adopted(repo: Repo, admin: Admin,
                                                                                kc: Path) -> None:
    admin.core.create_namespaced_service(admin.ns, {
        "metadata": {"name": VSCODE, "labels": {"team": "other"}},
        "spec": {"ports": [{"port": 80}], "selector": {"app": "other"}}})
    before = admin.get("Service", VSCODE)["metadata"]["resourceVersion"]
    p = plan(repo, kc, code=1)  # apply would refuse it: the PR check is red before the merge
    assert workspace(p, VSCODE)["action"] == "conflict"
    assert p["summary"]["conflict"] == 1
    r = reconcile("--repo", str(repo), "--no-wait", kubeconfig=kc)
    assert r.code == 1 and "--adopt" in r.stderr, str(r)
    assert admin.get("Service", VSCODE)["metadata"]["resourceVersion"] == before, "a conflict is never touched"
    assert admin.names("Deployment") == [JUPYTER], "the conflicting workspace is left alone, the other applied"

    apply(repo, kc, "--adopt")
    svc = admin.get("Service", VSCODE)
    assert svc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "workspace-reconciler"
    assert plan(repo, kc)["summary"]["conflict"] == 0


def test_deleting_every_workspace_or_more_than_max_deletes_is_refused(repo: Repo, admin: Admin, kc: Path) -> None:
    for i in range(3):
        repo.add_workspace(f"user{i}-vscode", f"user{i}")
    apply(repo, kc, "--no-wait")
    names = repo.workspaces()
    for n in names[:3]:
        repo.remove(f"workspaces/{n}.yaml")
    r = reconcile("--repo", str(repo), "--max-deletes", "2", "--no-wait", kubeconfig=kc)
    assert r.code == 1 and "--allow-mass-delete" in r.stderr, str(r)
    assert admin.names("Deployment") == names

    for n in names[3:]:
        repo.remove(f"workspaces/{n}.yaml")
    r = reconcile("--repo", str(repo), "--no-wait", kubeconfig=kc)
    assert r.code == 1 and "--allow-mass-delete" in r.stderr, str(r)
    assert admin.names("Deployment") == names

    apply(repo, kc, "--allow-mass-delete", "--no-wait")
    assert admin.names("Deployment") == []


def _lease(admin: Admin, holder: str, renewed: dt.datetime, seconds: int) -> None:
    admin.coord.create_namespaced_lease(admin.ns, {
        "metadata": {"name": "workspace-reconciler"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": seconds,
                 "acquireTime": renewed.isoformat(), "renewTime": renewed.isoformat()}})


def test_a_lease_held_by_another_run_makes_apply_wait_then_fail_naming_the_holder(
        repo: Repo, admin: Admin, kc: Path) -> None:
    _lease(admin, "github-actions run 42", dt.datetime.now(dt.UTC), 600)
    t0 = time.monotonic()
    r = reconcile("--repo", str(repo), "--timeout", "3", "--no-wait", kubeconfig=kc)
    assert r.code == 1, str(r)
    assert "github-actions run 42" in r.stderr
    assert time.monotonic() - t0 >= 3
    assert admin.names("Deployment") == []


def test_an_expired_lease_is_taken_over(repo: Repo, admin: Admin, kc: Path) -> None:
    _lease(admin, "crashed run", dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5), 30)
    apply(repo, kc, "--no-wait")
    assert admin.names("Deployment") == [VSCODE, JUPYTER]
    assert admin.names("Deployment") and not admin.coord.list_namespaced_lease(admin.ns).items, \
        "the lease is released after the run"


def test_plan_runs_with_the_read_only_role_and_apply_with_the_apply_role(repo: Repo, admin: Admin, make_user) -> None:
    admin.install_roles()
    plan_kc = make_user(["workspace-reconciler-plan"])
    apply_kc = make_user(["workspace-reconciler-apply"])
    p = reconcile("--repo", str(repo), "--dry-run", "--output", "json", kubeconfig=plan_kc)
    assert p.code == 0 and p.json["summary"]["create"] == 2, str(p)
    refused = reconcile("--repo", str(repo), "--no-wait", kubeconfig=plan_kc)
    assert refused.code == 1 and "forbidden" in refused.stderr, str(refused)
    applied = reconcile("--repo", str(repo), "--output", "json", "--timeout", "60", kubeconfig=apply_kc)
    assert applied.code == 0, str(applied)
    assert admin.names("Deployment") == [VSCODE, JUPYTER]
    status = reconcile("status", "--repo", str(repo), "--output", "json", kubeconfig=plan_kc)
    assert status.code == 0, str(status)
    states = {w["name"]: w["state"] for w in status.json["workspaces"]}
    assert states == {VSCODE: "ready", JUPYTER: "ready"}, str(status)


class _Answer500(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"kind":"Status","message":"etcdserver: request timed out","code":500}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def broken_apiserver(tmp_path: Path) -> Iterator[Path]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer500)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    kc = tmp_path / "broken.kubeconfig"
    kc.write_text(f"""apiVersion: v1
kind: Config
current-context: broken
clusters: [{{name: broken, cluster: {{server: "http://127.0.0.1:{srv.server_address[1]}"}}}}]
users: [{{name: u, user: {{token: not-a-secret}}}}]
contexts: [{{name: broken, context: {{cluster: broken, user: u}}}}]
""")
    yield kc
    srv.shutdown()


def test_an_apiserver_answering_500_during_the_read_fails_with_one_line_and_writes_nothing(
        repo: Repo, broken_apiserver: Path) -> None:
    r = reconcile("--repo", str(repo), "--no-wait", kubeconfig=broken_apiserver, timeout=60)
    assert r.code == 1, str(r)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "500" in lines[0], str(r)


def test_an_apiserver_that_is_down_fails_with_one_line(repo: Repo, tmp_path: Path) -> None:
    kc = tmp_path / "down.kubeconfig"
    kc.write_text("""apiVersion: v1
kind: Config
current-context: down
clusters: [{name: down, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: down, context: {cluster: down, user: u}}]
""")
    r = reconcile("--repo", str(repo), "--dry-run", kubeconfig=kc, timeout=60)
    assert r.code == 1, str(r)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "connection refused" in lines[0], str(r)


def test_a_workspace_no_node_can_hold_is_reported_not_ready_with_the_reason(repo: Repo, admin: Admin,
                                                                            kc: Path) -> None:
    repo.write("blocks/compute/gpu-x8.yaml", {
        "apiVersion": "workspaces/v1", "kind": "ComputeResource", "metadata": {"name": "gpu-x8"},
        "spec": {"cpu": "8", "memory": "64Gi", "gpu": 8}})
    repo.edit("project.yaml", lambda d: d["spec"].pop("quota", None))
    repo.add_workspace("gia-ng-vscode", "gia-ng", compute="gpu-x8")
    p = plan(repo, kc)
    assert any("gia-ng-vscode" in w and "gpu" in w.lower() for w in p.get("warnings", [])), p.get("warnings")

    r = reconcile("--repo", str(repo), "--timeout", "8", "--output", "json", kubeconfig=kc)
    assert r.code == 1, str(r)
    line = next(line for line in r.stderr.splitlines() if line.startswith("error: gia-ng-vscode"))
    assert "not ready" in line and "Unschedulable" in line and "nvidia.com/gpu" in line, line
    result = workspace(r.json, "gia-ng-vscode")
    assert result["ready"] is False and "Unschedulable" in result["reason"]
    assert workspace(r.json, VSCODE)["ready"] is True


def test_status_lists_ready_stopped_missing_and_orphaned_workspaces(repo: Repo, admin: Admin, kc: Path) -> None:
    repo.add_workspace("old-one-vscode", "old-one")
    repo.edit(f"workspaces/{JUPYTER}.yaml", lambda d: d["spec"].update(state="stopped"))
    apply(repo, kc)
    repo.remove("workspaces/old-one-vscode.yaml")
    repo.add_workspace("new-one-vscode", "new-one")
    r = reconcile("status", "--repo", str(repo), "--output", "json", kubeconfig=kc)
    assert r.code == 0, str(r)
    text = r.stdout
    states = {row["name"]: row["state"] for row in r.json["workspaces"]}
    assert states == {VSCODE: "ready", JUPYTER: "stopped", "old-one-vscode": "orphaned",
                      "new-one-vscode": "missing"}, text
    human = strip_ansi(reconcile("status", "--repo", str(repo), kubeconfig=kc).stdout)
    assert f"https://sample-project-{VSCODE}.runai.aisingapore.net" in human
    assert f"kubectl -n {repo.namespace} exec deploy/{VSCODE} -- cat" in human


PLAN_TESTS = ("tests/unit/test_plan.py", "tests/unit/test_report.py")  # every user of test_plan.applied


def test_the_plan_tests_recorded_live_objects_are_what_the_api_server_returns(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """Re-records every live object the plan and report unit tests read, by running them against this apiserver.

    With RECORD_LIVE=1 the recordings replace tests/data/plan/live/ (new or changed fixtures)."""
    out = tmp_path / "live"
    out.mkdir()
    env = {**os.environ, "PLAN_LIVE_RECORD": json.dumps(
        {"kubeconfig": str(control_plane.kubeconfig), "namespace": namespace, "out": str(out)})}
    p = subprocess.run([sys.executable, "-m", "pytest", *PLAN_TESTS, "-q", "-p", "no:cacheprovider"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    recorded = {f.name: f.read_text() for f in sorted(out.glob("*.json"))}
    if os.environ.get("RECORD_LIVE") == "1":
        for f in RECORDED_LIVE.glob("*.json"):
            f.unlink()
        RECORDED_LIVE.mkdir(parents=True, exist_ok=True)
        for name, text in recorded.items():
            (RECORDED_LIVE / name).write_text(text)
    committed = {f.name: f.read_text() for f in sorted(RECORDED_LIVE.glob("*.json"))}
    assert sorted(recorded) == sorted(committed), "recordings missing or stale: rerun with RECORD_LIVE=1"
    for name, text in recorded.items():
        assert text == committed[name], f"{name} differs from what the API server returns now"


def test_a_node_pool_no_node_of_the_cluster_carries_is_warned_about_and_one_that_matches_is_not(
        repo: Repo, kc: Path) -> None:
    # The suite's nodes are labelled type=fake: the plan reads the nodes' labels from the apiserver.
    repo.edit("project.yaml", lambda d: d["spec"].update(nodePools={
        "fake": {"nodeSelector": {"type": "fake"}}, "a100": {"nodeSelector": {"type": "gpu-a100"}}}))
    repo.write("blocks/compute/cpu-pooled.yaml", {
        "apiVersion": "workspaces/v1", "kind": "ComputeResource", "metadata": {"name": "cpu-pooled"},
        "spec": {"cpu": "1", "memory": "1Gi", "gpu": 0, "nodePool": "a100"}})
    repo.add_workspace("pia-vscode", "pia", compute="cpu-pooled")
    warnings = plan(repo, kc).get("warnings", [])
    assert any(w.startswith("pia-vscode: no node matches node pool a100 (nodeSelector type=gpu-a100)")
               for w in warnings), warnings

    repo.edit("blocks/compute/cpu-pooled.yaml", lambda d: d["spec"].update(nodePool="fake"))
    warnings = plan(repo, kc).get("warnings", [])
    assert not any(w.startswith("pia-vscode") and "node pool" in w for w in warnings), warnings
