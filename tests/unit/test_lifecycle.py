"""Lifecycle decisions, their validation, the cost section and the lifecycle workflow, without a cluster."""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from reconciler import github, github_api
from reconciler.cli import main
from reconciler.cost import compute_hourly, deployment_hourly, hourly, money, monthly, running_cost
from reconciler.errors import GitHubError, ValidationFailed
from reconciler.lifecycle import Activity, LifecyclePull, decide, expiry_warnings, marker, parse_marker, set_stopped
from reconciler.models import Prices, Repo
from reconciler.plan import LiveState, PlanOptions, Scope, StatusRow, compute_plan
from reconciler.render import render
from reconciler.report import plan_json
from reconciler.run import plan_extras
from reconciler.status_report import status_markdown, status_text
from reconciler.validate import load_repo
from tests.fakegithub import FakeGitHub
from tests.unit.conftest import ROOT

NOW = dt.datetime(2027, 3, 10, 12, 0, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)
GIT_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_NOSYSTEM": "1"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={**GIT_ENV, "HOME": str(cwd)}).stdout.strip()


def set_project(repo: Path, **spec: object) -> None:
    doc = yaml.safe_load((repo / "project.yaml").read_text())
    doc["spec"].update(spec)
    (repo / "project.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def idle_repo(example_repo: Path) -> Repo:
    set_project(example_repo, idle={"stopAfter": "8h", "warnAfter": "6h"})
    return load_repo(example_repo)


def texts(repo: Repo) -> dict[str, str]:
    return {p: (repo.root / p).read_text() for (k, _), p in repo.sources.items() if k == "Workspace"}


# --- the workspace file edit ---------------------------------------------------------------------

def test_stopping_a_workspace_changes_only_its_state_line_and_keeps_the_comments() -> None:
    text = (ROOT / "workspaces" / "jane-doe-vscode.yaml").read_text()
    stopped = set_stopped(text, "workspaces/jane-doe-vscode.yaml")
    assert stopped == text.replace("state: running", "state: stopped")
    assert stopped.startswith("# yaml-language-server:")


def test_stopping_a_workspace_without_a_state_line_adds_one_next_to_its_owner() -> None:
    text = "# mine\napiVersion: workspaces/v1\nkind: Workspace\nmetadata: {name: a-b}\nspec:\n" \
           "  owner: a  # me\n  environment: e\n  compute: c\n"
    assert set_stopped(text, "workspaces/a-b.yaml") == text.replace("  owner: a", "  state: stopped\n  owner: a")


def test_a_flow_style_workspace_is_stopped_with_the_same_data() -> None:
    text = "apiVersion: workspaces/v1\nkind: Workspace\nmetadata: {name: a-b}\nspec: {owner: a, environment: e, " \
           "compute: c, state: running}\n"
    assert yaml.safe_load(set_stopped(text, "w.yaml"))["spec"] == {"owner": "a", "environment": "e", "compute": "c",
                                                                    "state": "stopped"}


# --- deciding --------------------------------------------------------------------------------------

def test_only_a_running_workspace_idle_past_the_limit_is_proposed_and_one_near_it_is_warned(
        example_repo: Path) -> None:
    repo = idle_repo(example_repo)
    seen = {"jane-doe-vscode": Activity("jane-doe-vscode", NOW - 8 * H),
            "john-tan-jupyterlab": Activity("john-tan-jupyterlab", NOW - 7 * H)}
    plan = decide(repo, seen, [], NOW, texts(repo))
    (proposal,) = plan.proposals
    assert (proposal.kind, proposal.owner, proposal.action) == ("idle", "jane-doe", "open")
    assert proposal.workspaces == {"jane-doe-vscode": "2027-03-10T04:00:00Z"}
    assert proposal.files[0].text is not None and "state: stopped" in proposal.files[0].text
    assert plan.warnings == ["john-tan-jupyterlab (john-tan) idle for 7h: a pull request stops it from "
                             "2027-03-10T13:00:00Z"]


def test_without_an_idle_limit_or_an_activity_reading_nothing_is_stopped(example_repo: Path) -> None:
    repo = load_repo(example_repo)
    old = {"jane-doe-vscode": Activity("jane-doe-vscode", NOW - 100 * H)}
    assert decide(repo, old, [], NOW, texts(repo)).proposals == []
    repo = idle_repo(example_repo)
    unknown = {"jane-doe-vscode": Activity("jane-doe-vscode", None, "code-server /healthz", "forbidden (403)")}
    plan = decide(repo, unknown, [], NOW, texts(repo))
    assert plan.proposals == [] and "last activity unknown (forbidden (403))" in plan.unknown[0]


def test_a_declined_stop_is_remembered_until_the_workspace_is_used_again(example_repo: Path) -> None:
    repo = idle_repo(example_repo)
    closed = LifecyclePull(3, "idle", "jane-doe", {"jane-doe-vscode": "2027-03-10T02:00:00Z"}, "closed", False)
    same = {"jane-doe-vscode": Activity("jane-doe-vscode", NOW - 10 * H)}
    plan = decide(repo, same, [closed], NOW + 48 * H, texts(repo))
    assert plan.proposals == [] and "declined" in plan.remembered[0]
    used_since = {"jane-doe-vscode": Activity("jane-doe-vscode", NOW - 9 * H)}
    assert [p.action for p in decide(repo, used_since, [closed], NOW, texts(repo)).proposals] == ["open"]
    merged = LifecyclePull(3, "idle", "jane-doe", {"jane-doe-vscode": "2027-03-10T02:00:00Z"}, "closed", True)
    assert [p.action for p in decide(repo, same, [merged], NOW, texts(repo)).proposals] == ["open"]


def test_the_marker_records_what_was_proposed_and_a_forged_one_is_ignored() -> None:
    text = marker("idle", "jane-doe", {"jane-doe-vscode": "2027-03-10T02:00:00Z"}) + "\nbody"
    assert parse_marker(text) == {"kind": "idle", "owner": "jane-doe",
                                  "workspaces": {"jane-doe-vscode": "2027-03-10T02:00:00Z"}}
    assert parse_marker('<!-- workspace-gitops:lifecycle {"kind": "delete-all"} -->') is None
    assert parse_marker("<!-- workspace-gitops:lifecycle {not json} -->") is None


# --- expiry ----------------------------------------------------------------------------------------

def test_an_expired_workspace_is_proposed_for_teardown_and_one_expiring_soon_is_warned(example_repo: Path) -> None:
    doc = yaml.safe_load((example_repo / "workspaces/jane-doe-vscode.yaml").read_text())
    doc["spec"]["expires"] = "2027-03-10"
    (example_repo / "workspaces/jane-doe-vscode.yaml").write_text(yaml.safe_dump(doc))
    doc = yaml.safe_load((example_repo / "workspaces/john-tan-jupyterlab.yaml").read_text())
    doc["spec"]["expires"] = "2027-03-15"
    (example_repo / "workspaces/john-tan-jupyterlab.yaml").write_text(yaml.safe_dump(doc))
    repo = load_repo(example_repo)
    (proposal,) = decide(repo, {}, [], NOW, texts(repo)).proposals
    assert (proposal.kind, proposal.owner, proposal.workspaces) == ("expired", "jane-doe",
                                                                    {"jane-doe-vscode": "2027-03-10"})
    assert proposal.files[0].text is None, "the file is deleted"
    assert "PVCs of the data sources are never deleted" in proposal.body and "@jane-doe" in proposal.body
    warnings = expiry_warnings(repo, NOW.date())
    assert warnings[1].startswith("john-tan-jupyterlab expires on 2027-03-15 (in 5 days)")
    assert expiry_warnings(repo, NOW.date() - dt.timedelta(days=10), ["john-tan-jupyterlab"]) == []


@pytest.fixture
def git_repo(example_repo: Path) -> Iterator[Path]:
    git(example_repo, "init", "-q", "--initial-branch=main")
    git(example_repo, "add", "-A")
    git(example_repo, "commit", "-qm", "base")
    yield example_repo


def add_workspace(repo: Path, name: str, expires: str) -> None:
    (repo / "workspaces" / f"{name}.yaml").write_text(
        f"apiVersion: workspaces/v1\nkind: Workspace\nmetadata:\n  name: {name}\nspec:\n  owner: ann-lee\n"
        f"  environment: aisg-vscode-server-v4-16-1\n  compute: cpu-small\n  expires: {expires}\n")


def test_validation_refuses_a_past_expiry_on_a_new_workspace_and_one_beyond_the_projects_maximum(
        git_repo: Path) -> None:
    today = dt.datetime.now(dt.UTC).date()
    # On main already and expired since: validation accepts it (the lifecycle run proposes its teardown).
    doc = yaml.safe_load((git_repo / "workspaces/jane-doe-vscode.yaml").read_text())
    doc["spec"]["expires"] = (today - dt.timedelta(days=3)).isoformat()
    (git_repo / "workspaces/jane-doe-vscode.yaml").write_text(yaml.safe_dump(doc))
    set_project(git_repo, expiry={"maxDays": 90})
    git(git_repo, "commit", "-qam", "expired on main; at most 90 days")
    git(git_repo, "checkout", "-qb", "pr")
    add_workspace(git_repo, "ann-lee-old", (today - dt.timedelta(days=1)).isoformat())
    add_workspace(git_repo, "ann-lee-far", (today + dt.timedelta(days=91)).isoformat())
    add_workspace(git_repo, "ann-lee-ok", (today + dt.timedelta(days=90)).isoformat())
    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-qm", "three new workspaces")

    result = CliRunner().invoke(main, ["validate", "--repo", str(git_repo), "--base", "main"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("workspaces/")]
    assert lines == [
        f"workspaces/ann-lee-far.yaml:9:3: expires {(today + dt.timedelta(days=91)).isoformat()} is more than 90 "
        f"days ahead (project.yaml expiry.maxDays): use {(today + dt.timedelta(days=90)).isoformat()} or earlier",
        f"workspaces/ann-lee-old.yaml:9:3: expires {(today - dt.timedelta(days=1)).isoformat()} is in the past "
        f"(today is {today.isoformat()}): a new workspace needs a future date",
    ]
    assert "2 validation errors in 2 files" in result.output


@pytest.mark.parametrize(("spec", "message"), [
    ({"idle": {"stopAfter": "8 hours"}}, "project.yaml:16:5: spec.idle.stopAfter: '8 hours' is not a duration"),
    ({"idle": {"stopAfter": "6h", "warnAfter": "8h"}}, "warnAfter (8h) must be shorter than stopAfter (6h)"),
    ({"prices": {"currency": "usd"}}, "spec.prices.currency"),
    ({"prices": {"cpu": -1}}, "spec.prices.cpu"),
])
def test_bad_lifecycle_settings_in_the_project_are_refused_with_their_position(
        example_repo: Path, spec: dict[str, object], message: str) -> None:
    set_project(example_repo, **spec)
    with pytest.raises(ValidationFailed) as failed:
        load_repo(example_repo)
    assert any(message in str(e) for e in failed.value.errors), [str(e) for e in failed.value.errors]


def test_a_badly_written_expiry_date_is_refused_with_its_position(example_repo: Path) -> None:
    path = example_repo / "workspaces/jane-doe-vscode.yaml"
    path.write_text(path.read_text() + "  expires: 31/03/2027\n")
    with pytest.raises(ValidationFailed) as failed:
        load_repo(example_repo)
    (error,) = failed.value.errors
    assert str(error) == ("workspaces/jane-doe-vscode.yaml:12:3: spec.expires: '31/03/2027' is not a date: "
                          "write it as YYYY-MM-DD, e.g. 2027-03-31")


# --- cost ------------------------------------------------------------------------------------------

PRICES = Prices.model_validate({"currency": "USD", "cpu": 0.04, "memoryGiB": 0.005, "gpu": 2.5})


def test_a_workspace_costs_its_cpus_memory_and_gpus_per_running_hour_and_a_month_is_730_hours() -> None:
    assert hourly({"limits": {"cpu": "4", "memory": "16Gi"}}, PRICES) == Decimal("0.24")
    gpu = hourly({"limits": {"cpu": "500m", "memory": "512Mi", "nvidia.com/gpu": "1"}}, PRICES)
    assert gpu == Decimal("0.02") + Decimal("0.0025") + Decimal("2.5")
    assert money(monthly(Decimal("0.24")), "USD") == "USD 175.20"
    assert money(Decimal("0.0025"), "USD") == "USD 0.0025"


def test_a_stopped_workspace_costs_nothing(example_repo: Path) -> None:
    (deployment, *_) = render(load_repo(example_repo))[0].objects
    assert deployment_hourly(deployment, PRICES) > 0
    stopped = {**deployment, "spec": {**deployment["spec"], "replicas": 0}}
    assert deployment_hourly(stopped, PRICES) == 0 and deployment_hourly(None, PRICES) == 0
    total = running_cost([deployment, deployment], PRICES)
    # Two cpu-small workspaces (1 CPU, 4 GiB each): 2 * (0.04 + 0.02) an hour.
    assert total.line() == "cost: USD 0.12/h, USD 87.60/month (730 h) for 2 running workspaces"
    assert total.as_json() == {"currency": "USD", "perHour": 0.12, "perMonth": 87.6, "runningWorkspaces": 2}


def test_a_workspace_not_read_costs_what_its_compute_block_renders_to(example_repo: Path) -> None:
    repo = load_repo(example_repo)
    for w in render(repo):
        assert compute_hourly(repo.compute[w.compute], PRICES) == deployment_hourly(w.objects[0], PRICES) > 0


def test_a_since_plans_project_total_still_counts_the_running_workspaces_it_did_not_read(example_repo: Path) -> None:
    set_project(example_repo, prices={"currency": "USD", "cpu": 0.04, "memoryGiB": 0.005, "gpu": 2.5})
    repo = load_repo(example_repo)
    desired = render(repo)
    empty = LiveState({}, {}, [])
    full = compute_plan(desired, empty, repo.project.name, repo.project.namespace, PlanOptions())
    first = desired[0].name
    scoped = compute_plan(desired[:1], empty, repo.project.name, repo.project.namespace, PlanOptions(),
                          Scope("main", frozenset({first}), outside=len(desired) - 1))
    whole, part = plan_extras(repo, full)["cost"], plan_extras(repo, scoped)["cost"]
    assert part.total_after == whole.total_after > 0
    assert part.total_before == whole.total_after - deployment_hourly(desired[0].objects[0], PRICES)
    assert [w.name for w in part.workspaces] == [first]
    shown = plan_json(scoped, cost=part)["cost"]
    assert shown["currency"] == "USD" and shown["totalAfterPerHour"] == float(whole.total_after)
    assert shown["workspaces"] == [{"name": first, "action": "create", "beforePerHour": 0.0,
                                    "afterPerHour": float(part.workspaces[0].after)}]
    assert plan_json(scoped)["cost"] is None


def test_status_shows_last_active_and_the_cost_totals_in_the_terminal_and_the_job_summary() -> None:
    rows = [StatusRow("jane-doe-vscode", "jane-doe", "ready", "https://x", "", "3h", "",
                      last_active="2027-03-10T11:55:00Z")]
    text = status_text(rows, False, last_active={"jane-doe-vscode": "5m ago"},
                       cost_line="cost: USD 0.24/h, USD 175.20/month (730 h) for 1 running workspace")
    header, row = text.splitlines()[:2]
    assert header.split() == ["NAME", "OWNER", "STATE", "AGE", "LAST", "ACTIVE", "URL"]
    assert "5m ago" in row
    assert text.rstrip().endswith("cost: USD 0.24/h, USD 175.20/month (730 h) for 1 running workspace")
    summary = status_markdown(rows, "cost: USD 0.24/h, USD 175.20/month (730 h) for 1 running workspace")
    assert summary.rstrip().endswith("| `jane-doe-vscode` | jane-doe | 3h | 2027-03-10 11:55:00 | https://x | — |"
                                     "\n\ncost: USD 0.24/h, USD 175.20/month (730 h) for 1 running workspace")


# --- GitHub ----------------------------------------------------------------------------------------

@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeGitHub]:
    (tmp_path / "w").mkdir()
    git(tmp_path / "w", "init", "-q", "--initial-branch=main")
    (tmp_path / "w" / "a.yaml").write_text("state: running\n")
    git(tmp_path / "w", "add", "-A")
    git(tmp_path / "w", "commit", "-qm", "a")
    with FakeGitHub(git_dir=tmp_path / "w") as gh:
        yield gh


def test_a_branch_a_commit_and_a_pull_request_through_the_api(fake: FakeGitHub, tmp_path: Path) -> None:
    ctx = github_api.GitHubContext.from_env(fake.environment(tmp_path, event_name="schedule"),
                                        retry=github_api.RetryPolicy(attempts=1))
    head = github.branch_head(ctx, "main")
    assert head is not None and github.branch_head(ctx, "lifecycle/idle-a") is None
    github.set_branch(ctx, "lifecycle/idle-a", head)
    blob, text = github.read_file(ctx, "a.yaml", "lifecycle/idle-a") or ("", "")
    github.write_file(ctx, "lifecycle/idle-a", "a.yaml", "state: stopped\n", "stop", blob)
    with pytest.raises(GitHubError, match="409"):
        github.write_file(ctx, "lifecycle/idle-a", "a.yaml", "state: gone\n", "stale", blob)
    pull = github.open_pull(ctx, head="lifecycle/idle-a", base="main", title="Stop a", body="why")
    assert fake.file_at("lifecycle/idle-a", "a.yaml") == "state: stopped\n"
    assert fake.file_at("main", "a.yaml") == "state: running\n"
    assert [p["number"] for p in github.list_pulls(ctx)] == [pull["number"]]
    with pytest.raises(GitHubError, match="refusing"):
        github.edit_pull(ctx, pull["number"], body=f"the token is {fake.token}")


# --- the workflow ----------------------------------------------------------------------------------

def test_the_lifecycle_workflow_only_opens_pull_requests_with_a_read_only_identity() -> None:
    doc = yaml.safe_load((ROOT / ".github/workflows/lifecycle.yml").read_text())
    (job,) = doc["jobs"].values()
    assert job["permissions"] == {"contents": "write", "pull-requests": "write"}
    assert "environment" not in job, "no access to the production environment's apply credentials"
    text = (ROOT / ".github/workflows/lifecycle.yml").read_text()
    assert "KUBECONFIG_APPLY" not in text and "secrets.KUBECONFIG_LIFECYCLE" in text
    commands = [s["run"] for s in job["steps"] if "python -m reconciler" in s.get("run", "")]
    assert commands == ['python -m reconciler lifecycle --base "${GITHUB_REF_NAME:-main}" '
                        '--kubeconfig "$RUNNER_TEMP/kubeconfig"']
    role = yaml.safe_load((ROOT / "deploy/rbac/lifecycle-role.yaml").read_text())
    verbs = {(r["resources"][0], v) for r in role["rules"] for v in r["verbs"]}
    assert verbs == {("deployments", "get"), ("deployments", "list"), ("pods", "list"), ("services/proxy", "get")}


# --- the command, without a cluster (expiry needs no activity) -------------------------------------

@pytest.fixture
def expired_on_github(git_repo: Path) -> Iterator[tuple[Path, FakeGitHub]]:
    doc = yaml.safe_load((git_repo / "workspaces/jane-doe-vscode.yaml").read_text())
    doc["spec"]["expires"] = "2027-03-01"
    (git_repo / "workspaces/jane-doe-vscode.yaml").write_text(yaml.safe_dump(doc))
    git(git_repo, "commit", "-qam", "jane-doe-vscode expires on 2027-03-01")
    with FakeGitHub(user_login=None, git_dir=git_repo) as gh:
        yield git_repo, gh


def lifecycle_cli(repo: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["lifecycle", "--repo", str(repo), "--now", "2027-03-02T00:00:00Z", *args],
                                env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_reconcile_lifecycle_opens_the_teardown_pr_once_and_a_dry_run_opens_nothing(
        expired_on_github: tuple[Path, FakeGitHub], tmp_path: Path) -> None:
    repo, gh = expired_on_github
    env = gh.environment(tmp_path, event_name="schedule")
    code, out, _ = lifecycle_cli(repo, env, "--dry-run")
    assert code == 0 and out == "would open (expired, jane-doe): jane-doe-vscode\n" and gh.lifecycle_pulls() == []
    code, out, _ = lifecycle_cli(repo, env)
    assert code == 0 and out.startswith("opened (expired, jane-doe): jane-doe-vscode: https://github.example/")
    code, out, _ = lifecycle_cli(repo, env)
    (pull,) = gh.lifecycle_pulls()
    assert code == 0 and out == f"kept #{pull['number']} (expired, jane-doe): jane-doe-vscode\n"
    assert "### reconcile lifecycle" in Path(env["GITHUB_STEP_SUMMARY"]).read_text()


def test_a_token_without_the_permission_is_one_error_line_and_no_pull_request(
        expired_on_github: tuple[Path, FakeGitHub], tmp_path: Path) -> None:
    repo, gh = expired_on_github
    gh.inject("POST", r"/pulls$", 403, {"message": "Resource not accessible by integration"}, times=None)
    code, _, err = lifecycle_cli(repo, gh.environment(tmp_path, event_name="schedule"))
    assert code == 1 and gh.lifecycle_pulls() == []
    (line,) = err.strip().splitlines()
    assert line.startswith("error: POST /repos/acme/workspaces/pulls: 403 Forbidden: the token lacks permission")
    assert gh.token not in err


def test_gpus_are_priced_by_their_node_pool_and_a_run_ai_fraction_counts_as_written(example_repo: Path) -> None:
    set_project(example_repo, scheduler="runai",
                nodePools={"a100": {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}}},
                prices={"cpu": 0, "memoryGiB": 0, "gpu": 1.0, "gpuByPool": {"a100": 3.0}})
    compute = example_repo / "blocks/compute/gpu-a100-1.yaml"
    compute.write_text(compute.read_text().replace("  gpu: 1\n", "  gpu: 0.5\n  nodePool: a100\n"))
    doc = yaml.safe_load((example_repo / "workspaces/jane-doe-vscode.yaml").read_text())
    doc["spec"]["compute"] = "gpu-a100-1"
    (example_repo / "workspaces/jane-doe-vscode.yaml").write_text(yaml.safe_dump(doc))
    repo = load_repo(example_repo)
    prices, pools = repo.project.spec.prices, repo.project.spec.node_pools
    assert prices is not None
    by_name = {w.name: w.objects[0] for w in render(repo)}
    assert deployment_hourly(by_name["jane-doe-vscode"], prices, pools) == Decimal("1.5"), "half an A100 at 3.0"
    assert deployment_hourly(by_name["jane-doe-vscode"], prices) == Decimal("0.5"), "no pool known: prices.gpu"


def test_a_gpu_price_for_a_pool_the_project_does_not_have_is_refused(example_repo: Path) -> None:
    set_project(example_repo, prices={"gpu": 2.5, "gpuByPool": {"h100": 4.0}})
    with pytest.raises(ValidationFailed) as failed:
        load_repo(example_repo)
    assert [str(e) for e in failed.value.errors] == [
        "project.yaml:18:7: prices.gpuByPool names 'h100', which is not one of spec.nodePools"]
