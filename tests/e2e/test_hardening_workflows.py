"""Issue #11 items 2, 3 and 7 through the workflows' own `run:` steps (tests/e2e/workflow_runner.py)
against the fake GitHub: the ownership check runs trusted code, and CI installs pinned, hashed
dependencies.

The "GitHub" repository here holds the reconciler's own code next to the config files, as this
repository does, so a pull request can edit ``reconciler/`` and the runner runs whichever code
the workflow installs (``pip install .`` of the checkout puts the checkout first on PYTHONPATH).
"""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import pytest

from tests.e2e import test_pull_request_flow as flow
from tests.e2e.helpers import ROOT, Repo
from tests.e2e.test_pull_request_flow import EXAMPLES, Loop, make_loop
from tests.e2e.workflow_runner import JobRun, dispatch_event
from tests.fakegithub import FakeGitHub

github = flow.github  # the fake GitHub, and the loop on the real control plane: the same fixtures
loop = flow.loop


@pytest.fixture
def trusted_loop(tmp_path: Path, github: FakeGitHub) -> Loop:
    """The config repo with the reconciler's code in it; carol administers, bob has a workspace."""
    unused = base64.b64encode(b"apiVersion: v1\nkind: Config\nusers: [{name: x, user: {token: not-used}}]\n")
    loop = make_loop(tmp_path, github, "sample-project", {"KUBECONFIG_PLAN": unused.decode()}, {})
    loop.files.edit("project.yaml", lambda doc: doc["spec"].update(admins=["carol"]))
    loop.files.add_workspace("bob-vscode", "bob")
    shutil.copytree(ROOT / "reconciler", loop.files.path / "reconciler",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "requirements.lock", loop.files.path / "requirements.lock")
    loop.repo.commit("the reconciler and its config; carol administers; bob has a workspace")
    return loop


def allow_everything(files: Repo) -> None:
    """A hostile PR: the ownership check now allows anything, and alice stops bob's workspace."""
    policy = files.path / "reconciler" / "policy.py"
    policy.write_text(policy.read_text(encoding="utf-8")
                      + "\n\ndef check_ownership(*args: object, **kwargs: object) -> list[object]:\n"
                        "    return []  # everyone may change everything\n", encoding="utf-8")
    files.edit("workspaces/bob-vscode.yaml", lambda doc: doc["spec"].update(state="stopped"))


# ---------------------------------------------------------------------------------------------
# 2. The ownership check runs the base commit's code against the head's files


def test_a_pull_request_that_edits_the_ownership_check_to_allow_everything_is_still_refused(
        trusted_loop: Loop) -> None:
    loop = trusted_loop
    event = loop.open_pull(5, "alice/everything", "alice", allow_everything)
    results = loop.workflow("plan.yml", event)

    validate = results["validate"].step("Validate")
    assert validate.returncode == 1, str(results["validate"])
    errors = validate.annotations()
    assert any(re.match(r"::error file=reconciler/policy\.py,line=1,col=1::alice may not change reconciler/", e)
               for e in errors), errors
    assert any(re.match(r"::error file=workspaces/bob-vscode\.yaml,.*alice may not change a workspace owned by bob",
                        e) for e in errors), errors
    assert results["plan"].skipped


def test_the_base_commits_code_checks_the_heads_files(trusted_loop: Loop) -> None:
    loop = trusted_loop
    event = loop.open_pull(6, "alice/vscode", "alice", lambda files: files.add_workspace("alice-vscode", "alice"))
    validate = loop.workflow("plan.yml", event, jobs=("validate",))["validate"]
    assert validate.ok, str(validate)
    assert "ok: 4 workspaces" in validate.step("Validate").stderr, "the head's new workspace file was read"


# ---------------------------------------------------------------------------------------------
# 7. One conflict blocks one workspace; a failed apply says why on the merged PR; manual inputs


APPLY_MARKER = "<!-- workspace-gitops:apply -->"


def manual_apply(loop: Loop, **inputs: str) -> JobRun:
    """Someone presses "Run workflow" on apply.yml with these inputs (approved for `production`)."""
    event = dispatch_event(loop.github.repository, sha=loop.repo.sha("main"), actor="maintainer")
    event.payload["inputs"] = dict(inputs)
    return loop.workflow("apply.yml", event)["apply"]


@pytest.mark.cluster
def test_a_conflict_on_one_workspace_leaves_it_alone_applies_the_others_and_says_so_on_the_merged_pr(
        loop: Loop) -> None:
    loop.converge_main()
    assert loop.admin is not None
    loop.admin.core.create_namespaced_service(loop.namespace, {
        "metadata": {"name": "ann-lee-vscode", "labels": {"team": "other"}},
        "spec": {"ports": [{"port": 80}], "selector": {"app": "other"}}})
    foreign = loop.admin.get("Service", "ann-lee-vscode")["metadata"]["resourceVersion"]

    def two_workspaces(files: Repo) -> None:
        files.add_workspace("ann-lee-vscode", "ann-lee")
        files.add_workspace("ann-lee-lab", "ann-lee", environment="aisg-jupyterlab-server-0-1-0")

    loop.open_pull(1, "ann-lee/two", "ann-lee", two_workspaces)
    run = loop.workflow("apply.yml", loop.merge_pull(1, "ann-lee/two"))["apply"]

    step = run.step("Apply")
    assert step.returncode == 1, str(run)
    assert "error: ann-lee-vscode was left alone: Service/" in step.stderr
    assert "ann-lee-lab" in loop.live("Deployment"), "the other workspace of the same merge was applied"
    assert "ann-lee-vscode" not in loop.live("Deployment")
    assert loop.admin.get("Service", "ann-lee-vscode")["metadata"]["resourceVersion"] == foreign
    (comment,) = [c["body"] for c in loop.comments(1) if APPLY_MARKER in c["body"]]
    assert "ann-lee-vscode was left alone" in comment and "--adopt ann-lee-vscode" in comment
    assert run.step("Remove the kubeconfig").ok

    adopted = manual_apply(loop, adopt="ann-lee-vscode", **{"allow-mass-delete": "false"})
    assert adopted.ok, str(adopted)
    labels = loop.admin.get("Service", "ann-lee-vscode")["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "workspace-reconciler"
    assert "ann-lee-vscode" in loop.live("Deployment")
    loop.assert_no_secret_left_the_runner()


@pytest.mark.cluster
def test_a_refused_mass_delete_comments_the_reason_and_the_manual_run_with_allow_mass_delete_applies_it(
        loop: Loop) -> None:
    loop.converge_main()

    def delete_all(files: Repo) -> None:
        for name in EXAMPLES:
            files.remove(f"workspaces/{name}.yaml")

    loop.open_pull(2, "carol/teardown", "carol", delete_all)
    run = loop.workflow("apply.yml", loop.merge_pull(2, "carol/teardown"))["apply"]
    assert run.step("Apply").returncode == 1, str(run)
    assert set(EXAMPLES) <= set(loop.live("Deployment")), "nothing was deleted"
    (comment,) = [c["body"] for c in loop.comments(2) if APPLY_MARKER in c["body"]]
    assert "apply failed" in comment and "--allow-mass-delete" in comment and "Run workflow" in comment

    applied = manual_apply(loop, adopt="", **{"allow-mass-delete": "true"})
    assert applied.ok, str(applied)
    assert not set(EXAMPLES) & set(loop.live("Deployment"))
    loop.assert_no_secret_left_the_runner()
