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

from tests.e2e.helpers import ROOT, Repo
from tests.e2e.test_pull_request_flow import Loop, github, make_loop  # noqa: F401 - github is a fixture
from tests.fakegithub import FakeGitHub


@pytest.fixture
def trusted_loop(tmp_path: Path, github: FakeGitHub) -> Loop:  # noqa: F811
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
