"""The product's promise, on real parts: a merged pull request's comment, followed literally, logs a person in.

The control plane here has a real node (kubelet + containerd + runc + a CNI bridge) that runs the
real workspace images (JupyterLab from PyPI, code-server from npm, built offline by
tests/cluster/images), a real ingress controller (Traefik) in front of the rendered Ingresses,
and a hostPath PersistentVolume for the project's claim. Each pull request runs through the
workflows' own steps against the fake GitHub (tests/e2e/test_pull_request_flow.py); then the URL
and the ``password/token:`` command are taken from the comment posted on the merged PR, the
command is run exactly as posted, and what it prints logs in: with curl through the ingress and
with Chromium, which must show JupyterLab's launcher and VS Code's workbench.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import RealPlane
from tests.e2e import ides
from tests.e2e.helpers import Admin, Repo
from tests.e2e.test_pull_request_flow import APPLY_MARKER, Loop, embedded_kubeconfig, make_loop, only
from tests.fakegithub import FakeGitHub

pytestmark = [pytest.mark.cluster, pytest.mark.real_node]

PVC = "sample-project-pvc"
EXAMPLES = {"jupyterlab": ("john-tan", "john-tan-jupyterlab"), "vscode": ("jane-doe", "jane-doe-vscode")}


@dataclass
class Posted:
    """What the apply comment on a merged PR told its author."""

    workspace: str
    url: str
    command: str
    body: str


@dataclass
class Team:
    """A project on the real node: its "GitHub" loop, its namespace and the host folder behind its PVC."""

    loop: Loop
    plane: RealPlane
    volume: Path
    posted: dict[str, Posted]

    def merge(self, number: int, actor: str, change_name: str, change: object) -> Posted | None:
        """`actor` opens PR `number` with `change`, it is planned, merged and applied; the apply comment."""
        branch = f"{actor}/{change_name}"
        self.loop.plan(self.loop.open_pull(number, branch, actor, change))  # type: ignore[arg-type]
        self.loop.apply(self.loop.merge_pull(number, branch))
        comments = [c["body"] for c in self.loop.comments(number) if APPLY_MARKER in c["body"]]
        return posted_from(only(comments, f"apply comment on PR {number}"))

    def credential(self, posted: Posted, tool: str) -> str:
        """Run the posted command as the user would and take the password or token from what it printed."""
        run = ides.run_posted_command(posted.command, self.plane.kubeconfig, self.plane.kubectl.parent)
        assert run.returncode == 0, f"`{posted.command}` failed ({run.returncode}):\n{run.stdout}\n{run.stderr}"
        return ides.credential(tool, run.stdout)


def posted_from(body: str) -> Posted | None:
    """The URL and credential command of the workspace an apply comment names (None for a teardown)."""
    url = re.search(r"^Open <(https://[^>]+)>", body, re.M)
    command = re.search(r"^```sh\n(kubectl -n \S+ (?:exec|logs) deploy/(\S+) .*)\n```$", body, re.M)
    if url is None or command is None:
        return None
    return Posted(workspace=command.group(2), url=url.group(1), command=command.group(1), body=body)


def add_example(name: str) -> object:
    """The change that adds the example workspace file `name` as the repo ships it."""
    text = (ides.ROOT / "workspaces" / f"{name}.yaml").read_text(encoding="utf-8")
    return lambda files: (files.path / "workspaces" / f"{name}.yaml").write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def team(real_plane: RealPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    """The example repo on "GitHub", its workspaces merged one pull request each by their owners."""
    namespace = f"real-{uuid.uuid4().hex[:6]}"
    admin = Admin(real_plane.kubeconfig, namespace)
    admin.core.create_namespace({"metadata": {"name": namespace}})
    tmp = tmp_path_factory.mktemp("real-workspaces")
    volume = tmp / "volume"
    try:
        admin.bound_pvc(PVC, host_dir=volume)
        admin.install_roles()

        def secret(role: str) -> str:
            kubeconfig = real_plane.user(f"ci-{role}-{uuid.uuid4().hex[:6]}", namespace, [role])
            return base64.b64encode(embedded_kubeconfig(kubeconfig).encode()).decode()

        with FakeGitHub(user_login=None) as github:
            loop = make_loop(tmp, github, namespace, {"KUBECONFIG_PLAN": secret("workspace-reconciler-plan")},
                             {"production": {"KUBECONFIG_APPLY": secret("workspace-reconciler-apply")}}, admin)
            for name in loop.files.workspaces():
                loop.files.remove(f"workspaces/{name}.yaml")
            loop.repo.commit("Start with no workspace")
            t = Team(loop, real_plane, volume, {})
            for number, (tool, (owner, name)) in enumerate(sorted(EXAMPLES.items()), start=1):
                posted = t.merge(number, owner, "workspace", add_example(name))
                assert posted is not None and posted.workspace == name, loop.comments(number)
                t.posted[tool] = posted
            yield t
            loop.assert_no_secret_left_the_runner()
    finally:
        admin.delete_namespace_and_wait()


def test_the_merged_pr_comment_names_the_url_and_a_command_that_prints_the_password_or_token(team: Team) -> None:
    for tool, posted in team.posted.items():
        assert "**Result: ready.**" in posted.body, posted.body
        assert posted.url.startswith(f"https://sample-project-{posted.workspace}.runai.aisingapore.net")
        secret = team.credential(posted, tool)
        assert len(secret) >= 16, f"{tool}: a real generated credential, got {secret!r}"


def test_jupyterlab_answers_its_api_with_the_posted_token_through_the_ingress(team: Team) -> None:
    posted = team.posted["jupyterlab"]
    token = team.credential(posted, "jupyterlab")
    status = ides.jupyter_api(team.plane.ingress, posted.url, token)
    assert status.status == 200, status
    assert "last_activity" in json.loads(status.body)
    page = ides.curl(team.plane.ingress, f"{posted.url}?token={token}")
    assert page.status == 200 and "JupyterLab" in page.body


def test_code_server_accepts_the_posted_password_and_serves_the_workbench(team: Team) -> None:
    posted = team.posted["vscode"]
    password = team.credential(posted, "vscode")
    login = ides.code_server_login(team.plane.ingress, posted.url, password)
    assert login.status == 302, login
    cookie = login.cookie("code-server-session")
    assert cookie, login.headers
    home = ides.curl(team.plane.ingress, posted.url + "/", "-L", "-b", f"code-server-session={cookie}")
    assert home.status == 200 and "workbench" in home.body, home.body[:500]


def test_a_wrong_password_or_token_is_refused_by_the_ide_itself(team: Team) -> None:
    jupyter = team.posted["jupyterlab"]
    assert ides.jupyter_api(team.plane.ingress, jupyter.url, "0" * 48).status == 403
    refused = ides.browser_login_refused(team.plane.ingress, jupyter.url, "jupyterlab", "0" * 48)
    assert "Invalid" in refused or "password" in refused.lower(), refused
    vscode = team.posted["vscode"]
    login = ides.code_server_login(team.plane.ingress, vscode.url, "not-the-password")
    assert login.status == 200 and login.cookie("code-server-session") is None, login
    assert "Incorrect password" in ides.browser_login_refused(team.plane.ingress, vscode.url, "vscode", "nope")


@pytest.mark.parametrize("tool", ["jupyterlab", "vscode"])
def test_chromium_logs_in_at_the_posted_url_and_the_ide_opens(team: Team, tool: str) -> None:
    posted = team.posted[tool]
    secret = team.credential(posted, tool)
    screenshot = ides.ARTIFACTS / f"{tool}.png"
    title = ides.browser_login(team.plane.ingress, posted.url, tool, secret, screenshot)
    assert ("JupyterLab" in title) if tool == "jupyterlab" else ("Visual Studio Code" in title or "code-server"
                                                                 in title), title
    assert screenshot.stat().st_size > 10_000, "a screenshot of a painted IDE, not a blank page"


def test_vs_code_opens_the_folder_without_asking_to_trust_it(team: Team) -> None:
    """No Restricted Mode and no "Do you trust the authors" dialog: the folder is the owner's own."""
    posted = team.posted["vscode"]
    shown = ides.browser_first_open(team.plane.ingress, posted.url, "vscode", team.credential(posted, "vscode"),
                                    ides.ARTIFACTS / "vscode-first-open.png").lower()
    assert "explorer" in shown, shown[:500]  # the workbench with its folder, not a blank page
    assert "trust the authors" not in shown and "restricted mode" not in shown, shown[:1000]


def test_jupyterlab_opens_without_a_news_prompt_and_logs_no_deprecation_warning(team: Team) -> None:
    """News off in JupyterLab's page config (LabApp.news_url=None) and in the image's settings overrides
    (no "Would you like to get notified about official Jupyter news?"); no NotebookApp flag, so no warning."""
    posted = team.posted["jupyterlab"]
    token = team.credential(posted, "jupyterlab")
    page = ides.curl(team.plane.ingress, f"{posted.url}?token={token}")
    assert page.status == 200, page
    assert re.search(r'"news":\s*\{"disabled":\s*true\}', page.body), "news is off in JupyterLab's page config"
    news = ides.jupyter_api(team.plane.ingress, posted.url, token, "/lab/api/news")
    assert news.status == 200 and json.loads(news.body)["news"] == [], news
    log = ides.run_posted_command(f"kubectl -n {team.loop.namespace} logs deploy/{posted.workspace} -c workspace",
                                  team.plane.kubeconfig, team.plane.kubectl.parent)
    assert log.returncode == 0 and "ServerApp" in log.stdout + log.stderr, log
    noisy = [line for line in (log.stdout + log.stderr).splitlines()
             if re.search(r"NotebookApp|notebook_dir|deprecat", line, re.I)]
    assert noisy == [], noisy
    shown = ides.browser_first_open(team.plane.ingress, posted.url, "jupyterlab", token,
                                    ides.ARTIFACTS / "jupyterlab-first-open.png").lower()
    assert "launcher" in shown or "notebook" in shown, shown[:500]  # JupyterLab painted, not a blank page
    assert "jupyter news" not in shown and "newer version" not in shown, shown[:1000]


def test_python_runs_in_a_jupyterlab_console_over_the_ingress_websocket(team: Team) -> None:
    posted = team.posted["jupyterlab"]
    token = team.credential(posted, "jupyterlab")
    assert ides.browser_console(team.plane.ingress, posted.url, token, "6 * 7").strip() == "42"


def test_a_command_typed_in_vs_codes_terminal_runs_in_the_workspace(team: Team) -> None:
    owner, _ = EXAMPLES["vscode"]
    posted = team.posted["vscode"]
    password = team.credential(posted, "vscode")
    mark = uuid.uuid4().hex
    written = team.volume / "workspaces" / owner / "from-terminal.txt"
    expected = f"{mark} 42 1000\n"

    def done() -> bool:
        return written.exists() and written.read_text() == expected

    ides.browser_vscode_terminal(team.plane.ingress, posted.url, password,
                                 f"echo {mark} $((6 * 7)) $(id -u) > from-terminal.txt", done)
    assert done(), f"the shell ran in the owner's folder as UID 1000 (screenshot: {ides.ARTIFACTS})"


def test_a_file_made_in_jupyterlab_survives_stop_start_teardown_and_a_new_workspace_sees_it(team: Team) -> None:
    owner, name = EXAMPLES["jupyterlab"]
    posted = team.posted["jupyterlab"]
    on_host = team.volume / "workspaces" / owner / "notes.txt"
    text = f"kept {uuid.uuid4().hex}\n"
    body = json.dumps({"type": "file", "format": "text", "content": text})
    token = team.credential(posted, "jupyterlab")
    made = ides.jupyter_api(team.plane.ingress, posted.url, token, "/api/contents/notes.txt", "-X", "PUT",
                            "-H", "Content-Type: application/json", "--data-binary", body)
    assert made.status in (200, 201), made
    assert on_host.read_text() == text, "the IDE's folder is the owner's folder on the PVC"

    def set_state(state: str) -> object:
        return lambda files: files.edit(f"workspaces/{name}.yaml", lambda d: d["spec"].update(state=state))

    team.merge(10, owner, "stop", set_state("stopped"))
    assert team.loop.admin is not None
    assert team.loop.admin.get("Deployment", name)["spec"]["replicas"] == 0
    assert on_host.read_text() == text
    again = team.merge(11, owner, "start", set_state("running"))
    assert again is not None
    token = team.credential(again, "jupyterlab")
    read = ides.jupyter_api(team.plane.ingress, again.url, token, "/api/contents/notes.txt")
    assert read.status == 200 and json.loads(read.body)["content"] == text

    team.merge(12, owner, "done", lambda files: files.remove(f"workspaces/{name}.yaml"))
    assert name not in team.loop.live("Deployment")
    assert PVC in team.loop.live("PersistentVolumeClaim")
    assert on_host.read_text() == text, "a teardown never touches the data on the PVC"

    def add_vscode(files: Repo) -> None:
        files.add_workspace(f"{owner}-vscode", owner, compute="cpu-small")

    new = team.merge(13, owner, "vscode", add_vscode)
    assert new is not None
    seen = ides.run_posted_command(f"kubectl -n {team.loop.namespace} exec deploy/{owner}-vscode -c workspace -- "
                                   f"cat /{PVC}/workspaces/{owner}/notes.txt", team.plane.kubeconfig,
                                   team.plane.kubectl.parent)
    assert seen.returncode == 0 and seen.stdout == text, seen
    password = team.credential(new, "vscode")
    assert ides.code_server_login(team.plane.ingress, new.url, password).status == 302
