"""`reconcile --since REV`: which workspaces a change touches (from Git), and a plan of only those."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.errors import PlanRefused, ReconcileError
from reconciler.plan import Action, PlanOptions, Scope, check, compute_plan
from reconciler.policy import MAX_SCOPED, changed_scope
from reconciler.report import plan_json, plan_markdown, plan_text
from tests.unit.test_plan import NS, PROJECT, live_of, workspace
from tests.unit.test_policy import PROJECT as PROJECT_YAML
from tests.unit.test_policy import Repo
from tests.unit.test_policy import workspace as workspace_yaml


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    """main with project.yaml, bob-vscode and a compute block, on the branch `pr`."""
    return Repo(tmp_path / "config")


def scope(repo: Repo, since: str = "main") -> Scope:
    return changed_scope(repo.root, since, [p.stem for p in (repo.root / "workspaces").glob("*.yaml")])


def test_a_new_workspace_file_not_yet_committed_is_the_whole_scope(repo: Repo) -> None:
    repo.write("workspaces/alice-vscode.yaml", workspace_yaml("alice-vscode", "alice"))
    assert scope(repo) == Scope("main", frozenset({"alice-vscode"}), outside=1)


def test_committed_changed_and_deleted_workspace_files_are_in_scope_by_their_names(repo: Repo) -> None:
    repo.write("workspaces/carl-vscode.yaml", workspace_yaml("carl-vscode", "carl"))
    repo.commit("carl")
    base = repo.git.head.commit.hexsha
    repo.write("workspaces/bob-vscode.yaml", workspace_yaml("bob-vscode", "bob", compute="cpu-large"))
    (repo.root / "workspaces/carl-vscode.yaml").unlink()
    repo.commit("bob bigger, carl gone")
    assert scope(repo, base) == Scope(base, frozenset({"bob-vscode", "carl-vscode"}), outside=0)


def test_a_renamed_workspace_file_plans_its_old_and_its_new_name(repo: Repo) -> None:
    repo.git.git.mv("workspaces/bob-vscode.yaml", "workspaces/bob-code.yaml")
    assert scope(repo).names == {"bob-vscode", "bob-code"}


@pytest.mark.parametrize("path", ["project.yaml", "blocks/compute/cpu-mid.yaml", "blocks/environments/new.yaml"])
def test_a_change_to_the_project_or_a_block_plans_every_workspace_and_says_why(repo: Repo, path: str) -> None:
    repo.write(path, PROJECT_YAML + "\n# touched\n")
    repo.write("workspaces/alice-vscode.yaml", workspace_yaml("alice-vscode", "alice"))
    got = scope(repo)
    assert got.names is None and got.reason == f"{path} changed since main"


def test_files_that_are_no_workspace_change_nothing_planned(repo: Repo) -> None:
    for path in ("README.md", "reconciler/run.py", ".github/workflows/plan.yml", "workspaces/notes.txt",
                 "workspaces/sub/x-vscode.yaml", "workspaces/Not_A_Name.yaml"):
        repo.write(path, "x\n")
    assert scope(repo) == Scope("main", frozenset(), outside=2)  # bob-vscode and Not_A_Name's stem


def test_too_many_changed_workspace_files_plan_every_workspace(repo: Repo) -> None:
    for i in range(MAX_SCOPED + 1):
        repo.write(f"workspaces/u{i}-vscode.yaml", workspace_yaml(f"u{i}-vscode", f"u{i}"))
    got = scope(repo)
    assert got.names is None and got.reason == f"{MAX_SCOPED + 1} workspace files changed since main"


def test_a_config_repo_in_a_subfolder_of_the_checkout_sees_its_own_paths(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "top")
    (repo.root / "config").mkdir()
    repo.git.git.mv("workspaces", "config/workspaces")
    repo.git.git.mv("project.yaml", "config/project.yaml")
    repo.commit("move into config/")
    repo.write("config/workspaces/alice-vscode.yaml", workspace_yaml("alice-vscode", "alice"))
    repo.write("workspaces/ghost-vscode.yaml", "outside the config repo\n")
    assert changed_scope(repo.root / "config", "HEAD", ["bob-vscode"]).names == {"alice-vscode"}


def test_an_unknown_revision_is_an_error_that_says_how_to_fix_it(repo: Repo, tmp_path: Path) -> None:
    with pytest.raises(ReconcileError, match=r"cannot resolve the revision 'nope'.*fetch-depth: 0"):
        scope(repo, "nope")
    with pytest.raises(ReconcileError, match=r"not in a Git checkout: --since needs"):
        changed_scope(tmp_path, "main", [])


# ---------------------------------------------------------------------------------------------
# The plan of a scope


def test_a_scoped_plan_deletes_only_in_scope_and_counts_the_others_as_managed() -> None:
    kept, gone, drifted = workspace("u0-vscode", "u0"), workspace("u1-vscode", "u1"), workspace("u2-vscode", "u2")
    live = live_of(kept, gone, drifted)
    live.objects[next(iter(k for k in live.objects if k.name == "u2-vscode"))]["spec"]["replicas"] = 0
    new = workspace("new-vscode", "new")
    plan = compute_plan([new], live, PROJECT, NS, PlanOptions(),
                        Scope("main", frozenset({"new-vscode", "u1-vscode"}), outside=2))
    # u0 and u2 (drifted) are outside the scope: neither is read into the plan, nor touched.
    assert {w.name: w.action for w in plan.workspaces} == {"new-vscode": Action.CREATE, "u1-vscode": Action.DELETE}
    assert plan.managed_workspaces == 3  # u1-vscode live, and the two the scope left out
    check(plan, PlanOptions())  # one delete of three: allowed


def test_deleting_every_workspace_through_a_scope_is_still_refused() -> None:
    a, b = workspace("a-vscode", "a"), workspace("b-vscode", "b")
    plan = compute_plan([], live_of(a, b), PROJECT, NS, PlanOptions(),
                        Scope("main", frozenset({"a-vscode", "b-vscode"}), outside=0))
    with pytest.raises(PlanRefused, match=r"every managed workspace \(2 of 2\)"):
        check(plan, PlanOptions())


def test_the_reports_say_what_was_planned_and_what_was_not_read() -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    plan = compute_plan([workspace("new-vscode", "new")], live_of(), PROJECT, NS, PlanOptions(),
                        Scope(sha, frozenset({"new-vscode"}), outside=4999))
    line = ("Planned 1 workspace, changed since 0123456789ab: new-vscode; the repo's 4999 other workspaces "
            "were not read (the drift check compares them all).")
    assert line in plan_text(plan, color=False)
    assert line in plan_markdown(plan, dry_run=True)
    assert plan_json(plan)["scope"] == {"since": sha, "workspaces": ["new-vscode"], "notRead": 4999, "reason": ""}
    everything = compute_plan([], live_of(), PROJECT, NS, PlanOptions(),
                              Scope("main", None, reason="project.yaml changed since main"))
    assert "Planned every workspace: project.yaml changed since main." in plan_text(everything, color=False)
    assert plan_json(everything)["scope"]["workspaces"] is None
    nothing = compute_plan([], live_of(), PROJECT, NS, PlanOptions(), Scope("main", frozenset(), outside=3))
    text = plan_text(nothing, color=False)
    assert "No workspace file changed since main: nothing was planned or read." in text
    assert "the cluster matches the repository for the workspaces planned" in text
    assert plan_json(compute_plan([], live_of(), PROJECT, NS, PlanOptions()))["scope"] is None
