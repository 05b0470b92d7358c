"""Issue #11 (hardening): the smaller holes, each proven by a test that failed before its fix."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from reconciler import cli
from reconciler import cluster as cluster_module
from reconciler.cli import main
from reconciler.errors import ValidationFailed
from reconciler.loader import parse_document
from reconciler.plan import MASK, Action, LiveState, ObjectId, Plan, PlanOptions, WorkspaceResult, compute_plan, mask
from reconciler.render import render
from reconciler.report import plan_json, plan_markdown, plan_text
from reconciler.validate import load_repo
from tests.unit.test_policy import Repo as PolicyRepo
from tests.unit.test_policy import workspace as policy_workspace

# ---------------------------------------------------------------------------------------------
# 8. A two-token sensitive flag: `--token abc123`


def test_the_value_after_a_bare_sensitive_flag_is_masked_like_the_equals_form() -> None:
    args = ["--port", "8080", "--token", "abc123", "--ServerApp.password", "hunter2", "--verbose"]
    assert mask(args, "args") == ["--port", "8080", "--token", MASK, "--ServerApp.password", MASK, "--verbose"]
    assert mask(["--token=abc123"], "command") == [f"--token={MASK}"]
    assert mask(["--api-key", "k"], "command") == ["--api-key", MASK]


def test_a_sensitive_flag_at_the_end_of_args_and_harmless_args_are_left_as_they_are() -> None:
    args = ["--port", "8080", "--token"]
    assert mask(args, "args") is args
    env = [{"name": "MODE", "value": "--token"}]
    assert mask(env, "env") is env


def _set_token_arg(repo: Path, token: str) -> None:
    path = repo / "blocks" / "environments" / "vscode.yaml"
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("  args:")]
    path.write_text("\n".join([*lines, f'  args: ["--auth", "password", "--token", "{token}"]']) + "\n")


def test_a_two_token_flag_in_an_environment_never_reaches_the_plan_in_any_format(base_repo: Path) -> None:
    _set_token_arg(base_repo, "old-s3cr3t-value")
    before = render(load_repo(base_repo))
    _set_token_arg(base_repo, "abc123-n3w-s3cr3t")
    repo = load_repo(base_repo)
    namespace = repo.project.namespace
    live = LiveState({ObjectId(o["kind"], namespace, o["metadata"]["name"]): o for w in before for o in w.objects},
                     {}, [])
    plan = compute_plan(render(repo), live, repo.project.metadata.name, namespace, PlanOptions())
    assert [w.action for w in plan.workspaces if w.name == "alice-code"] == [Action.UPDATE]
    outputs = [plan_text(plan, color=False), json.dumps(plan_json(plan)), plan_markdown(plan, dry_run=True)]
    for output in outputs:
        assert "abc123-n3w-s3cr3t" not in output and "old-s3cr3t-value" not in output
        assert MASK in output, output


# ---------------------------------------------------------------------------------------------
# 9. Options before a subcommand either apply or are a usage error


def _cli(*args: str, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(main, list(args), env=env)
    assert "Traceback" not in result.output
    return result


def test_repo_before_validate_validates_that_repo(base_repo: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # "." holds no project.yaml
    result = _cli("--repo", str(base_repo), "validate")
    assert result.exit_code == 0 and result.stderr.startswith("ok: 2 workspaces, "), result.output


def test_repo_before_render_renders_that_repo(base_repo: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = _cli("--repo", str(base_repo), "render", "--output-dir", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "deployment-alice-code.yaml").is_file()


def test_an_option_after_the_subcommand_wins_over_the_same_option_before_it(base_repo: Path, tmp_path: Path) -> None:
    result = _cli("--repo", str(tmp_path / "nowhere"), "validate", "--repo", str(base_repo))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--dry-run", "validate"], "--dry-run"),
        (["--adopt", "status"], "--adopt"),
        (["--allow-mass-delete", "render", "--output-dir", "x"], "--allow-mass-delete"),
        (["--output", "json", "validate"], "--output"),
        (["--comment", "--detailed-exitcode", "schema", "--output-dir", "x"], "--comment"),
        (["--no-wait", "status"], "--no-wait"),
    ],
)
def test_an_option_before_a_subcommand_that_does_not_take_it_is_a_usage_error(args: list[str], option: str) -> None:
    result = _cli(*args)
    assert result.exit_code == 64, result.output
    assert option in result.stderr, result.stderr


# ---------------------------------------------------------------------------------------------
# 10. `validate --actor` reads files through the loader, with its depth limit


def test_a_deeply_nested_workspace_file_in_a_pr_is_reported_with_every_other_error(tmp_path: Path) -> None:
    repo = PolicyRepo(tmp_path / "config")
    repo.write("workspaces/alice-deep.yaml", "apiVersion: workspaces/v1\nspec: " + "[" * 50_000 + "]" * 50_000 + "\n")
    repo.write("workspaces/bob-vscode.yaml", policy_workspace("bob-vscode", "bob", compute="gpu"))
    repo.commit("alice's PR")
    result = _cli("validate", "--repo", str(repo.root), "--actor", "alice", "--base", "main")
    assert result.exit_code == 1, result.output
    assert "internal error" not in result.output
    lines = result.stdout.splitlines()
    assert any(line.startswith("workspaces/alice-deep.yaml:") and "nest" in line for line in lines), lines
    assert any(line.startswith("workspaces/bob-vscode.yaml:") and "owned by bob" in line for line in lines), lines


def test_the_ownership_check_survives_a_deeply_nested_project_file_at_base(tmp_path: Path) -> None:
    deep = "apiVersion: workspaces/v1\nspec: {admins: " + "[" * 50_000 + "]" * 50_000 + "}\n"
    repo = PolicyRepo(tmp_path / "config", project=deep)
    repo.write("workspaces/bob-vscode.yaml", policy_workspace("bob-vscode", "bob", compute="gpu"))
    repo.commit("alice's PR")
    assert [e.message for e in repo.check("alice")] == [
        "alice may not change a workspace owned by bob (ask bob or a platform admin (project.yaml lists none))"
    ]


# ---------------------------------------------------------------------------------------------
# 11. GitHub reporting failures are warnings, never a failed run


class FakeCluster:
    """Stands in for reconciler.cluster.Cluster: an empty namespace that accepts every write."""

    def __init__(self, namespace: str, opts: object = None) -> None:
        self.namespace = namespace
        self.applied: list[str] = []

    def read_live(self, claims: object = (), **_: object) -> LiveState:
        return LiveState({}, {c: "Bound" for c in claims}, [8])  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def acquire_lease(self, opts: object) -> Iterator[None]:
        yield

    def apply(self, plan: Plan) -> dict[str, WorkspaceResult]:
        self.applied += [w.name for w in plan.workspaces]
        return {w.name: WorkspaceResult(ready=None) for w in plan.workspaces}


@pytest.fixture
def fake_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_module, "Cluster", FakeCluster)


@pytest.mark.parametrize("args", [["--dry-run"], ["--no-wait"]], ids=["plan", "apply"])
def test_a_job_summary_that_cannot_be_written_is_a_warning_not_a_failed_run(
    args: list[str], base_repo: Path, tmp_path: Path, fake_cluster: None
) -> None:
    summary = tmp_path / "no-such-dir" / "summary.md"
    result = _cli("--repo", str(base_repo), *args, env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.exit_code == 0, result.output
    assert "warning: the job summary was not written" in result.stderr
    assert "Plan: 2 to create" in result.stdout


def test_a_validation_job_summary_that_cannot_be_written_is_a_warning(base_repo: Path, tmp_path: Path) -> None:
    summary = tmp_path / "no-such-dir" / "summary.md"
    result = _cli("validate", "--repo", str(base_repo), env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.exit_code == 0, result.output
    assert "warning: the job summary was not written" in result.stderr


# ---------------------------------------------------------------------------------------------
# 12. RECONCILE_DEBUG=1 shows the traceback of an internal error


def _boom(root: Path) -> None:
    raise KeyError("surprise")


def test_reconcile_debug_shows_the_traceback_of_an_internal_error(
    monkeypatch: pytest.MonkeyPatch, base_repo: Path
) -> None:
    monkeypatch.setattr(cli, "load_repo", _boom)
    result = CliRunner().invoke(main, ["validate", "--repo", str(base_repo)], env={"RECONCILE_DEBUG": "1"})
    assert result.exit_code == 1
    assert result.stderr.startswith("Traceback (most recent call last):\n"), result.stderr
    assert "in _boom" in result.stderr and 'raise KeyError("surprise")' in result.stderr
    assert result.stderr.endswith("internal error: KeyError: 'surprise' (please report)\n")


@pytest.mark.parametrize("value", [None, "", "0"])
def test_without_reconcile_debug_an_internal_error_is_one_line(
    value: str | None, monkeypatch: pytest.MonkeyPatch, base_repo: Path
) -> None:
    monkeypatch.setattr(cli, "load_repo", _boom)
    result = CliRunner().invoke(main, ["validate", "--repo", str(base_repo)], env={"RECONCILE_DEBUG": value})
    assert (result.exit_code, result.stderr) == (1, "internal error: KeyError: 'surprise' (please report)\n")


def test_reconcile_debug_leaves_an_expected_error_at_one_line(base_repo: Path) -> None:
    result = CliRunner().invoke(main, ["validate", "--repo", str(base_repo / "missing")],
                                env={"RECONCILE_DEBUG": "1"})
    assert result.exit_code == 1 and "Traceback" not in result.output


# ---------------------------------------------------------------------------------------------
# 13. A tab used for indentation gets a message that says so


TAB_MESSAGE = "tabs are not allowed for indentation in YAML; use spaces"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("a:\n\tb: 1\n", (2, 1)),
        ("\tkey: 1\n", (1, 1)),
        ("a:\n  b:\n  \tc: 1\n", (3, 3)),
        ("a:\n - x\n\t- y\n", (3, 1)),
        ("a: |\n\ttext\n", (2, 1)),
    ],
)
def test_a_tab_used_for_indentation_is_named_as_such(text: str, where: tuple[int, int]) -> None:
    with pytest.raises(ValidationFailed) as failed:
        parse_document(text.encode(), "workspaces/x.yaml")
    assert [str(e) for e in failed.value.errors] == [f"workspaces/x.yaml:{where[0]}:{where[1]}: {TAB_MESSAGE}"]


def test_a_tab_after_a_value_is_still_a_plain_syntax_error() -> None:
    with pytest.raises(ValidationFailed) as failed:
        parse_document(b"a: b\n  c: [\t\n", "x.yaml")
    assert TAB_MESSAGE not in str(failed.value.errors[0])


def test_validate_names_the_tab_in_a_workspace_file(write: Callable[[str, str], Path], base_repo: Path) -> None:
    write("workspaces/alice-code.yaml", "apiVersion: workspaces/v1\nkind: Workspace\nmetadata:\n\tname: alice-code\n")
    result = _cli("validate", "--repo", str(base_repo))
    assert f"workspaces/alice-code.yaml:4:1: {TAB_MESSAGE}" in result.stdout.splitlines(), result.output
