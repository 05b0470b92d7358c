"""The lifecycle loop end to end: `reconcile lifecycle`'s pull requests on the fake GitHub, merged and applied.

The "GitHub" side is a real Git repository (tests/e2e/workflow_runner.GitHubRepo) that the fake
GitHub API works on: the lifecycle run creates branches, commits files and opens pull requests
through the API, as it would on github.com. Merging one is a real Git merge on main, and then
`.github/workflows/apply.yml` runs job by job (the same runner as tests/e2e/test_pull_request_flow.py)
against the real control plane, as the apply identity of deploy/rbac/.

Activity here comes from a table the test sets (the IDEs' own readings are tested against the real
IDEs on the real node in test_lifecycle_activity.py), and the clock is the test's: every run is
given `now`, so no test waits for hours. Each lifecycle run starts from nothing but the repository
and GitHub: what a run "remembers" it reads back from the pull requests.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reconciler.github_api import GitHubContext
from reconciler.lifecycle import Activity, parse_marker
from reconciler.proposals import LifecycleOptions, LifecycleResult, run_lifecycle
from reconciler.render import DesiredWorkspace, render
from reconciler.validate import load_repo
from tests.conftest import ControlPlane
from tests.e2e.helpers import reconcile
from tests.e2e.test_pull_request_flow import APPLY_MARKER, Loop, github, loop, only  # noqa: F401
from tests.e2e.workflow_runner import push_event
from tests.fakegithub import FakeGitHub

pytestmark = pytest.mark.cluster

T0 = dt.datetime(2027, 3, 1, 12, 0, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)
VSCODE, LAB, JOHN = "jane-doe-vscode", "jane-doe-lab", "john-tan-jupyterlab"


@dataclass
class Readings:
    """The last activity of each running workspace, as the test says (an `ActivitySource`)."""

    last: dict[str, dt.datetime] = field(default_factory=dict)

    def activity(self, project: str, desired: list[DesiredWorkspace]) -> dict[str, Activity]:
        return {w.name: Activity(w.name, self.last[w.name], "test") for w in desired
                if w.state == "running" and w.name in self.last}


@dataclass
class Lifecycle:
    """The lifecycle runs of one project: each a fresh `reconcile lifecycle` at the test's time."""

    loop: Loop
    readings: Readings
    env: dict[str, str]

    def run(self, now: dt.datetime, active: tuple[str, ...] = ()) -> LifecycleResult:
        """One lifecycle run at `now`; the workspaces in `active` were used an hour before."""
        for name in active:
            self.readings.last[name] = now - H
        repo = load_repo(self.loop.files.path)
        ctx = GitHubContext.from_env(self.env)
        return run_lifecycle(repo, render(repo), self.readings, ctx, LifecycleOptions(now=now))

    @property
    def github(self) -> FakeGitHub:
        return self.loop.github

    def pulls(self, state: str | None = None) -> list[dict[str, object]]:
        return [p for p in self.github.lifecycle_pulls() if state is None or p["state"] == state]

    def branch(self, owner: str) -> list[dict[str, object]]:
        """The idle pull requests of `owner`, oldest first."""
        return [p for p in self.pulls() if p["head"]["ref"] == f"lifecycle/idle-{owner}"]  # type: ignore[index]

    def record(self, pull: dict[str, object]) -> dict[str, str]:
        marker = parse_marker(pull["body"])
        assert marker is not None, pull["body"]
        return dict(marker["workspaces"])

    def merge_and_apply(self, number: int) -> None:
        before = self.loop.repo.sha("main")
        after = self.github.merge_pull(number)
        self.loop.apply(push_event(self.github.repository, before=before, after=after, actor="maintainer"))


@pytest.fixture
def lifecycle(loop: Loop, github: FakeGitHub, tmp_path: Path) -> Lifecycle:  # noqa: F811
    """The example repo plus a second workspace of jane-doe, an idle limit, applied to the cluster."""
    github.git_dir = loop.repo.path
    loop.files.add_workspace(LAB, "jane-doe", environment="aisg-jupyterlab-server-0-1-0", compute="cpu-small")
    loop.files.edit("project.yaml", lambda d: d["spec"].update(idle={"stopAfter": "8h", "warnAfter": "6h"}))
    loop.repo.commit("An idle limit, and a second workspace for jane-doe")
    loop.converge_main()
    env = github.environment(tmp_path, event_name="schedule")
    return Lifecycle(loop, Readings(), env)


def test_an_idle_workspace_gets_one_pr_per_owner_that_is_updated_closed_remembered_and_merged_then_applied(
        lifecycle: Lifecycle) -> None:
    lc, flow = lifecycle, lifecycle.loop
    lc.readings.last = {VSCODE: T0 - 9 * H, LAB: T0 - 1 * H, JOHN: T0 - 7 * H}

    # Idle past the limit: exactly one pull request, for its owner; the active ones get none.
    first = lc.run(T0)
    pr = only(lc.pulls(), "lifecycle pull request")
    assert pr["head"]["ref"] == "lifecycle/idle-jane-doe" and pr["base"]["ref"] == "main"  # type: ignore[index]
    assert lc.record(pr) == {VSCODE: "2027-03-01T03:00:00Z"}
    body = str(pr["body"])
    assert "@jane-doe" in body and "2027-03-01 03:00:00" in body and "| 9h |" in body
    assert "keeps everything on the volume" in body and "**Closing**" in body
    stopped = lc.github.file_at("lifecycle/idle-jane-doe", f"workspaces/{VSCODE}.yaml")
    assert stopped is not None and "state: stopped" in stopped and "state: running" not in stopped
    assert "state: running" in (lc.github.file_at("main", f"workspaces/{VSCODE}.yaml") or "")
    assert any(JOHN in w and "idle for 7h" in w for w in first.plan.warnings), first.plan.warnings

    # The next run changes nothing: the same one pull request.
    lc.run(T0 + 0.5 * H)
    assert len(lc.pulls()) == 1 and len(lc.github.requests_to("POST", r"/pulls$")) == 1

    # Another of jane-doe's workspaces goes idle: the same pull request, updated; john-tan gets his own.
    lc.run(T0 + 8 * H)
    jane, john = lc.branch("jane-doe"), lc.branch("john-tan")
    assert [p["number"] for p in jane] == [pr["number"]] and set(lc.record(jane[0])) == {VSCODE, LAB}
    assert "state: stopped" in (lc.github.file_at("lifecycle/idle-jane-doe", f"workspaces/{LAB}.yaml") or "")
    assert len(john) == 1 and lc.record(john[0]) == {JOHN: "2027-03-01T05:00:00Z"} and "@john-tan" in str(
        john[0]["body"])

    # Used again after the PR was opened: dropped from it (and a PR left with nothing is closed).
    lc.readings.last[LAB] = lc.readings.last[JOHN] = T0 + 8.5 * H
    lc.run(T0 + 9 * H)
    jane, john = lc.branch("jane-doe"), lc.branch("john-tan")
    assert list(lc.record(jane[0])) == [VSCODE] and jane[0]["state"] == "open"
    assert "state: running" in (lc.github.file_at("lifecycle/idle-jane-doe", f"workspaces/{LAB}.yaml") or "")
    assert john[0]["state"] == "closed" and not john[0]["merged_at"]
    assert any("used again" in c["body"] for c in flow.comments(int(john[0]["number"])))  # type: ignore[call-overload]

    # Closed by its owner: kept running, and remembered by the next runs (they read it from GitHub).
    lc.github.close_pull(int(pr["number"]))  # type: ignore[call-overload]
    again = lc.run(T0 + 20 * H, active=(LAB, JOHN))
    assert len(lc.branch("jane-doe")) == 1, "no new pull request for a workspace whose stop was declined"
    assert any(VSCODE in r for r in again.plan.remembered), again.plan.remembered

    # Used again, then idle again: a new pull request.
    lc.readings.last[VSCODE] = T0 + 21 * H
    lc.run(T0 + 22 * H, active=(LAB, JOHN))
    assert len(lc.branch("jane-doe")) == 1
    lc.run(T0 + 30 * H, active=(LAB, JOHN))
    pr2 = only(lc.pulls("open"), "open lifecycle pull request")
    assert pr2["number"] != pr["number"] and list(lc.record(pr2)) == [VSCODE]

    # Merged: the normal apply stops it, and comments on the merged pull request.
    assert flow.admin is not None
    assert flow.admin.get("Deployment", VSCODE)["spec"]["replicas"] == 1
    lc.merge_and_apply(int(pr2["number"]))  # type: ignore[call-overload]
    assert flow.admin.get("Deployment", VSCODE)["spec"]["replicas"] == 0
    assert VSCODE in flow.live("Service") and VSCODE in flow.live("Ingress"), "stopping deletes nothing"
    assert flow.admin.get("Deployment", LAB)["spec"]["replicas"] == 1
    assert any(APPLY_MARKER in c["body"] for c in flow.comments(int(pr2["number"])))  # type: ignore[call-overload]

    # Stopped: no more pull requests for it.
    lc.run(T0 + 60 * H, active=(LAB, JOHN))
    assert lc.pulls("open") == []
    flow.assert_no_secret_left_the_runner()


def test_an_expired_workspace_gets_a_teardown_pr_that_merged_deletes_its_objects_and_keeps_the_pvc(
        lifecycle: Lifecycle) -> None:
    lc, flow = lifecycle, lifecycle.loop
    lc.readings.last = {VSCODE: T0, LAB: T0, JOHN: T0}
    flow.files.edit(f"workspaces/{LAB}.yaml", lambda d: d["spec"].update(expires="2027-03-05"))
    flow.repo.commit("jane-doe-lab expires on 2027-03-05")

    everyone = (VSCODE, LAB, JOHN)
    lc.run(dt.datetime(2027, 3, 4, 23, 59, tzinfo=dt.UTC), active=everyone)
    assert lc.pulls() == [], "not expired yet"
    lc.run(dt.datetime(2027, 3, 5, 0, 1, tzinfo=dt.UTC), active=everyone)
    pr = only(lc.pulls(), "teardown pull request")
    assert pr["head"]["ref"] == "lifecycle/expired-jane-doe"  # type: ignore[index]
    assert lc.record(pr) == {LAB: "2027-03-05"}
    assert "@jane-doe" in str(pr["body"]) and "PVCs of the data sources are never deleted" in str(pr["body"])
    assert lc.github.file_at("lifecycle/expired-jane-doe", f"workspaces/{LAB}.yaml") is None, "the file is deleted"

    assert flow.admin is not None
    lc.merge_and_apply(int(pr["number"]))  # type: ignore[call-overload]
    for kind in ("Deployment", "Service", "Ingress"):
        assert LAB not in flow.live(kind), kind
    assert "sample-project-pvc" in flow.live("PersistentVolumeClaim"), "the PVC is kept"
    assert VSCODE in flow.live("Deployment")


def test_the_plan_comment_shows_cost_and_warns_before_expiry(
        loop: Loop, control_plane: ControlPlane) -> None:  # noqa: F811
    kubeconfig = control_plane.kubeconfig
    loop.files.edit("project.yaml", lambda d: d["spec"].update(
        prices={"currency": "USD", "cpu": 0.04, "memoryGiB": 0.005, "gpu": 2.5}))
    soon = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=3)).isoformat()
    loop.files.add_workspace("ann-lee-vscode", "ann-lee", compute="cpu-mid")
    loop.files.edit("workspaces/ann-lee-vscode.yaml", lambda d: d["spec"].update(expires=soon))

    plan = reconcile("--repo", str(loop.files.path), "--dry-run", "--output", "markdown", kubeconfig=kubeconfig)
    assert plan.code == 0, str(plan)
    text = plan.stdout
    # cpu-mid is 4 CPUs and 16 GiB: 4 * 0.04 + 16 * 0.005 = 0.24 an hour, 175.20 a 730-hour month.
    assert "#### Cost" in text
    assert "| `ann-lee-vscode` | create (running) | USD 0.00/h | USD 0.24/h | USD 175.20 |" in text, text
    # Before: nothing runs in this namespace; after: the three workspaces (two cpu-small examples).
    assert "**Project total:** USD 0.00/h, USD 0.00/month before;" in text
    assert "#### Expiry" in text and f"ann-lee-vscode expires on {soon} (in 3 days)" in text

    loop.files.edit("project.yaml", lambda d: d["spec"].pop("prices"))
    without = reconcile("--repo", str(loop.files.path), "--dry-run", "--output", "markdown", kubeconfig=kubeconfig)
    assert without.code == 0 and "#### Cost" not in without.stdout and "USD" not in without.stdout
