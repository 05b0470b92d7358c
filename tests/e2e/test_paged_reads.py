"""The plan's read is paged and keeps only what the plan needs, against the real kube-apiserver.

A tiny page size (`ClusterOptions.list_page_size`, set only by tests) makes every LIST span many
pages: the plan must still see every object; objects of others (many ConfigMaps and Services) must
not change it, unless one has the name of an object we want (a conflict).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import run
from reconciler.cluster import Cluster, ClusterOptions
from reconciler.plan import ObjectId, PlanOptions
from reconciler.render import render
from reconciler.report import plan_json
from reconciler.validate import load_repo
from tests.conftest import ControlPlane
from tests.e2e.helpers import Admin, Repo, reconcile

pytestmark = pytest.mark.cluster

WORKSPACES = [f"user{i}-vscode" for i in range(5)]


def the_plan(repo: Repo, kc: Path, page: int) -> dict:
    loaded = load_repo(repo.path)
    desired = render(loaded)
    result = run.reconcile(desired, loaded.project.metadata.name, loaded.project.namespace,
                           run.RunOptions(plan=PlanOptions(), dry_run=True,
                                          cluster=ClusterOptions(kubeconfig=str(kc), list_page_size=page)))
    return plan_json(result.plan)


def test_a_paged_read_sees_every_object_and_others_objects_do_not_change_the_plan(
        repo: Repo, admin: Admin, control_plane: ControlPlane) -> None:
    kc = control_plane.kubeconfig
    for i, name in enumerate(WORKSPACES):
        repo.add_workspace(name, f"user{i}")
    r = reconcile("--repo", str(repo), "--no-wait", "--output", "json", kubeconfig=kc)
    assert r.code == 0, str(r)
    ours = sorted(admin.names("Deployment"))
    assert len(ours) == len(WORKSPACES) + 2  # the example's two workspaces and ours

    # One workspace file changed, so the plan has something to find on a late page.
    repo.edit(f"workspaces/{WORKSPACES[-1]}.yaml", lambda d: d["spec"].update(state="stopped"))
    paged = the_plan(repo, kc, page=2)
    whole = the_plan(repo, kc, page=5000)
    assert paged == whole
    assert paged["summary"]["unchanged"] == len(ours) - 1 and paged["summary"]["update"] == 1
    assert paged["summary"]["conflict"] == 0 and paged["summary"]["create"] == 0

    # Many objects of others in the namespace: the plan stays the same.
    for i in range(60):
        admin.core.create_namespaced_config_map(admin.ns, {"metadata": {"name": f"other-{i}"},
                                                           "data": {"blob": "x" * 2000}})
    for i in range(8):
        admin.core.create_namespaced_service(admin.ns, {
            "metadata": {"name": f"other-svc-{i}", "labels": {"app": "other"}},
            "spec": {"selector": {"app": "other"}, "ports": [{"port": 80}]}})
    assert the_plan(repo, kc, page=2) == paged

    # What the read keeps: ours with only our managedFields, nothing of others' not named like ours.
    c = Cluster(admin.ns, ClusterOptions(kubeconfig=str(kc), list_page_size=2))
    wanted = {ObjectId(o["kind"], admin.ns, o["metadata"]["name"]) for w in render(load_repo(repo.path))
              for o in w.objects}
    live = c.read_live(["sample-project-pvc"], wanted=wanted)
    assert c.requests >= 3 * 4 + 1 + 1, "every kind took several pages"
    assert sorted(oid.name for oid in live.objects if oid.kind == "Deployment") == ours
    assert not any(oid.name.startswith("other-") for oid in live.objects)
    for obj in live.objects.values():
        assert {m["manager"] for m in obj["metadata"]["managedFields"]} == {"workspace-reconciler"}
    assert live.pvcs == {"sample-project-pvc": "Bound"}
    everything = Cluster(admin.ns, ClusterOptions(kubeconfig=str(kc), list_page_size=3)).read_live()
    assert {oid.name for oid in everything.objects if oid.name.startswith("other-svc-")} == {
        f"other-svc-{i}" for i in range(8)}, "without `wanted`, others' objects are all read"

    # An object of someone else with the name of one we want is still found on its page: a conflict.
    repo.add_workspace("zed-vscode", "zed")
    admin.core.create_namespaced_service(admin.ns, {
        "metadata": {"name": "zed-vscode"}, "spec": {"selector": {"app": "zed"}, "ports": [{"port": 80}]}})
    conflicted = the_plan(repo, kc, page=2)
    assert conflicted["summary"]["conflict"] == 1
    zed = next(w for w in conflicted["workspaces"] if w["name"] == "zed-vscode")
    assert [(o["kind"], o["action"]) for o in zed["objects"] if o["action"] == "conflict"] == [("Service", "conflict")]
