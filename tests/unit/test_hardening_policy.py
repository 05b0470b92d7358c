"""Issue #11 (hardening) in reconciler.policy: who may change what (items 1 and 6)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.errors import GitHubError
from reconciler.github import team_membership
from reconciler.policy import Ownership, review_ownership
from tests.fakegithub import FakeGitHub
from tests.unit.test_policy import PROJECT, Repo, messages, workspace

ROOT = Path(__file__).resolve().parents[2]


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


# ---------------------------------------------------------------------------------------------
# 6. Admins without a dead end: the bootstrap with `admins: []`, and GitHub teams as admins


NO_ADMINS = PROJECT.replace("admins: [carol]", "admins: []")
BOOTSTRAP_NOTICE = "project.yaml lists no admins yet"


@pytest.fixture
def bootstrap(tmp_path: Path) -> Repo:
    return Repo(tmp_path / "config", project=NO_ADMINS)


def test_with_no_admins_at_base_the_pr_that_sets_the_first_admins_passes_with_a_notice(bootstrap: Repo) -> None:
    bootstrap.write("project.yaml", PROJECT.replace("admins: [carol]", "admins: [alice, acme/platform]"))
    bootstrap.write("blocks/compute/cpu-mid.yaml", "kind: ComputeResource\nspec: {cpu: '8'}\n")
    bootstrap.commit("alice sets up the platform")
    review = review_ownership(bootstrap.root, "alice", "main")
    assert review.errors == []
    (notice,) = review.notices
    assert notice.startswith(BOOTSTRAP_NOTICE) and "CODEOWNERS" in notice
    assert "blocks/compute/cpu-mid.yaml" in notice and "project.yaml" in notice


def test_once_admins_are_set_the_bootstrap_is_over(bootstrap: Repo) -> None:
    bootstrap.write("project.yaml", PROJECT.replace("admins: [carol]", "admins: [alice]"))
    bootstrap.commit("alice sets the first admin")
    bootstrap.git.git.branch("-f", "main", "HEAD")  # merged
    bootstrap.write("blocks/compute/cpu-mid.yaml", "kind: ComputeResource\nspec: {cpu: '8'}\n")
    bootstrap.commit("bob edits a block")
    assert messages(bootstrap.check("bob")) == [
        "blocks/compute/cpu-mid.yaml:1:1: bob may not change blocks/: it belongs to the platform team "
        "(CODEOWNERS also requires their review; ask a platform admin: alice)"
    ]


def test_with_no_admins_workspace_ownership_is_still_enforced(bootstrap: Repo) -> None:
    bootstrap.write("workspaces/bob-vscode.yaml", workspace("bob-vscode", "bob", compute="gpu"))
    bootstrap.commit("alice edits bob's workspace")
    review = review_ownership(bootstrap.root, "alice", "main")
    assert [e.message for e in review.errors] == [
        "alice may not change a workspace owned by bob (ask bob or a platform admin (project.yaml lists none))"
    ]
    assert review.notices == []


def test_validate_shows_the_bootstrap_notice_as_a_github_annotation(bootstrap: Repo) -> None:
    bootstrap.write("project.yaml", PROJECT.replace("admins: [carol]", "admins: [alice]"))
    bootstrap.commit("alice sets the first admin")
    result = CliRunner().invoke(main, ["validate", "--repo", str(bootstrap.root), "--format", "github",
                                       "--actor", "alice", "--base", "main"])
    notices = [line for line in result.stdout.splitlines() if line.startswith("::notice ")]
    assert len(notices) == 1 and notices[0].startswith("::notice title=Ownership::project.yaml lists no admins yet")


def test_a_member_of_an_admin_team_is_an_admin(repo: Repo) -> None:
    repo.write("project.yaml", PROJECT.replace("admins: [carol]", "admins: [carol, acme/platform]"))
    repo.commit("carol adds the team")
    repo.git.git.branch("-f", "main", "HEAD")
    repo.write("blocks/compute/cpu-mid.yaml", "kind: ComputeResource\nspec: {cpu: '8'}\n")
    repo.commit("dave edits a block")
    asked: list[tuple[str, str]] = []

    def is_member(team: str, login: str) -> bool:
        asked.append((team, login))
        return (team, login) == ("acme/platform", "dave")

    assert review_ownership(repo.root, "dave", "main", is_member=is_member) == Ownership([], [])
    assert asked == [("acme/platform", "dave")]
    erin = review_ownership(repo.root, "erin", "main", is_member=is_member)
    assert [e.path for e in erin.errors] == ["blocks/compute/cpu-mid.yaml"]
    assert "ask a platform admin: carol, acme/platform" in erin.errors[0].message


def test_without_a_token_for_teams_a_team_is_never_an_admin_and_a_notice_says_why(repo: Repo) -> None:
    repo.write("project.yaml", PROJECT.replace("admins: [carol]", "admins: [acme/platform]"))
    repo.commit("the team administers")
    repo.git.git.branch("-f", "main", "HEAD")
    repo.write("blocks/compute/cpu-mid.yaml", "kind: ComputeResource\nspec: {cpu: '8'}\n")
    repo.commit("dave edits a block")
    review = review_ownership(repo.root, "dave", "main")
    assert [e.path for e in review.errors] == ["blocks/compute/cpu-mid.yaml"]
    (notice,) = review.notices
    assert "acme/platform" in notice and "GITHUB_TEAMS_TOKEN" in notice


def test_a_failed_team_lookup_is_a_notice_and_counts_as_not_a_member(repo: Repo) -> None:
    repo.write("project.yaml", PROJECT.replace("admins: [carol]", "admins: [acme/platform]"))
    repo.commit("the team administers")
    repo.git.git.branch("-f", "main", "HEAD")
    repo.write("setup.py", "x\n")
    repo.commit("dave adds setup.py")

    def unreachable(team: str, login: str) -> bool:
        raise GitHubError("GET /orgs/acme/teams/platform/memberships/dave: 403 Forbidden")

    review = review_ownership(repo.root, "dave", "main", is_member=unreachable)
    assert [e.path for e in review.errors] == ["setup.py"]
    assert review.notices == ["cannot tell whether dave is in the admin team acme/platform: "
                              "GET /orgs/acme/teams/platform/memberships/dave: 403 Forbidden"]


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        yield fake


def test_team_membership_is_read_with_the_teams_token(fake_github: FakeGitHub, tmp_path: Path) -> None:
    env = {**fake_github.environment(tmp_path), "GITHUB_TEAMS_TOKEN": fake_github.token}
    env.pop("GITHUB_TOKEN")
    check = team_membership(env)
    assert check is not None
    path = "/orgs/acme/teams/platform/memberships/"
    fake_github.inject("GET", path + "dave$", 200, {"state": "active", "role": "member"})
    fake_github.inject("GET", path + "erin$", 200, {"state": "pending", "role": "member"})
    fake_github.inject("GET", path + "frank$", 404, {"message": "Not Found"})
    assert (check("acme/platform", "dave"), check("acme/platform", "erin"), check("acme/platform", "frank")) == (
        True, False, False)
    fake_github.inject("GET", path + "gina$", 403, {"message": "Resource not accessible by integration"})
    with pytest.raises(GitHubError, match="Members: read"):
        check("acme/platform", "gina")
    assert team_membership({**env, "GITHUB_TEAMS_TOKEN": ""}) is None


def test_validate_asks_github_about_admin_teams_when_given_a_teams_token(
        repo: Repo, fake_github: FakeGitHub, tmp_path: Path) -> None:
    repo.write("project.yaml", PROJECT.replace("admins: [carol]", "admins: [acme/platform]"))
    repo.commit("the team administers")
    repo.git.git.branch("-f", "main", "HEAD")
    repo.write("blocks/compute/cpu-mid.yaml", "kind: ComputeResource\nspec: {cpu: '8'}\n")
    repo.commit("dave edits a block")
    fake_github.inject("GET", "/orgs/acme/teams/platform/memberships/dave$", 200, {"state": "active"})
    env = {**fake_github.environment(tmp_path, step_summary=False), "GITHUB_TEAMS_TOKEN": fake_github.token}
    result = CliRunner().invoke(main, ["validate", "--repo", str(repo.root), "--actor", "dave", "--base", "main"],
                                env=env)
    assert "Traceback" not in result.output
    assert "dave may not" not in result.stdout, result.output  # (the minimal repo has validation errors of its own)
    assert fake_github.requests_to("GET", "/orgs/acme/teams/platform/memberships/dave$")
