"""`reconcile import`'s matching of live Deployments against the blocks (pure; the cluster side is
tests/e2e/test_import.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reconciler.changeset import ObjectId
from reconciler.importer import candidates, file_text
from reconciler.validate import load_repo

NS = "sample-project"
VSCODE = "registry.aisingapore.net/mlops/vscode-server:4.16.1"


def deployment(name: str, *, image: str = VSCODE, port: int = 8080, resources: dict[str, str] | None = None,
               mounts: list[dict[str, Any]] | None = None, volumes: list[dict[str, Any]] | None = None,
               labels: dict[str, str] | None = None, containers: int = 1) -> dict[str, Any]:
    selector = {"app.kubernetes.io/managed-by": "workspace-reconciler", "app.kubernetes.io/part-of": NS,
                "app.kubernetes.io/instance": name}
    container = {"name": "ide", "image": image, "ports": [{"containerPort": port}],
                 "resources": {"requests": resources or {"cpu": "1", "memory": "4Gi"}},
                 "volumeMounts": mounts or []}
    return {"kind": "Deployment", "metadata": {"name": name, "labels": {"owner": "amy", **(labels or {})}},
            "spec": {"selector": {"matchLabels": selector},
                     "template": {"spec": {"containers": [container] * containers, "volumes": volumes or []}}}}


def match(example_repo: Path, dep: dict[str, Any]) -> Any:
    repo = load_repo(example_repo)
    found = candidates(repo, {ObjectId("Deployment", NS, dep["metadata"]["name"]): dep}, {})
    return repo, found


def test_a_gpu_workspace_matches_the_gpu_compute_size_and_its_file_validates(example_repo: Path) -> None:
    dep = deployment("amy-train", resources={"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1"})
    repo, [c] = match(example_repo, dep)
    assert c.matches and (c.environment, c.compute, c.data_sources) == ("aisg-vscode-server-v4-16-1", "gpu-a100-1", [])
    (example_repo / "workspaces" / "amy-train.yaml").write_text(file_text(repo, c))
    assert load_repo(example_repo).workspaces["amy-train"].spec.compute == "gpu-a100-1"


def test_each_mismatch_is_named(example_repo: Path) -> None:
    pvc = [{"name": "d", "persistentVolumeClaim": {"claimName": "sample-project-pvc"}}]
    _, [c] = match(example_repo, deployment("amy-x", port=9000, volumes=pvc,
                                            mounts=[{"name": "d", "mountPath": "/sample-project-pvc",
                                                     "readOnly": True}]))
    assert c.problems == [
        "Deployment/amy-x: container port [9000] is not environment aisg-vscode-server-v4-16-1's port 8080",
        "Deployment/amy-x: mount /sample-project-pvc of claim sample-project-pvc is no data source's "
        "(blocks/data-sources/ has: sample-project-pvc (claim sample-project-pvc at /sample-project-pvc))",
    ]
    _, [two] = match(example_repo, deployment("amy-y", containers=2))
    assert two.problems == ["Deployment/amy-y: 2 containers; a workspace has exactly one"]
    _, [prefix] = match(example_repo, deployment("shared-box"))
    assert prefix.problems == ["Deployment/shared-box: name does not start with its owner's 'amy-' (project.yaml sets "
                               "ownerPrefix: true); a workspace cannot be renamed in place"]


def test_ours_and_the_repos_own_workspaces_are_not_candidates(example_repo: Path) -> None:
    ours = deployment("amy-z", labels={"app.kubernetes.io/managed-by": "workspace-reconciler",
                                       "app.kubernetes.io/part-of": NS})
    assert match(example_repo, ours)[1] == []
    assert match(example_repo, deployment("jane-doe-vscode"))[1] == []
