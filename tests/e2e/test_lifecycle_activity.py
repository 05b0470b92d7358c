"""Activity read from the real IDEs on the real node, and the lifecycle run that acts on it.

The example workspaces (JupyterLab and code-server, the real images) run on the real node behind
Traefik, merged one pull request each through the workflows (as in test_real_workspaces.py), in a
project with an idle limit. `reconcile status` and `reconcile lifecycle` run as an identity bound
only to the `workspace-reconciler-lifecycle` Role of deploy/rbac/: they read each IDE's own
activity endpoint through the API server's service proxy, without the user's password or token.
The clock of the lifecycle run is the test's (`--now`), computed from what `reconcile status`
printed; nothing waits for hours.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.lifecycle import parse_iso
from tests.conftest import RealPlane
from tests.e2e import ides
from tests.e2e.helpers import Admin, reconcile
from tests.e2e.test_pull_request_flow import embedded_kubeconfig, make_loop, only
from tests.e2e.test_real_workspaces import EXAMPLES, PVC, Team, add_example
from tests.e2e.workflow_runner import Event, push_event
from tests.fakegithub import FakeGitHub

pytestmark = [pytest.mark.cluster, pytest.mark.real_node]


@dataclass
class Watched:
    """The real workspaces, and the read-only identity the lifecycle job runs as."""

    team: Team
    kubeconfig: Path
    tmp: Path

    def last_active(self) -> dict[str, dt.datetime | None]:
        """`reconcile status --output json`'s lastActive of each workspace, as the lifecycle identity."""
        run = reconcile("status", "--repo", str(self.team.loop.files.path), "--output", "json",
                        kubeconfig=self.kubeconfig)
        assert run.code == 0, str(run)
        return {w["name"]: parse_iso(w["lastActive"]) if w["lastActive"] else None for w in run.json["workspaces"]}


@pytest.fixture(scope="module")
def watched(real_plane: RealPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    namespace = f"idle-{uuid.uuid4().hex[:6]}"
    admin = Admin(real_plane.kubeconfig, namespace)
    admin.core.create_namespace({"metadata": {"name": namespace}})
    tmp = tmp_path_factory.mktemp("lifecycle-activity")
    try:
        admin.bound_pvc(PVC, host_dir=tmp / "volume")
        admin.install_roles()

        def secret(role: str) -> str:
            kubeconfig = real_plane.user(f"ci-{role}-{uuid.uuid4().hex[:6]}", namespace, [role])
            return base64.b64encode(embedded_kubeconfig(kubeconfig).encode()).decode()

        lifecycle_user = real_plane.user(f"lifecycle-{uuid.uuid4().hex[:6]}", namespace,
                                         ["workspace-reconciler-lifecycle"])
        with FakeGitHub(user_login=None) as github:
            loop = make_loop(tmp, github, namespace, {"KUBECONFIG_PLAN": secret("workspace-reconciler-plan")},
                             {"production": {"KUBECONFIG_APPLY": secret("workspace-reconciler-apply")}}, admin)
            github.git_dir = loop.repo.path
            lifecycle_secret = secret("workspace-reconciler-lifecycle")
            loop.runner.secrets["KUBECONFIG_LIFECYCLE"] = lifecycle_secret
            loop.secret_values.append(lifecycle_secret)
            for name in loop.files.workspaces():
                loop.files.remove(f"workspaces/{name}.yaml")
            loop.files.edit("project.yaml", lambda d: d["spec"].update(idle={"stopAfter": "8h"}))
            loop.repo.commit("Start with no workspace; stop workspaces idle for 8 hours")
            team = Team(loop, real_plane, tmp / "volume", {})
            for number, (tool, (owner, name)) in enumerate(sorted(EXAMPLES.items()), start=1):
                posted = team.merge(number, owner, "workspace", add_example(name))
                assert posted is not None and posted.workspace == name, loop.comments(number)
                team.posted[tool] = posted
            yield Watched(team, lifecycle_user, tmp)
            loop.assert_no_secret_left_the_runner()
    finally:
        admin.delete_namespace_and_wait()


def test_jupyterlab_answers_its_activity_without_the_token_and_everything_else_still_needs_it(
        watched: Watched) -> None:
    team = watched.team
    posted = team.posted["jupyterlab"]
    origin = ides.base(posted.url)
    token = team.credential(posted, "jupyterlab")
    metrics = ides.curl(team.plane.ingress, origin + "/metrics")
    assert metrics.status == 200 and "jupyter_server_last_activity_timestamp_seconds" in metrics.body
    assert token not in metrics.body, "the metrics carry no token"
    assert ides.curl(team.plane.ingress, origin + "/api/contents").status == 403
    assert ides.curl(team.plane.ingress, origin + "/api/status").status == 403
    lab = ides.curl(team.plane.ingress, origin + "/lab")
    assert lab.status == 302 and "/login" in lab.headers, lab.headers
    assert ides.jupyter_api(team.plane.ingress, posted.url, token, "/api/contents").status == 200


def test_an_api_call_or_a_browser_session_moves_last_active_and_doing_nothing_does_not(watched: Watched) -> None:
    team = watched.team
    (_, lab), (_, code) = EXAMPLES["jupyterlab"], EXAMPLES["vscode"]
    before = watched.last_active()
    assert before[lab] is not None and before[code] is not None, before
    time.sleep(3)
    assert watched.last_active() == before, "reading the activity (and doing nothing) does not move it"

    time.sleep(1)
    called = dt.datetime.now(dt.UTC).replace(microsecond=0)
    token = team.credential(team.posted["jupyterlab"], "jupyterlab")
    assert ides.jupyter_api(team.plane.ingress, team.posted["jupyterlab"].url, token, "/api/contents").status == 200
    after_api = watched.last_active()
    assert after_api[lab] is not None and after_api[lab] >= called, (before, after_api)
    assert after_api[code] == before[code], "an API call to one IDE is not activity in the other"

    opened = dt.datetime.now(dt.UTC).replace(microsecond=0)
    password = team.credential(team.posted["vscode"], "vscode")
    ides.browser_login(team.plane.ingress, team.posted["vscode"].url, "vscode", password,
                       ides.ARTIFACTS / "lifecycle-vscode.png")
    after_browser = watched.last_active()
    assert after_browser[code] is not None and after_browser[code] >= opened, (before, after_browser)


def test_the_lifecycle_run_proposes_to_stop_only_the_idle_workspace_and_the_merged_pr_stops_it(
        watched: Watched) -> None:
    team = watched.team
    loop = team.loop
    (john, lab), (jane, code) = EXAMPLES["jupyterlab"], EXAMPLES["vscode"]
    time.sleep(5)
    token = team.credential(team.posted["jupyterlab"], "jupyterlab")
    assert ides.jupyter_api(team.plane.ingress, team.posted["jupyterlab"].url, token, "/api/contents").status == 200
    seen = watched.last_active()
    assert seen[lab] is not None and seen[code] is not None and seen[lab] - seen[code] >= dt.timedelta(seconds=4)
    # Eight hours minus two seconds after JupyterLab's last use: it is not idle, code-server is.
    now = seen[lab] + dt.timedelta(hours=8, seconds=-2)

    clone = loop.repo.checkout(watched.tmp / f"clone-{uuid.uuid4().hex[:6]}", "refs/heads/main",
                               loop.repo.sha("main"))
    env = loop.github.environment(watched.tmp, event_name="schedule")
    run = reconcile("lifecycle", "--repo", str(clone), "--now", now.isoformat(), kubeconfig=watched.kubeconfig,
                    env=env)
    assert run.code == 0, str(run)
    pr = only(loop.github.lifecycle_pulls(), "lifecycle pull request")
    assert pr["head"]["ref"] == f"lifecycle/idle-{jane}" and f"@{jane}" in pr["body"] and code in pr["title"]
    assert john not in pr["body"] and lab not in pr["body"]
    assert f"opened (idle, {jane}): {code}" in run.stdout

    assert loop.admin is not None
    before = loop.repo.sha("main")
    after = loop.github.merge_pull(pr["number"])
    loop.apply(push_event(loop.github.repository, before=before, after=after, actor="maintainer"))
    assert loop.admin.get("Deployment", code)["spec"]["replicas"] == 0
    assert loop.admin.get("Deployment", lab)["spec"]["replicas"] == 1
    status = reconcile("status", "--repo", str(loop.files.path), "--output", "json", kubeconfig=watched.kubeconfig)
    states = {w["name"]: (w["state"], w["lastActive"]) for w in status.json["workspaces"]}
    assert states[code] == ("stopped", None) and states[lab][0] == "ready", states


def test_from_a_clean_clone_the_scheduled_workflow_stops_a_workspace_left_idle_past_the_limit(
        watched: Watched) -> None:
    team = watched.team
    loop = team.loop
    john, lab = EXAMPLES["jupyterlab"]
    # A limit short enough for real time to pass it (the test above moved the clock instead).
    loop.files.edit("project.yaml", lambda d: d["spec"].update(idle={"stopAfter": "15s"}))
    loop.repo.commit("Stop workspaces idle for 15 seconds")
    last = watched.last_active()[lab]
    assert last is not None
    time.sleep(max(0.0, (last + dt.timedelta(seconds=17) - dt.datetime.now(dt.UTC)).total_seconds()))

    def scheduled() -> None:
        event = Event("schedule", {"schedule": "17 * * * *"}, loop.repo.sha("main"), "refs/heads/main",
                      "github-actions[bot]")
        run = loop.workflow("lifecycle.yml", event)["lifecycle"]
        assert run.ok and not run.skipped, str(run)

    scheduled()
    pr = only([p for p in loop.github.lifecycle_pulls() if p["state"] == "open"], "open lifecycle pull request")
    assert pr["head"]["ref"] == f"lifecycle/idle-{john}" and f"@{john}" in pr["body"]
    scheduled()
    assert len([p for p in loop.github.lifecycle_pulls() if p["state"] == "open"]) == 1, "updated, not a second one"

    assert loop.admin is not None
    before = loop.repo.sha("main")
    after = loop.github.merge_pull(pr["number"])
    loop.apply(push_event(loop.github.repository, before=before, after=after, actor="maintainer"))
    assert loop.admin.get("Deployment", lab)["spec"]["replicas"] == 0
    assert PVC in loop.live("PersistentVolumeClaim")
    scheduled()
    assert [p for p in loop.github.lifecycle_pulls() if p["state"] == "open"] == [], "nothing runs: nothing to stop"
