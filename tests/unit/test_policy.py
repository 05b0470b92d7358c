"""reconciler.policy: who may change which workspace file, from the Git diff of a PR."""

from __future__ import annotations

import json
from pathlib import Path

import git
import pytest

from reconciler.errors import ConfigError, ReconcileError
from reconciler.policy import check_ownership, default_base

PROJECT = """\
apiVersion: workspaces/v1
kind: Project
metadata: {name: sample-project}
spec:
  domain: example.org
  admins: [carol]
"""


def workspace(name: str, owner: str, compute: str = "cpu-mid") -> str:
    return f"""\
apiVersion: workspaces/v1
kind: Workspace
metadata:
  name: {name}
spec:
  owner: {owner}
  environment: vscode
  compute: {compute}
"""


class Repo:
    """A throwaway config repo: ``main`` with project.yaml and bob's workspace, and a PR branch."""

    def __init__(self, root: Path, project: str = PROJECT) -> None:
        self.root = root
        self.git = git.Repo.init(root, initial_branch="main")
        with self.git.config_writer() as config:
            config.set_value("user", "name", "Test")
            config.set_value("user", "email", "test@example.org")
        self.write("project.yaml", project)
        self.write("workspaces/bob-vscode.yaml", workspace("bob-vscode", "bob"))
        self.write("blocks/compute/cpu-mid.yaml", "kind: ComputeResource\n")
        self.commit("base")
        self.git.git.checkout("-b", "pr")

    def write(self, path: str, text: str) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

    def commit(self, message: str) -> None:
        self.git.git.add("-A")
        self.git.git.commit("-q", "--allow-empty", "-m", message)

    def check(self, actor: str, base: str = "main") -> list[ConfigError]:
        return check_ownership(self.root, actor, base)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path / "config")


def messages(errors: list[ConfigError]) -> list[str]:
    return [str(e) for e in errors]


def test_alice_changing_bobs_workspace_is_refused_naming_both(repo: Repo) -> None:
    repo.write("workspaces/bob-vscode.yaml", workspace("bob-vscode", "bob", compute="gpu-large"))
    repo.commit("alice edits bob's workspace")
    assert messages(repo.check("alice")) == [
        "workspaces/bob-vscode.yaml:6:3: alice may not change a workspace owned by bob "
        "(ask bob or a platform admin: carol)"
    ]


def test_alice_adding_her_own_workspace_is_allowed(repo: Repo) -> None:
    repo.write("workspaces/alice-vscode.yaml", workspace("alice-vscode", "alice"))
    repo.commit("alice adds hers")
    assert repo.check("alice") == []


def test_logins_compare_case_insensitively(repo: Repo) -> None:
    repo.write("workspaces/alice-vscode.yaml", workspace("alice-vscode", "alice"))
    repo.commit("alice adds hers")
    assert repo.check("Alice") == []
    assert repo.check("CAROL") == []  # an admin too


def test_alice_adding_a_workspace_owned_by_bob_is_refused(repo: Repo) -> None:
    repo.write("workspaces/bob-jupyter.yml", workspace("bob-jupyter", "bob"))
    repo.commit("alice adds one for bob")
    assert messages(repo.check("alice")) == [
        "workspaces/bob-jupyter.yml:6:3: alice may not add a workspace owned by bob "
        "(ask bob or a platform admin: carol)"
    ]


def test_alice_deleting_bobs_workspace_is_refused(repo: Repo) -> None:
    (repo.root / "workspaces/bob-vscode.yaml").unlink()
    repo.commit("alice deletes bob's workspace")
    assert messages(repo.check("alice")) == [
        "workspaces/bob-vscode.yaml:1:1: alice may not delete a workspace owned by bob "
        "(ask bob or a platform admin: carol)"
    ]


def test_alice_taking_over_bobs_workspace_is_refused_by_its_old_owner(repo: Repo) -> None:
    repo.write("workspaces/bob-vscode.yaml", workspace("bob-vscode", "alice"))
    repo.commit("alice makes bob's workspace hers")
    assert messages(repo.check("alice")) == [
        "workspaces/bob-vscode.yaml:6:3: alice may not change a workspace owned by bob "
        "(ask bob or a platform admin: carol)"
    ]


def test_alice_renaming_bobs_workspace_is_refused(repo: Repo) -> None:
    repo.git.git.mv("workspaces/bob-vscode.yaml", "workspaces/alice-vscode.yaml")
    repo.commit("alice renames bob's workspace")
    assert messages(repo.check("alice")) == [
        "workspaces/alice-vscode.yaml:6:3: alice may not rename a workspace owned by bob "
        "(ask bob or a platform admin: carol)"
    ]


def test_bob_may_change_and_delete_his_own_workspace(repo: Repo) -> None:
    repo.write("workspaces/bob-vscode.yaml", workspace("bob-vscode", "bob", compute="gpu-large"))
    repo.commit("bob edits his")
    assert repo.check("bob") == []
    (repo.root / "workspaces/bob-vscode.yaml").unlink()
    repo.commit("bob deletes his")
    assert repo.check("bob") == []


def test_bob_may_not_give_his_workspace_to_alice(repo: Repo) -> None:
    repo.write("workspaces/bob-vscode.yaml", workspace("bob-vscode", "alice"))
    repo.commit("bob gives it away")
    assert messages(repo.check("bob")) == [
        "workspaces/bob-vscode.yaml:6:3: bob may not give a workspace to alice "
        "(ask alice or a platform admin: carol)"
    ]


def test_an_admin_may_change_anything(repo: Repo) -> None:
    repo.write("workspaces/bob-vscode.yaml", workspace("bob-vscode", "alice"))
    repo.write("workspaces/dan-vscode.yaml", workspace("dan-vscode", "dan"))
    repo.write("blocks/compute/cpu-mid.yaml", "kind: ComputeResource\nspec: {}\n")
    repo.write("project.yaml", PROJECT.replace("[carol]", "[carol, erin]"))
    repo.commit("carol reorganises")
    assert repo.check("carol") == []


def test_alice_touching_blocks_is_refused(repo: Repo) -> None:
    repo.write("blocks/compute/cpu-mid.yaml", "kind: ComputeResource\nspec: {cpu: '64'}\n")
    repo.commit("alice gives herself more cpu")
    assert messages(repo.check("alice")) == [
        "blocks/compute/cpu-mid.yaml:1:1: alice may not change blocks/: it belongs to the platform team "
        "(CODEOWNERS also requires their review; ask a platform admin: carol)"
    ]


@pytest.mark.parametrize(
    "path", ["reconciler/cli.py", ".github/workflows/plan.yml", "deploy/rbac/x.yaml", "pyproject.toml"]
)
def test_alice_touching_the_platforms_code_is_refused(repo: Repo, path: str) -> None:
    repo.write(path, "x\n")
    repo.commit("alice edits platform code")
    errors = repo.check("alice")
    assert [e.path for e in errors] == [path]
    assert "it belongs to the platform team" in errors[0].message


def test_a_pr_cannot_make_its_author_an_admin(repo: Repo) -> None:
    repo.write("project.yaml", PROJECT.replace("[carol]", "[carol, alice]"))
    repo.write("workspaces/bob-vscode.yaml", workspace("bob-vscode", "alice"))
    repo.commit("alice promotes herself")
    assert messages(repo.check("alice")) == [
        "project.yaml:1:1: alice may not change project.yaml: it belongs to the platform team "
        "(CODEOWNERS also requires their review; ask a platform admin: carol)",
        "workspaces/bob-vscode.yaml:6:3: alice may not change a workspace owned by bob "
        "(ask bob or a platform admin: carol)",
    ]


def test_only_the_prs_own_changes_count_when_main_moved_on(repo: Repo) -> None:
    repo.write("workspaces/alice-vscode.yaml", workspace("alice-vscode", "alice"))
    repo.commit("alice adds hers")
    repo.git.git.checkout("main")
    repo.write("workspaces/dan-vscode.yaml", workspace("dan-vscode", "dan"))
    repo.commit("dan adds his on main")
    repo.git.git.checkout("pr")
    assert repo.check("alice") == []


def test_the_owner_at_base_counts_when_main_reassigned_the_file(repo: Repo) -> None:
    repo.git.git.checkout("main")
    repo.write("workspaces/bob-vscode.yaml", workspace("bob-vscode", "carol"))
    repo.commit("bob's workspace goes to carol on main")
    repo.git.git.checkout("pr")
    repo.write("workspaces/bob-vscode.yaml", workspace("bob-vscode", "bob", compute="gpu-large"))
    repo.commit("bob edits what he thinks is his")
    assert messages(repo.check("bob")) == [
        "workspaces/bob-vscode.yaml:6:3: bob may not change a workspace owned by carol "
        "(ask carol or a platform admin: carol)"
    ]


def test_a_new_file_that_does_not_parse_is_left_to_validation(repo: Repo) -> None:
    repo.write("workspaces/alice-vscode.yaml", "spec: [unclosed\n")
    repo.commit("alice adds a broken file")
    assert repo.check("alice") == []


def test_without_admins_the_message_says_so(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "config", project=PROJECT.replace("  admins: [carol]\n", ""))
    repo.write("workspaces/bob-vscode.yaml", workspace("bob-vscode", "bob", compute="x"))
    repo.commit("alice edits")
    assert messages(repo.check("alice")) == [
        "workspaces/bob-vscode.yaml:6:3: alice may not change a workspace owned by bob "
        "(ask bob or a platform admin (project.yaml lists none))"
    ]


def test_a_config_repo_in_a_sub_folder_reports_paths_relative_to_it(tmp_path: Path) -> None:
    top = git.Repo.init(tmp_path, initial_branch="main")
    with top.config_writer() as config:
        config.set_value("user", "name", "Test")
        config.set_value("user", "email", "test@example.org")
    sub = tmp_path / "examples" / "team"
    sub.mkdir(parents=True)
    (sub / "project.yaml").write_text(PROJECT, encoding="utf-8")
    (sub / "workspaces").mkdir()
    (sub / "workspaces" / "bob-vscode.yaml").write_text(workspace("bob-vscode", "bob"), encoding="utf-8")
    top.git.add("-A")
    top.git.commit("-q", "-m", "base")
    top.git.checkout("-b", "pr")
    (sub / "workspaces" / "bob-vscode.yaml").write_text(workspace("bob-vscode", "bob", "x"), encoding="utf-8")
    top.git.commit("-q", "-am", "alice edits")
    assert messages(check_ownership(sub, "alice", "main")) == [
        "workspaces/bob-vscode.yaml:6:3: alice may not change a workspace owned by bob "
        "(ask bob or a platform admin: carol)"
    ]


def test_an_unknown_base_is_an_honest_error(repo: Repo) -> None:
    with pytest.raises(ReconcileError, match=r"cannot resolve the base 'origin/main' .* fetch-depth: 0"):
        repo.check("alice", base="origin/main")


def test_outside_a_git_checkout_is_an_honest_error(tmp_path: Path) -> None:
    with pytest.raises(ReconcileError, match="not in a Git checkout"):
        check_ownership(tmp_path, "alice", "main")


def test_default_base_reads_the_pull_request_event(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text(
        json.dumps({"pull_request": {"base": {"sha": "abc123", "ref": "main"}}}), encoding="utf-8"
    )
    assert default_base({"GITHUB_EVENT_PATH": str(event), "GITHUB_BASE_REF": "main"}) == "abc123"
    assert default_base({"GITHUB_EVENT_PATH": str(tmp_path / "missing.json"), "GITHUB_BASE_REF": "main"}) == (
        "origin/main"
    )
    assert default_base({"GITHUB_BASE_REF": "develop"}) == "origin/develop"
    assert default_base({}) is None
