"""Issue #11 item 7: one conflict blocks one workspace, not everyone; a failed apply says so on the
merged PR. The CLI runs against a stand-in for reconciler.cluster.Cluster (the real one is
exercised in tests/e2e/test_hardening_conflicts.py) and the fake GitHub."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from reconciler import cluster as cluster_module
from reconciler.cli import main
from reconciler.errors import ClusterError
from reconciler.plan import Action, LiveState, ObjectId, Plan, WorkspaceResult
from tests.fakegithub import FakeGitHub

NS = "demo"


def foreign_service(name: str) -> dict[str, Any]:
    """A Service somebody else made, with a workspace's name."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": "7",
                         "labels": {"team": "other"}},
            "spec": {"ports": [{"port": 80}]}}


def ours(kind: str, name: str, project: str = "demo") -> dict[str, Any]:
    labels = {"app.kubernetes.io/managed-by": "workspace-reconciler", "app.kubernetes.io/part-of": project,
              "app.kubernetes.io/instance": name}
    return {"kind": kind, "metadata": {"name": name, "namespace": NS, "uid": f"uid-{kind}-{name}", "labels": labels}}


class FakeCluster:
    """reconciler.cluster.Cluster's surface, over a scripted namespace; records what apply would write."""

    live: dict[ObjectId, dict[str, Any]] = {}
    writes: list[str] = []
    fail_apply: str | None = None

    def __init__(self, namespace: str, opts: object = None) -> None:
        self.namespace = namespace

    def read_live(self, claims: Any = (), **_: object) -> LiveState:
        return LiveState(dict(FakeCluster.live), {c: "Bound" for c in claims}, [8])

    @contextlib.contextmanager
    def acquire_lease(self, opts: object) -> Iterator[None]:
        yield

    def apply(self, plan: Plan) -> dict[str, WorkspaceResult]:
        if FakeCluster.fail_apply:
            raise ClusterError(FakeCluster.fail_apply)
        for w in plan.workspaces:
            if w.action in (Action.CREATE, Action.UPDATE, Action.DELETE):
                FakeCluster.writes += [f"{o.action.value} {o.id}" for o in w.objects
                                       if o.action is not Action.UNCHANGED]
        return {w.name: WorkspaceResult(ready=None) for w in plan.workspaces}


@pytest.fixture(autouse=True)
def fake_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeCluster]]:
    monkeypatch.setattr(cluster_module, "Cluster", FakeCluster)
    FakeCluster.live, FakeCluster.writes, FakeCluster.fail_apply = {}, [], None
    yield FakeCluster


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(main, list(args), env=env)
    assert "Traceback" not in result.output, result.output
    return result


def conflict_on(*names: str) -> None:
    FakeCluster.live = {ObjectId("Service", NS, n): foreign_service(n) for n in names}


def written(name: str) -> list[str]:
    return [w for w in FakeCluster.writes if w.endswith(f"/{name}")]


def test_a_conflict_leaves_that_workspace_alone_and_applies_the_others(base_repo: Path) -> None:
    conflict_on("alice-code")
    result = run("--repo", str(base_repo), "--no-wait")
    assert result.exit_code == 1, result.output
    assert written("alice-code") == [], "the refused workspace is left alone"
    assert sorted(written("bob-lab")) == ["create Deployment/demo/bob-lab", "create Ingress/demo/bob-lab",
                                          "create Service/demo/bob-lab"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: alice-code was left alone: Service/demo/alice-code exists and is not managed by "
        "workspace-reconciler; rerun with --adopt alice-code to take it over"
    ]


def test_adopt_names_the_workspace_to_take_over_and_the_others_stay_refused(base_repo: Path) -> None:
    conflict_on("alice-code", "bob-lab")
    result = run("--repo", str(base_repo), "--no-wait", "--adopt", "alice-code")
    assert result.exit_code == 1, result.output
    assert "update Service/demo/alice-code" in FakeCluster.writes
    assert written("bob-lab") == []
    assert "rerun with --adopt bob-lab" in result.stderr and "--adopt alice-code" not in result.stderr


def test_adopt_may_be_given_for_several_workspaces_and_bare_adopt_takes_every_conflict(base_repo: Path) -> None:
    conflict_on("alice-code", "bob-lab")
    assert run("--repo", str(base_repo), "--no-wait", "--adopt", "alice-code", "--adopt", "bob-lab").exit_code == 0
    FakeCluster.writes = []
    assert run("--repo", str(base_repo), "--no-wait", "--adopt").exit_code == 0
    assert "update Service/demo/bob-lab" in FakeCluster.writes


def test_adopt_of_a_workspace_that_is_not_in_the_repo_is_a_usage_error(base_repo: Path) -> None:
    result = run("--repo", str(base_repo), "--no-wait", "--adopt", "nobody-vscode")
    assert result.exit_code == 64, result.output
    assert "nobody-vscode" in result.stderr
    assert FakeCluster.writes == []


def test_a_dry_run_with_a_conflict_shows_the_refusal_and_exits_1(base_repo: Path) -> None:
    conflict_on("alice-code")
    result = run("--repo", str(base_repo), "--dry-run")
    assert result.exit_code == 1
    assert "rerun with --adopt alice-code" in result.stderr
    assert FakeCluster.writes == []


def test_the_mass_delete_guard_still_refuses_the_whole_apply(base_repo: Path) -> None:
    conflict_on("alice-code")
    for i in range(6):
        FakeCluster.live[ObjectId("Deployment", NS, f"old{i}")] = ours("Deployment", f"old{i}")
    result = run("--repo", str(base_repo), "--no-wait")
    assert result.exit_code == 1
    assert "--allow-mass-delete" in result.stderr
    assert FakeCluster.writes == [], "a mass delete refuses everything, as before"


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        fake.add_pull(7, merged=True, merge_commit_sha="c" * 40)
        fake.commit_pulls["c" * 40] = [7]
        yield fake


def test_the_refusal_is_reported_on_the_merged_pull_request(base_repo: Path, tmp_path: Path,
                                                           github: FakeGitHub) -> None:
    conflict_on("alice-code")
    env = github.environment(tmp_path, event_name="push", sha="c" * 40)
    result = run("--repo", str(base_repo), "--no-wait", "--comment", env=env)
    assert result.exit_code == 1
    (comment,) = github.comments[7]
    assert "alice-code" in comment["body"] and "rerun with --adopt alice-code" in comment["body"]
    assert "bob-lab" in comment["body"]


def test_a_failed_apply_comments_on_the_merged_pull_request_with_the_reason_and_how_to_rerun(
        base_repo: Path, tmp_path: Path, github: FakeGitHub) -> None:
    FakeCluster.fail_apply = "apply stopped: cannot reach the API server at https://k8s: connection refused"
    env = github.environment(tmp_path, event_name="push", sha="c" * 40)
    result = run("--repo", str(base_repo), "--no-wait", "--comment", env=env)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == f"error: {FakeCluster.fail_apply} (the next run writes what is missing)" \
        or result.stderr.splitlines()[-1] == f"error: {FakeCluster.fail_apply}"
    (comment,) = github.comments[7]
    body = comment["body"]
    assert body.startswith("<!-- workspace-gitops:apply -->")
    assert "cannot reach the API server at https://k8s: connection refused" in body
    assert "Run workflow" in body and "adopt" in body and "allow-mass-delete" in body
