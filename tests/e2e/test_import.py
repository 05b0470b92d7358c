"""`reconcile import` against the real apiserver, on a namespace seeded with hand-made workspaces.

Matching Deployment+Service+Ingress sets become workspace files; the others are reported per
object with what does not match. After the files are in the repo, the plan adopts the imported
objects in place (same uids), never deletes and re-creates them, and the next plan is unchanged.
`reconcile status --owner` then shows one user's workspaces.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ControlPlane
from tests.e2e.helpers import Admin, Repo, reconcile, workspace

pytestmark = pytest.mark.cluster

PROJECT = "sample-project"
VSCODE_IMAGE = "registry.aisingapore.net/mlops/vscode-server:4.16.1"


def _ours_selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/managed-by": "workspace-reconciler", "app.kubernetes.io/part-of": PROJECT,
            "app.kubernetes.io/instance": name}


def seed(admin: Admin, name: str, *, image: str, cpu: str, memory: str, selector: dict[str, str],
         labels: dict[str, str] | None = None, port: int = 8080, replicas: int = 1,
         volumes: list[dict[str, Any]] | None = None, mounts: list[dict[str, Any]] | None = None,
         ingress_host: str | None = None) -> None:
    """A workspace as someone made it by hand: a Deployment, a Service and (optionally) an Ingress."""
    admin.apps.create_namespaced_deployment(admin.ns, {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": selector},
                 "template": {"metadata": {"labels": selector}, "spec": {
                     "containers": [{"name": "ide", "image": image, "ports": [{"containerPort": port}],
                                     "resources": {"requests": {"cpu": cpu, "memory": memory},
                                                   "limits": {"cpu": cpu, "memory": memory}},
                                     "volumeMounts": mounts or []}],
                     "volumes": volumes or []}}}})
    admin.core.create_namespaced_service(admin.ns, {
        "metadata": {"name": name}, "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": port}]}})
    if ingress_host:
        admin.net.create_namespaced_ingress(admin.ns, {
            "metadata": {"name": name},
            "spec": {"rules": [{"host": ingress_host, "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": name, "port": {"number": 80}}}}]}}]}})


def _uids(admin: Admin, name: str) -> dict[str, str]:
    out = {}
    for kind in ("Deployment", "Service", "Ingress"):
        if name in admin.names(kind):
            out[kind] = admin.get(kind, name)["metadata"]["uid"]
    return out


PVC_VOLUME = [{"name": "data", "persistentVolumeClaim": {"claimName": "sample-project-pvc"}}]
PVC_MOUNT = [{"name": "data", "mountPath": "/sample-project-pvc"}]


def test_import_writes_matching_workspaces_reports_the_others_and_the_plan_adopts_in_place(
        repo: Repo, admin: Admin, control_plane: ControlPlane) -> None:
    kc = control_plane.kubeconfig
    # amy: made by an earlier tool with the reconciler's selector; matches cpu-small and the PVC.
    seed(admin, "amy-vscode", image=VSCODE_IMAGE, cpu="1", memory="4Gi", selector=_ours_selector("amy-vscode"),
         labels={"owner": "amy"}, volumes=PVC_VOLUME, mounts=PVC_MOUNT, ingress_host="amy.example.org")
    # carol: stopped, quantities written differently (1000m = 1, 4096Mi = 4Gi), no Ingress, owner given by flag.
    seed(admin, "carol-vscode", image=VSCODE_IMAGE, cpu="1000m", memory="4096Mi",
         selector=_ours_selector("carol-vscode"), replicas=0, volumes=PVC_VOLUME, mounts=PVC_MOUNT)
    # bob: hand-made with kubectl: nothing matches.
    seed(admin, "bob-lab", image="jupyter/base-notebook:latest", cpu="3", memory="5Gi", selector={"app": "bob-lab"},
         port=8888, volumes=[{"name": "scratch", "emptyDir": {}}],
         mounts=[{"name": "scratch", "mountPath": "/scratch"}], ingress_host="bob.example.org")
    # dan: matches the blocks, but the name is too long for the workspace's URL: the file is not kept.
    long = "dan-" + "x" * 50
    seed(admin, long, image=VSCODE_IMAGE, cpu="1", memory="4Gi", selector=_ours_selector(long),
         labels={"owner": "dan"})
    before = {n: _uids(admin, n) for n in ("amy-vscode", "carol-vscode", "bob-lab")}

    imported = reconcile("import", "--repo", str(repo), "--owner", "carol-vscode=carol", kubeconfig=kc)
    assert imported.code == 1, str(imported)  # bob-lab did not match
    out = imported.stdout
    assert "amy-vscode: wrote workspaces/amy-vscode.yaml (aisg-vscode-server-v4-16-1, cpu-small, " \
           "sample-project-pvc)" in out
    assert "note: its URL changes from https://amy.example.org to " \
           f"https://{PROJECT}-amy-vscode.runai.aisingapore.net" in out
    assert "carol-vscode: wrote workspaces/carol-vscode.yaml" in out
    assert "note: no Ingress named carol-vscode: the apply creates one" in out
    bob = out[out.index("bob-lab: not imported"):].split("\n\n")[0]
    assert "Deployment/bob-lab: selector {app=bob-lab} is not the reconciler's" in bob
    assert "Deployment/bob-lab: image jupyter/base-notebook:latest is no environment's image" in bob
    assert "Deployment/bob-lab: resources (cpu=3, memory=5Gi) match no compute size" in bob
    assert "Deployment/bob-lab: mount /scratch is a volume of type emptyDir, not a PersistentVolumeClaim" in bob
    assert "Deployment/bob-lab: owner unknown: label it owner=<login> or pass --owner bob-lab=<login>" in bob
    assert not (repo.path / "workspaces" / "bob-lab.yaml").exists()
    assert f"{long}: not imported\n  - workspaces/{long}.yaml: URL host label" in out
    assert not (repo.path / "workspaces" / f"{long}.yaml").exists()
    assert "reconcile --adopt amy-vscode --adopt carol-vscode" in imported.stderr

    amy = repo.read("workspaces/amy-vscode.yaml")
    assert amy["spec"] == {"owner": "amy", "environment": "aisg-vscode-server-v4-16-1", "compute": "cpu-small",
                           "dataSources": ["sample-project-pvc"], "state": "running"}
    assert repo.read("workspaces/carol-vscode.yaml")["spec"]["state"] == "stopped"
    assert (repo.path / "workspaces" / "amy-vscode.yaml").read_text().startswith(
        "# yaml-language-server: $schema=../schemas/workspace.json\n")
    assert reconcile("validate", "--repo", str(repo)).code == 0
    # Nothing was written to the cluster.
    assert {n: _uids(admin, n) for n in before} == before

    # The plan: the imported workspaces are conflicts until adopted, then updates; never a delete.
    plain = reconcile("--repo", str(repo), "--dry-run", "--output", "json", kubeconfig=kc)
    assert plain.code == 1 and workspace(plain.json, "amy-vscode")["action"] == "conflict", str(plain)
    adopt = ("--adopt", "amy-vscode", "--adopt", "carol-vscode")
    dry = reconcile("--repo", str(repo), "--dry-run", "--output", "json", *adopt, kubeconfig=kc)
    assert dry.code == 0, str(dry)
    for name in ("amy-vscode", "carol-vscode"):
        w = workspace(dry.json, name)
        assert w["action"] == "update", w
        assert all(o["action"] != "delete" for o in w["objects"]), w
    assert "bob-lab" not in [w["name"] for w in dry.json["workspaces"]]
    assert all(w["action"] != "delete" for w in dry.json["workspaces"])

    applied = reconcile("--repo", str(repo), "--no-wait", *adopt, kubeconfig=kc)
    assert applied.code == 0, str(applied)
    after = {n: _uids(admin, n) for n in ("amy-vscode", "carol-vscode")}
    assert after["amy-vscode"] == before["amy-vscode"]  # the same objects, taken over in place
    assert after["carol-vscode"]["Deployment"] == before["carol-vscode"]["Deployment"]
    assert after["carol-vscode"]["Service"] == before["carol-vscode"]["Service"]
    assert "Ingress" in after["carol-vscode"]  # created
    assert admin.get("Deployment", "carol-vscode")["spec"]["replicas"] == 0  # still stopped
    assert _uids(admin, "bob-lab") == before["bob-lab"]
    again = reconcile("--repo", str(repo), "--dry-run", "--output", "json", kubeconfig=kc)
    assert again.code == 0, str(again)
    assert workspace(again.json, "amy-vscode")["action"] == "unchanged"
    assert workspace(again.json, "carol-vscode")["action"] == "unchanged"

    # status --owner: one user's workspaces only.
    status = reconcile("status", "--repo", str(repo), "--owner", "amy", "--output", "json",
                       kubeconfig=kc)
    assert status.code == 0, str(status)
    assert [w["name"] for w in status.json["workspaces"]] == ["amy-vscode"]
    assert [w["name"] for w in reconcile("status", "--repo", str(repo), "--owner", "carol", "--output", "json",
                                         kubeconfig=kc).json["workspaces"]] == ["carol-vscode"]

    # Importing again finds nothing new to write and never overwrites.
    second = reconcile("import", "--repo", str(repo), "--dry-run", kubeconfig=kc)
    assert "amy-vscode" not in second.stdout and "bob-lab: not imported" in second.stdout


def test_offboarding_one_pr_lists_the_kept_claims_and_status_owner_empties(repo: Repo, admin: Admin,
                                                                          control_plane: ControlPlane) -> None:
    kc = control_plane.kubeconfig
    repo.add_workspace("amy-vscode", "amy")
    assert reconcile("--repo", str(repo), "--no-wait", kubeconfig=kc).code == 0
    assert [w["name"] for w in reconcile("status", "--repo", str(repo), "--owner", "amy", "--output", "json",
                                         kubeconfig=kc).json["workspaces"]] == ["amy-vscode"]
    repo.remove("workspaces/amy-vscode.yaml")  # the offboarding PR
    plan = reconcile("--repo", str(repo), "--dry-run", kubeconfig=kc)
    assert "data is kept: PVC sample-project-pvc is not deleted" in plan.stdout, str(plan)
    # Until the merge, status --owner shows the orphan by its owner's prefix; after it, nothing.
    orphan = reconcile("status", "--repo", str(repo), "--owner", "amy", "--output", "json",
                       kubeconfig=kc).json["workspaces"]
    assert [(w["name"], w["state"]) for w in orphan] == [("amy-vscode", "orphaned")]
    assert reconcile("--repo", str(repo), "--no-wait", kubeconfig=kc).code == 0
    assert reconcile("status", "--repo", str(repo), "--owner", "amy", "--output", "json",
                     kubeconfig=kc).json["workspaces"] == []
    assert admin.names("PersistentVolumeClaim") == ["sample-project-pvc"]
