"""The Run:ai backend's user stories, end to end through the CLI against the fake Run:ai control plane.

`tests/fakerunai.py` checks every body against runapy's models (generated from Run:ai's OpenAPI
document) and moves phases asynchronously; each test asserts what a user sees (plan, exit code,
comment) and what the control plane was asked to do.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.helpers import ROOT, Run, workspace
from tests.fakegithub import FakeGitHub
from tests.fakerunai import CLUSTER, PROJECT, FakeRunai

VSCODE = "jane-doe-vscode"
JUPYTER = "john-tan-jupyterlab"


class RunaiRepo:
    """A copy of the example config repo with `backend: runai` pointed at the fake."""

    def __init__(self, path: Path, url: str) -> None:
        self.path = path
        path.mkdir(parents=True)
        for part in ("project.yaml", "blocks", "workspaces"):
            src = ROOT / part
            (path / part).parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                import shutil

                shutil.copytree(src, path / part)
            else:
                (path / part).write_text(src.read_text())
        self.edit("project.yaml", lambda p: p["spec"].update(
            backend="runai", runai={"url": url, "cluster": CLUSTER, "project": PROJECT}))

    def read(self, rel: str) -> Any:
        return yaml.safe_load((self.path / rel).read_text())

    def edit(self, rel: str, fn: Any) -> None:
        doc = self.read(rel)
        fn(doc)
        (self.path / rel).write_text(yaml.safe_dump(doc, sort_keys=False))

    def remove(self, rel: str) -> None:
        (self.path / rel).unlink()


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeRunai]:
    with FakeRunai(tmp_path / "fake-runai", step=0.2) as f:
        yield f
        assert f.schema_errors == [], "a request or answer broke Run:ai's published schema"


@pytest.fixture
def repo(tmp_path: Path, fake: FakeRunai) -> RunaiRepo:
    return RunaiRepo(tmp_path / "repo", fake.url)


def reconcile(fake: FakeRunai, repo: RunaiRepo, *args: str, secret: str | None = None,
              env: dict[str, str] | None = None) -> Run:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNAI_"))}
    e.update(fake.environment(secret=secret))
    e.update(env or {})
    p = subprocess.run([sys.executable, "-m", "reconciler", "--repo", str(repo.path), *args],
                       capture_output=True, text=True, env=e, timeout=120, cwd=ROOT)
    run = Run(p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr + p.stdout, str(run)
    assert fake.client_secret not in p.stderr + p.stdout, "the client secret was printed"
    return run


def plan(fake: FakeRunai, repo: RunaiRepo, *extra: str, code: int = 0) -> Any:
    r = reconcile(fake, repo, "--dry-run", "--output", "json", *extra)
    assert r.code == code, str(r)
    return r.json


def apply(fake: FakeRunai, repo: RunaiRepo, *extra: str, code: int = 0) -> Any:
    r = reconcile(fake, repo, "--output", "json", "--timeout", "30", *extra)
    assert r.code == code, str(r)
    return r.json if r.stdout.strip() else {}


def spec_of(fake: FakeRunai, name: str) -> dict[str, Any]:
    w = fake.named(name)
    assert w is not None, f"{name} does not exist in the fake"
    return w.spec


def test_adding_files_plans_creates_applies_and_a_second_plan_writes_nothing(fake: FakeRunai,
                                                                              repo: RunaiRepo) -> None:
    p = plan(fake, repo, "--detailed-exitcode", code=2)
    assert p["summary"]["create"] == 2
    w = workspace(p, VSCODE)
    assert [(o["kind"], o["action"]) for o in w["objects"]] == [("RunaiWorkspace", "create")]
    assert w["credentialHint"] == (f"runai workspace exec {VSCODE} -p {PROJECT} -- "
                                   "cat /home/coder/.config/code-server/config.yaml")
    assert workspace(p, JUPYTER)["credentialHint"] == f'runai workspace logs {JUPYTER} -p {PROJECT} | grep "lab?token"'
    assert any("Select-String" in n for n in workspace(p, JUPYTER)["notes"]), "the PowerShell form"
    assert fake.writes() == [], "a dry run writes nothing"

    result = apply(fake, repo)
    assert workspace(result, VSCODE)["ready"] is True
    # The URL comes from the API's connection URL, read after the workspace ran.
    assert workspace(result, VSCODE)["url"] == f"https://runai.example.test/{PROJECT}/{VSCODE}/"
    assert fake.phase(VSCODE) == "Running" and fake.phase(JUPYTER) == "Running"
    spec = spec_of(fake, VSCODE)
    notes = {a["name"]: a["value"] for a in spec["annotations"]}
    assert notes["workspace-gitops/managed-by"] == "workspace-reconciler"
    assert len(notes["workspace-gitops/spec-hash"]) == 16
    [pvc] = spec["storage"]["pvc"]
    assert {k: pvc[k] for k in ("claimName", "path", "existingPvc", "readOnly")} == {
        "claimName": "sample-project-pvc", "path": "/sample-project-pvc", "existingPvc": True, "readOnly": False}
    assert spec["exposedUrls"][0]["toolType"] == "visual-studio-code"
    assert spec["compute"]["cpuCoreRequest"] > 0 and spec["compute"]["cpuMemoryRequest"]
    jupyter = spec_of(fake, JUPYTER)
    assert isinstance(jupyter["args"], str) and "--ServerApp.root_dir=/sample-project-pvc/workspaces/john-tan" \
        in jupyter["args"], "args are one string, with the working directory on the PVC"
    assert fake.named("workspace-reconciler-lock") is None, "the lock is released"

    fake.settle()
    before = len(fake.requests)
    again = plan(fake, repo, "--detailed-exitcode")
    assert again["summary"]["unchanged"] == 2
    applied_again = reconcile(fake, repo, "--output", "json")
    assert applied_again.code == 0, str(applied_again)
    assert [r for r in fake.requests[before:] if r.method != "GET" and r.path != "/api/v1/token"] == [], \
        "a second run writes nothing, not even the lock"


def test_changing_a_block_recreates_the_workspace_and_keeps_the_pvc(fake: FakeRunai, repo: RunaiRepo) -> None:
    apply(fake, repo)
    fake.settle()
    old = fake.named(VSCODE)
    assert old is not None
    repo.edit("blocks/compute/cpu-small.yaml", lambda d: d["spec"].update(memory="6Gi"))
    p = plan(fake, repo, "--detailed-exitcode", code=2)
    w = workspace(p, VSCODE)
    assert w["action"] == "update" and w["restarts"] is True
    assert any(n.startswith("recreate:") and "data on PVCs is kept" in n and "restarts" in n for n in w["notes"])
    paths = [d["path"] for d in w["objects"][0]["diff"]]
    assert "spec.compute.cpuMemoryRequest" in paths
    assert "metadata.annotations.workspace-gitops/spec-hash" in paths

    md = reconcile(fake, repo, "--dry-run", "--output", "markdown")
    assert "recreate: Run:ai has no in-place update" in md.stdout

    apply(fake, repo)
    new = fake.named(VSCODE)
    assert new is not None and new.id != old.id, "deleted and created again"
    assert new.spec["compute"]["cpuMemoryRequest"] == "6Gi"
    assert new.spec["storage"]["pvc"][0]["claimName"] == "sample-project-pvc"
    order = [str(r) for r in fake.writes() if old.id in r.path or r.path.endswith("/workspaces")]
    assert order.index(f"DELETE /api/v1/workloads/workspaces/{old.id}") < len(order) - 1, \
        "the old one is deleted before the new one is created"


def test_stopping_suspends_and_running_resumes(fake: FakeRunai, repo: RunaiRepo) -> None:
    apply(fake, repo)
    fake.settle()
    wid = fake.named(VSCODE).id  # type: ignore[union-attr]
    repo.edit(f"workspaces/{VSCODE}.yaml", lambda d: d["spec"].update(state="stopped"))
    w = workspace(plan(fake, repo), VSCODE)
    assert w["action"] == "update" and w["restarts"] is False
    assert any(n.startswith("suspend") for n in w["notes"])
    n = len(fake.requests)
    apply(fake, repo)
    fake.settle()
    assert fake.named(VSCODE).id == wid and fake.phase(VSCODE) == "Stopped"  # type: ignore[union-attr]
    assert f"POST /api/v1/workloads/workspaces/{wid}/suspend" in [str(r) for r in fake.requests[n:]]

    repo.edit(f"workspaces/{VSCODE}.yaml", lambda d: d["spec"].update(state="running"))
    assert any(n.startswith("resume") for n in workspace(plan(fake, repo), VSCODE)["notes"])
    result = apply(fake, repo)
    assert workspace(result, VSCODE)["ready"] is True
    assert fake.phase(VSCODE) == "Running" and fake.named(VSCODE).id == wid  # type: ignore[union-attr]


def test_deleting_a_file_deletes_that_workspace_only(fake: FakeRunai, repo: RunaiRepo) -> None:
    apply(fake, repo)
    fake.settle()
    other = fake.add_workload("someone-elses-training", type="training")
    jupyter_id = fake.named(JUPYTER).id  # type: ignore[union-attr]
    repo.remove(f"workspaces/{JUPYTER}.yaml")
    w = workspace(plan(fake, repo), JUPYTER)
    assert w["action"] == "delete" and w["keptPvcs"] == ["sample-project-pvc"]
    n = len(fake.requests)
    apply(fake, repo)
    deletes = [str(r) for r in fake.requests[n:] if r.method == "DELETE"]
    assert f"DELETE /api/v1/workloads/workspaces/{jupyter_id}" in deletes
    assert len([d for d in deletes if "workspace-reconciler-lock" not in d]) == 2  # it, and the lock
    fake.settle()
    assert fake.named(JUPYTER) is None
    assert fake.named(VSCODE) is not None and fake.named(other.name) is not None


def test_an_unmanaged_workload_with_a_workspace_name_is_a_conflict_left_alone(fake: FakeRunai,
                                                                             repo: RunaiRepo) -> None:
    theirs = fake.add_workload(VSCODE, annotations=[{"name": "team", "value": "research"}])
    p = plan(fake, repo, code=1)
    assert workspace(p, VSCODE)["action"] == "conflict"
    r = reconcile(fake, repo, "--output", "json", "--timeout", "30")
    assert r.code == 1
    assert fake.named(VSCODE).id == theirs.id, "never touched without --adopt"  # type: ignore[union-attr]
    assert f"/workspaces/{theirs.id}" not in " ".join(str(x) for x in fake.writes())
    assert fake.phase(JUPYTER) != "", "the other workspace was still created"

    apply(fake, repo, "--adopt", VSCODE)
    adopted = fake.named(VSCODE)
    assert adopted is not None and adopted.id != theirs.id
    assert {a["name"] for a in adopted.spec["annotations"]} >= {"workspace-gitops/managed-by"}


def test_a_mass_delete_is_refused_and_nothing_is_written(fake: FakeRunai, repo: RunaiRepo) -> None:
    apply(fake, repo)
    fake.settle()
    for name in (VSCODE, JUPYTER):
        repo.remove(f"workspaces/{name}.yaml")
    n = len(fake.requests)
    r = reconcile(fake, repo, "--max-deletes", "1")
    assert r.code == 1 and "--allow-mass-delete" in r.stderr
    assert [x for x in fake.requests[n:] if x.method != "GET" and x.path != "/api/v1/token"] == []
    assert fake.named(VSCODE) is not None and fake.named(JUPYTER) is not None


def test_bad_credentials_are_one_clear_line_and_exit_1(fake: FakeRunai, repo: RunaiRepo) -> None:
    r = reconcile(fake, repo, "--dry-run", secret="wrong-secret")
    assert r.code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "refused the client credentials (HTTP 401)" in lines[0]
    assert "RUNAI_CLIENT_ID and RUNAI_CLIENT_SECRET" in lines[0]
    assert "wrong-secret" not in r.stderr + r.stdout
    assert fake.writes() == []

    missing = reconcile(fake, repo, "--dry-run", env={"RUNAI_CLIENT_SECRET": ""})
    assert missing.code == 1 and "must be set" in missing.stderr


def test_server_errors_and_timeouts_on_reads_are_retried_and_a_dead_api_is_one_line(fake: FakeRunai,
                                                                                   repo: RunaiRepo) -> None:
    fake.inject("GET", r"^/api/v1/workloads$", 503, times=2)
    assert plan(fake, repo)["summary"]["create"] == 2, "two 503s on the listing are retried"
    fake.inject("GET", r"^/api/v1/workloads$", 500, times=None)
    r = reconcile(fake, repo, "--dry-run")
    assert r.code == 1 and len(r.stderr.strip().splitlines()) == 1 and "HTTP 500" in r.stderr
    fake._injections.clear()
    fake.inject("GET", r"^/api/v1/clusters$", 200, delay=4, times=None)
    started = time.monotonic()
    r = reconcile(fake, repo, "--dry-run", env={"RUNAI_REQUEST_TIMEOUT": "1"})
    assert r.code == 1 and "cannot reach Run:ai" in r.stderr and "Timeout" in r.stderr, str(r)
    assert time.monotonic() - started < 60, "a stalled API is given up on, reads retried a bounded number of times"


def test_a_lock_left_by_a_dead_runner_blocks_until_its_declared_time_then_is_taken_over(
        fake: FakeRunai, repo: RunaiRepo) -> None:
    dead = fake.add_workload("workspace-reconciler-lock", annotations=[
        {"name": "workspace-gitops/lock-holder", "value": "github-actions run 41 (pid 7)"},
        {"name": "workspace-gitops/lock-seconds", "value": "600"}])
    r = reconcile(fake, repo, "--timeout", "2")
    assert r.code == 1 and "github-actions run 41" in r.stderr and "runai workspace delete" in r.stderr, str(r)
    assert fake.named(VSCODE) is None, "nothing written without the lock"

    fake.workloads[dead.id].spec["annotations"][1]["value"] = "3"  # a holder that declared 3 s
    apply(fake, repo, "--timeout", "20")
    assert fake.named(VSCODE) is not None
    assert fake.named("workspace-reconciler-lock") is None, "taken over, then released"


def test_merged_pull_request_gets_the_same_comment_as_for_kubernetes(fake: FakeRunai, repo: RunaiRepo,
                                                                     tmp_path: Path) -> None:
    with FakeGitHub() as gh:
        gh.add_pull(7, merge_commit_sha="abc123")
        gh.commit_pulls["abc123"] = [7]
        env = gh.environment(tmp_path, event_name="push", sha="abc123")
        r = reconcile(fake, repo, "--comment", "--timeout", "30", env=env)
        assert r.code == 0, str(r)
        body = gh.comments[7][-1]["body"]
    assert "<!--" in body.splitlines()[0], "the sticky marker first"
    assert f"https://runai.example.test/{PROJECT}/{VSCODE}/" in body
    assert f"runai workspace exec {VSCODE} -p {PROJECT} -- cat /home/coder/.config/code-server/config.yaml" in body
    assert fake.client_secret not in body
