"""Issue #11 (hardening) in reconciler.policy: who may change what (items 1 and 6)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.unit.test_policy import Repo, messages, workspace

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = "it belongs to the platform team (CODEOWNERS also requires their review; ask a platform admin: carol)"


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path / "config")


# ---------------------------------------------------------------------------------------------
# 1. An allow-list: a non-admin may change only their own workspace files


@pytest.mark.parametrize(
    "path",
    [
        "setup.py",
        "conftest.py",
        "sitecustomize.py",
        "Makefile",
        ".pre-commit-config.yaml",
        "scripts/demo.sh",
        "tools/anything.py",
        "tests/conftest.py",
        "schemas/workspace.schema.json",
        "workspaces/README.md",
        "workspaces/alice/alice-vscode.yaml",
        ".github/CODEOWNERS",
    ],
)
def test_a_non_admin_changing_any_file_outside_their_workspace_files_is_refused(repo: Repo, path: str) -> None:
    repo.write(path, "x = 1\n")
    repo.write("workspaces/alice-vscode.yaml", workspace("alice-vscode", "alice"))
    repo.commit("alice adds her workspace and one more file")
    errors = repo.check("alice")
    assert [e.path for e in errors] == [path], messages(errors)
    assert errors[0].message.startswith(f"alice may not change {path}: ") or path.startswith(".github/")
    assert "ask a platform admin: carol" in errors[0].message


def test_a_non_admin_deleting_or_moving_a_file_outside_workspaces_is_refused(repo: Repo) -> None:
    repo.write("README.md", "docs\n")
    repo.write("workspaces/alice-vscode.yaml", workspace("alice-vscode", "alice"))
    repo.git.git.add("-A")
    repo.git.git.commit("-q", "--amend", "--no-edit")  # both are on the PR's base now
    repo.git.git.branch("-f", "main", "HEAD")
    (repo.root / "README.md").unlink()
    repo.git.git.mv("workspaces/alice-vscode.yaml", "alice-vscode.yaml")
    repo.commit("alice deletes the readme and moves her workspace out of workspaces/")
    assert sorted(e.path for e in repo.check("alice")) == ["README.md", "alice-vscode.yaml"]


def test_a_workspace_file_that_is_a_symlink_is_refused(repo: Repo) -> None:
    os.symlink("../project.yaml", repo.root / "workspaces" / "alice-vscode.yaml")
    repo.commit("alice adds a symlink")
    assert messages(repo.check("alice")) == [
        "workspaces/alice-vscode.yaml:1:1: alice may not add workspaces/alice-vscode.yaml: a workspace file "
        "must be a regular file, not a symlink or submodule (ask a platform admin: carol)"
    ]


def test_an_admin_may_still_change_any_file(repo: Repo) -> None:
    repo.write("setup.py", "x = 1\n")
    repo.write("scripts/x.sh", "echo\n")
    repo.commit("carol adds tooling")
    assert repo.check("carol") == []


def test_codeowners_gives_the_platform_team_every_path_but_workspaces() -> None:
    rules: list[tuple[str, list[str]]] = []
    for line in (ROOT / ".github" / "CODEOWNERS").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            pattern, *owners = line.split()
            rules.append((pattern, owners))

    def owners(path: str) -> list[str]:  # GitHub: the last matching pattern wins
        found: list[str] = []
        for pattern, who in rules:
            regex = re.escape(pattern.strip("/")).replace(r"\*", "[^/]*")
            anchored = pattern.startswith("/") or "/" in pattern.strip("/")
            if pattern == "*" or re.match(("^" if anchored else "(^|.*/)") + regex + "(/|$)", path):
                found = who
        return found

    for path in ("setup.py", "conftest.py", "reconciler/cli.py", ".github/workflows/plan.yml", "blocks/x.yaml",
                 "project.yaml", "requirements.lock", "docs/SAFETY.md", "deep/er/file.txt"):
        assert owners(path) == ["@platform-team"], path
    assert owners("workspaces/alice-vscode.yaml") == [], "workspace files are left to `validate --actor`"
