"""The pull-request loop end to end: the workflows' own steps, run locally, against the fake GitHub
API and the real control plane (docs/PR-FLOW.md, README user stories 1, 2 and 4).

Each test builds a real Git repository (the "GitHub" side: main, PR branches and the
``refs/pull/N/merge`` commits GitHub would make), then runs ``.github/workflows/plan.yml`` and
``apply.yml`` job by job with :mod:`tests.e2e.workflow_runner`: every ``run:`` step exactly as
written, with the real ``reconcile`` first on PATH, a synthetic event payload, the fake GitHub
as ``GITHUB_API_URL``, and as secrets base64 kubeconfigs of users bound only to the
``workspace-reconciler-plan`` or ``workspace-reconciler-apply`` Role of ``deploy/rbac/``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from tests.conftest import ControlPlane
from tests.e2e.helpers import Admin, Repo
from tests.e2e.workflow_runner import (
    Event,
    GitHubRepo,
    JobRun,
    Runner,
    dispatch_event,
    pull_request_event,
    push_event,
)
from tests.fakegithub import FakeGitHub, Recorded

PLAN_MARKER = "<!-- workspace-gitops:plan -->"
APPLY_MARKER = "<!-- workspace-gitops:apply -->"
USER = "ann-lee"
WORKSPACE = f"{USER}-vscode"
WORKSPACE_FILE = f"workspaces/{WORKSPACE}.yaml"
EXAMPLES = ["jane-doe-vscode", "john-tan-jupyterlab"]
URL = f"https://sample-project-{WORKSPACE}.runai.aisingapore.net"
KINDS = ("Deployment", "Service", "Ingress")
T = TypeVar("T")


def embedded_kubeconfig(path: Path) -> str:
    """The kubeconfig as one would store it in a secret: certificates inline, not file paths."""
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    for entries, key, fields in (("clusters", "cluster", ("certificate-authority",)),
                                 ("users", "user", ("client-certificate", "client-key"))):
        for entry in cfg[entries]:
            for name in fields:
                if name in entry[key]:
                    data = Path(entry[key].pop(name)).read_bytes()
                    entry[key][f"{name}-data"] = base64.b64encode(data).decode()
    return yaml.safe_dump(cfg)


@dataclass
class Loop:
    """The repository on "GitHub", its pull requests, and the runs of its workflows."""

    github: FakeGitHub
    repo: GitHubRepo
    files: Repo
    runner: Runner
    admin: Admin | None = None
    secret_values: list[str] = field(default_factory=list)
    runs: list[JobRun] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return self.files.namespace

    # --- what people do

    def open_pull(self, number: int, branch: str, actor: str, change: Callable[[Repo], None], *,
                  fork: str | None = None) -> Event:
        """``actor`` pushes ``branch`` with ``change`` and opens PR ``number`` against main."""
        self.repo.branch(branch)
        change(self.files)
        self.repo.commit(f"{actor}: {branch}", branch)
        self.repo.switch("main")
        self.github.add_pull(number, head_sha=self.repo.sha(branch))
        return self._pull_event(number, branch, actor, "opened", fork)

    def push_to_pull(self, number: int, branch: str, actor: str, change: Callable[[Repo], None]) -> Event:
        """``actor`` pushes one more commit to the PR's branch (GitHub: ``synchronize``)."""
        self.repo.switch(branch)
        change(self.files)
        self.repo.commit(f"{actor}: more on {branch}", branch)
        self.repo.switch("main")
        self.github.add_pull(number, head_sha=self.repo.sha(branch))
        return self._pull_event(number, branch, actor, "synchronize")

    def _pull_event(self, number: int, branch: str, actor: str, action: str, fork: str | None = None) -> Event:
        merge = self.repo.update_pull_refs(number, branch)
        return pull_request_event(
            self.github.repository, number, head_branch=branch, head_sha=self.repo.sha(branch),
            base_sha=self.repo.sha("main"), merge_sha=merge, actor=actor, action=action, head_repository=fork)

    def merge_pull(self, number: int, branch: str, *, empty_answers: int = 0) -> Event:
        """Merge PR ``number``: main gets a merge commit, and GitHub links it to the PR (after
        answering ``[]`` to ``commits/{sha}/pulls`` ``empty_answers`` more times, as right after a merge)."""
        before = self.repo.sha("main")
        after = self.repo.merge(number, branch)
        self.github.add_pull(number, merged=True, merge_commit_sha=after, head_sha=self.repo.sha(branch))
        self.github.commit_pulls[after] = [number]
        calls = len(self.github.requests_to("GET", r"/commits/[0-9a-f]+/pulls$"))
        self.github.commit_pulls_empty_first = calls + empty_answers
        return push_event(self.github.repository, before=before, after=after, actor="maintainer")

    # --- what GitHub runs

    def workflow(self, name: str, event: Event, jobs: tuple[str, ...] | None = None) -> dict[str, JobRun]:
        results = self.runner.run_workflow(name, event, jobs=jobs)
        self.runs.extend(results.values())
        for run in results.values():
            if run.runner_temp is not None:
                assert not (run.runner_temp / "kubeconfig").exists(), f"{run.job} left its kubeconfig behind"
        return results

    def plan(self, event: Event) -> dict[str, JobRun]:
        results = self.workflow("plan.yml", event)
        assert results["validate"].ok and not results["validate"].skipped, str(results["validate"])
        assert results["plan"].ok and not results["plan"].skipped, str(results["plan"])
        return results

    def apply(self, event: Event) -> JobRun:
        run = self.workflow("apply.yml", event)["apply"]
        assert run.ok and not run.skipped, str(run)
        return run

    def converge_main(self) -> None:
        """Someone presses "Run workflow" on apply.yml: main is applied; there is no PR to comment on."""
        sent = len(self.github.requests)
        run = self.apply(dispatch_event(self.github.repository, sha=self.repo.sha("main"), actor="maintainer"))
        assert "report was not posted" in run.step("Apply").stderr
        assert self.github.requests[sent:] == [], "a dispatch has no PR: nothing to ask GitHub"

    # --- what we check

    def comments(self, number: int) -> list[dict[str, Any]]:
        return self.github.comments.get(number, [])

    def posted(self, number: int) -> list[Recorded]:
        return self.github.requests_to("POST", rf"/issues/{number}/comments$")

    def edited(self) -> list[Recorded]:
        return self.github.requests_to("PATCH", r"/issues/comments/\d+$")

    def assert_no_secret_left_the_runner(self) -> None:
        """Neither the token nor a kubeconfig reaches GitHub in a request body, nor any step's log."""
        secrets = [self.github.token, *self.secret_values]
        for request in self.github.requests:
            body = request.raw_body.decode("utf-8", "replace")
            for secret in secrets:
                assert secret not in body, f"{request} sent a secret in its body"
        for run in self.runs:
            for secret in secrets:
                assert secret not in run.logs(), f"{run.workflow}:{run.job} printed a secret"

    def live(self, kind: str) -> list[str]:
        assert self.admin is not None
        return self.admin.names(kind)


def make_loop(tmp_path: Path, github: FakeGitHub, namespace: str, secrets: dict[str, str],
              environment_secrets: dict[str, dict[str, str]], admin: Admin | None = None) -> Loop:
    files = Repo(tmp_path / "github", namespace)
    repo = GitHubRepo(files.path)
    repo.commit("The example config repo")
    runner = Runner(tmp_path / "runners", repo, github.repository, github.url, github.token,
                    secrets=secrets, environment_secrets=environment_secrets)
    values = [*secrets.values(), *(v for env in environment_secrets.values() for v in env.values())]
    return Loop(github, repo, files, runner, admin, values)


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    """The fake GitHub API; its token is an App installation token, like Actions' GITHUB_TOKEN."""
    with FakeGitHub(user_login=None) as fake:
        yield fake


@pytest.fixture
def loop(tmp_path: Path, github: FakeGitHub, control_plane: ControlPlane, namespace: str,
         make_user: Callable[..., Path]) -> Loop:
    """The example repo on "GitHub" for ``namespace``, whose Bound PVC exists and whose CI
    identities are bound to exactly the plan Role (a repository secret) and the apply Role (a
    secret of the ``production`` environment)."""
    admin = Admin(control_plane.kubeconfig, namespace)
    admin.bound_pvc("sample-project-pvc")
    admin.install_roles()

    def secret(role: str) -> str:
        return base64.b64encode(embedded_kubeconfig(make_user([role])).encode()).decode()

    return make_loop(tmp_path, github, namespace, {"KUBECONFIG_PLAN": secret("workspace-reconciler-plan")},
                     {"production": {"KUBECONFIG_APPLY": secret("workspace-reconciler-apply")}}, admin)


def only(items: list[T], what: str) -> T:
    """The one item of ``items``; else a failure that shows them all."""
    assert len(items) == 1, f"expected exactly one {what}, got {len(items)}: {[str(i) for i in items]}"
    return items[0]


def add_own_workspace(compute: str = "cpu-mid") -> Callable[[Repo], None]:
    return lambda files: files.add_workspace(WORKSPACE, USER, compute=compute)


def ready_replicas(admin: Admin, name: str) -> int:
    return int(admin.get("Deployment", name)["status"].get("readyReplicas") or 0)


# ---------------------------------------------------------------------------------------------
# 1. A pull request adding a workspace


@pytest.mark.cluster
def test_a_pull_request_adding_a_workspace_gets_one_plan_comment_that_every_push_edits_in_place(
        loop: Loop) -> None:
    loop.converge_main()
    assert loop.admin is not None
    before = loop.admin.resource_versions()

    results = loop.plan(loop.open_pull(1, f"{USER}/vscode", USER, add_own_workspace("gpu-a100-1")))

    assert "ok:" in results["validate"].step("Validate").stderr
    body = only(loop.posted(1), "plan comment POSTed on PR 1").body["body"]
    assert body.startswith(PLAN_MARKER + "\n")
    assert WORKSPACE in body and "create" in body and URL in body and "gpu-a100-1" in body
    # Planned --since the PR's base: its one workspace, not the two already applied.
    assert "Plan: 1 to create, 0 to update, 0 to delete, 0 unchanged" in body
    assert f"Planned 1 workspace, changed since {loop.repo.sha('main')[:12]}: {WORKSPACE}; the repo's 2 other " \
        "workspaces were not read (the drift check compares them all)." in body
    assert re.search(r"^\[Full run and logs\]\(https?://\S+/actions/runs/\w+\)$", body, re.M), "links its run"
    assert loop.edited() == []
    assert PLAN_MARKER in results["plan"].step("Plan").summary, "the job summary carries the plan too"
    assert loop.admin.resource_versions() == before, "a plan changes nothing in the cluster"
    assert WORKSPACE not in loop.live("Deployment")

    loop.plan(loop.push_to_pull(1, f"{USER}/vscode", USER, add_own_workspace("cpu-mid")))

    assert len(loop.posted(1)) == 1, "the second push edits the plan comment instead of adding one"
    patch = only(loop.edited(), "PATCH of the plan comment")
    comment = only(loop.comments(1), "comment on PR 1")
    assert patch.path.endswith(f"/issues/comments/{comment['id']}")
    assert comment["body"] == patch.body["body"]
    assert comment["body"].startswith(PLAN_MARKER)
    assert "cpu-mid" in comment["body"] and "gpu-a100-1" not in comment["body"]
    assert loop.admin.resource_versions() == before
    loop.assert_no_secret_left_the_runner()


# ---------------------------------------------------------------------------------------------
# 2. The merge


@pytest.mark.cluster
def test_merging_it_creates_the_ready_workspace_and_comments_its_url_and_password_command(loop: Loop) -> None:
    loop.converge_main()
    assert loop.admin is not None
    loop.plan(loop.open_pull(1, f"{USER}/vscode", USER, add_own_workspace()))
    plan_body = only(loop.comments(1), "plan comment")["body"]

    merge = loop.merge_pull(1, f"{USER}/vscode", empty_answers=1)
    loop.apply(merge)

    for kind in KINDS:
        assert WORKSPACE in loop.live(kind), kind
    assert ready_replicas(loop.admin, WORKSPACE) == 1
    assert loop.admin.get("Ingress", WORKSPACE)["spec"]["rules"][0]["host"] == URL.removeprefix("https://")
    lookups = loop.github.requests_to("GET", rf"/commits/{merge.sha}/pulls$")
    assert len(lookups) == 2, "the first answer right after the merge is empty: it asks again"
    body = only([p for p in loop.posted(1) if APPLY_MARKER in p.body["body"]], "apply comment").body["body"]
    assert body.startswith(APPLY_MARKER + "\n")
    assert URL in body
    command = f"kubectl -n {loop.namespace} exec deploy/{WORKSPACE} -- cat /home/coder/.config/code-server/config.yaml"
    assert command in body.splitlines()
    assert f"| {URL} | ready |" in body and "**Result: ready.**" in body, body
    assert [c["body"] for c in loop.comments(1)] == [plan_body, body], "the plan comment is left as it was"
    assert loop.edited() == []
    loop.assert_no_secret_left_the_runner()


# ---------------------------------------------------------------------------------------------
# 3. A pull request deleting the file


@pytest.mark.cluster
def test_a_pull_request_deleting_the_file_plans_the_teardown_and_merging_it_keeps_the_pvc(loop: Loop) -> None:
    add_own_workspace()(loop.files)
    loop.repo.commit(f"{USER} joins")
    loop.converge_main()
    assert loop.admin is not None
    assert ready_replicas(loop.admin, WORKSPACE) == 1

    loop.plan(loop.open_pull(2, f"{USER}/done", USER, lambda files: files.remove(WORKSPACE_FILE)))

    body = only(loop.posted(2), "plan comment POSTed on PR 2").body["body"]
    assert body.startswith(PLAN_MARKER)
    assert re.search(rf"{WORKSPACE}\S* — delete", body), body
    assert "Plan: 0 to create, 0 to update, 1 to delete" in body
    assert "PVC sample-project-pvc is not deleted" in body
    assert WORKSPACE in loop.live("Deployment"), "the plan deleted nothing"

    loop.apply(loop.merge_pull(2, f"{USER}/done"))

    for kind in KINDS:
        assert WORKSPACE not in loop.live(kind), kind
        assert set(EXAMPLES) <= set(loop.live(kind)), kind
    assert loop.live("PersistentVolumeClaim") == ["sample-project-pvc"]
    claim = loop.admin.core.read_namespaced_persistent_volume_claim("sample-project-pvc", loop.namespace)
    assert claim.status is not None and claim.status.phase == "Bound"
    applied = only([p for p in loop.posted(2) if APPLY_MARKER in p.body["body"]], "apply comment").body["body"]
    assert f"`{WORKSPACE}`" in applied and "**Result: deleted.**" in applied, applied
    loop.assert_no_secret_left_the_runner()


# ---------------------------------------------------------------------------------------------
# 4. Ownership (`--actor`) and forks: the validate job, which holds no cluster credential


@pytest.fixture
def offline_loop(tmp_path: Path, github: FakeGitHub) -> Loop:
    """The loop without a cluster: the plan job's secret is a kubeconfig that must never be used."""
    unused = base64.b64encode(b"apiVersion: v1\nkind: Config\nusers: [{name: x, user: {token: not-used}}]\n")
    loop = make_loop(tmp_path, github, "sample-project", {"KUBECONFIG_PLAN": unused.decode()}, {})
    loop.files.edit("project.yaml", lambda doc: doc["spec"].update(admins=["carol"]))
    loop.files.add_workspace("bob-vscode", "bob")
    loop.repo.commit("carol administers; bob has a workspace")
    return loop


def test_validation_refuses_alice_changing_bobs_workspace_and_lets_an_admin_do_it(offline_loop: Loop) -> None:
    loop = offline_loop

    def stop_bobs_workspace(files: Repo) -> None:
        files.edit("workspaces/bob-vscode.yaml", lambda doc: doc["spec"].update(state="stopped"))

    event = loop.open_pull(3, "alice/stop-bob", "alice", stop_bobs_workspace)
    results = loop.workflow("plan.yml", event)

    validate = results["validate"].step("Validate")
    assert validate.returncode == 1, str(validate)
    error = only(validate.annotations(), "::error annotation")
    assert re.fullmatch(r"::error file=workspaces/bob-vscode\.yaml,line=\d+,col=\d+::.*\balice\b.*\bbob\b.*", error)
    assert results["plan"].skipped, "no plan, and no cluster credential, for a PR that fails validation"
    assert loop.github.requests == []

    event.actor = "carol"  # the admin re-runs the checks (or pushes to the branch)
    results = loop.workflow("plan.yml", event, jobs=("validate",))
    validate = results["validate"].step("Validate")
    assert validate.returncode == 0, str(validate)
    assert validate.annotations() == []
    loop.assert_no_secret_left_the_runner()


def test_a_fork_pull_request_is_validated_but_never_planned(offline_loop: Loop) -> None:
    loop = offline_loop
    event = loop.open_pull(4, "mallory/vscode", "mallory",
                           lambda files: files.add_workspace("mallory-vscode", "mallory"), fork="mallory/workspaces")
    results = loop.workflow("plan.yml", event)

    assert results["validate"].ok, str(results["validate"])
    assert results["validate"].step("Validate").returncode == 0
    explain = results["validate"].step("Explain that a fork")
    assert not explain.skipped and explain.annotations("notice")
    assert "no cluster credentials" in explain.summary
    assert results["plan"].skipped
    assert loop.github.requests == [], "a fork's run never talks to GitHub with a token"
    loop.assert_no_secret_left_the_runner()
