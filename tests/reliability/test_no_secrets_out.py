"""No secrets out: a real Secret in the namespace and credential-like env values in the blocks never
appear in anything the reconciler prints or posts.

The values are in the cluster (in the Deployments: that is where they belong) and in the repo.
They must not be in the stdout or stderr of plan, apply and status in every output format (text,
JSON, Markdown), of creates, updates (the values rotated) and deletes, nor in the pull-request
comments posted to the fake GitHub (a plan on a pull_request event, an apply on a push), nor in
the job summary file, nor in any other file the runs wrote. A change of a masked value is still
reported (as `***`), and the GitHub token itself never shows up either.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ControlPlane
from tests.e2e.helpers import Admin, Repo, reconcile, workspace
from tests.fakegithub import FakeGitHub
from tests.reliability.conftest import record
from tests.reliability.fleet import run_env

pytestmark = pytest.mark.cluster

VSCODE_ENV = "blocks/environments/aisg-vscode-server-v4-16-1.yaml"
JUPYTER_ENV = "blocks/environments/aisg-jupyterlab-server-0-1-0.yaml"
VSCODE, JUPYTER = "jane-doe-vscode", "john-tan-jupyterlab"
K8S_SECRET = {"password": "S3cr3t-DB-Passw0rd-in-a-Secret", "token": "k8s-secret-token-value-xyz"}


def _credentials(round_: int) -> tuple[dict[str, str], dict[str, str], str]:
    """The vscode env, the jupyter env and a `--…token=` arg of one rotation round."""
    vscode = {"HF_TOKEN": f"hf_supersecret123r{round_}", "DB_PASSWORD": f"pg-pass-9f8e7d-r{round_}",
              "AWS_SECRET_ACCESS_KEY": f"aws/secret+key/abc123r{round_}", "API_KEY": f"sk-live-apikey-r{round_}",
              "HF_HOME": "/cache"}
    jupyter = {"JUPYTER_TOKEN": f"jupyter-token-4242-r{round_}", "GITHUB_PAT_KEY": f"ghp_notreal000r{round_}"}
    return vscode, jupyter, f"argtoken-7777-r{round_}"


class Outputs:
    """Everything the runs printed or posted, and the secret values that must be in none of it."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []
        self.secrets: set[str] = set()

    def add(self, what: str, text: str) -> None:
        self.texts.append((what, text))

    def leaks(self) -> list[str]:
        return [f"{what}: {secret!r}" for what, text in self.texts for secret in sorted(self.secrets)
                if secret in text]


def _set_credentials(repo: Repo, out: Outputs, round_: int) -> None:
    vscode, jupyter, arg = _credentials(round_)
    repo.edit(VSCODE_ENV, lambda d: d["spec"].update(env=vscode))
    repo.edit(JUPYTER_ENV, lambda d: d["spec"].update(
        env=jupyter, args=[a for a in d["spec"]["args"] if "token=" not in a] + [f"--ServerApp.token={arg}"]))
    out.secrets |= {v for k, v in vscode.items() if k != "HF_HOME"} | set(jupyter.values()) | {arg}


def test_no_secret_value_appears_in_any_output_format_comment_or_summary(
        control_plane: ControlPlane, admin: Admin, namespace: str, tmp_path: Path) -> None:
    admin.bound_pvc("sample-project-pvc")
    admin.core.create_namespaced_secret(namespace, {"metadata": {"name": "db-credentials"},
                                                    "string_data": K8S_SECRET})
    kc = control_plane.kubeconfig
    repo = Repo(tmp_path / "repo", namespace)
    out = Outputs()
    out.secrets |= set(K8S_SECRET.values()) | {base64.b64encode(v.encode()).decode() for v in K8S_SECRET.values()}
    runs = 0

    def run(what: str, *args: str, env: dict[str, str] | None = None, code: int = 0) -> Any:
        nonlocal runs
        r = reconcile(*args, kubeconfig=kc, env=run_env(env))
        assert r.code == code, f"{what}: {r}"
        out.add(f"{what} stdout", r.stdout)
        out.add(f"{what} stderr", r.stderr)
        runs += 1
        return r

    def plans(what: str) -> dict[str, Any]:
        for fmt in ("text", "markdown"):
            run(f"plan {what} --output {fmt}", "--repo", str(repo), "--dry-run", "--output", fmt)
        return run(f"plan {what} --output json", "--repo", str(repo), "--dry-run", "--output", "json").json

    # create
    _set_credentials(repo, out, 1)
    plans("create")
    run("apply create --output json", "--repo", str(repo), "--output", "json", "--timeout", "90")
    live = admin.get("Deployment", VSCODE)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "HF_TOKEN", "value": "hf_supersecret123r1"} in live, "the values do reach the Deployment"

    # updates: rotate the values, once per apply output format
    for round_, fmt in ((2, "text"), (3, "markdown"), (4, "json")):
        _set_credentials(repo, out, round_)
        p = plans(f"rotation {round_}")
        w = workspace(p, VSCODE)
        assert w["action"] == "update", "a change of a masked value is still a change"
        diff = next(o for o in w["objects"] if o["kind"] == "Deployment")["diff"]
        masked = [d for d in diff if "HF_TOKEN" in d["path"]]
        assert masked and all(d.get("masked") and d["live"] == d["desired"] == "***" for d in masked), diff
        run(f"apply rotation {round_} --output {fmt}", "--repo", str(repo), "--output", fmt, "--timeout", "90")

    for fmt in ("text", "json", "markdown"):
        run(f"status --output {fmt}", "status", "--repo", str(repo), "--output", fmt)

    # pull request: a plan comment on a pull_request event, an apply comment on a push to main
    _set_credentials(repo, out, 5)
    with FakeGitHub() as gh:
        out.secrets.add(gh.token)
        gh.add_pull(7)
        (tmp_path / "pr").mkdir()
        pr_env = gh.environment(tmp_path / "pr", event_name="pull_request", pr=7)
        run("plan --comment (pull_request)", "--repo", str(repo), "--dry-run", "--output", "markdown", "--comment",
            env=pr_env)
        sha = "a" * 40
        gh.add_pull(8, merged=True, merge_commit_sha=sha)
        gh.commit_pulls[sha] = [8]
        (tmp_path / "push").mkdir()
        push_env = gh.environment(tmp_path / "push", event_name="push", sha=sha)
        run("apply --comment (push)", "--repo", str(repo), "--comment", "--timeout", "90", env=push_env)
        bodies = [r.raw_body.decode(errors="replace") for r in gh.requests]
        comments = [c["body"] for cs in gh.comments.values() for c in cs]
    assert len(comments) == 2 and any("workspace-gitops:plan" in c for c in comments) \
        and any("workspace-gitops:apply" in c for c in comments), comments
    assert any("***" in c for c in comments), "the rotated values show as masked in the plan comment"
    for i, body in enumerate(bodies):
        out.add(f"request body {i} to GitHub", body)
    for i, body in enumerate(comments):
        out.add(f"comment {i}", body)

    # a teardown
    repo.remove(f"workspaces/{JUPYTER}.yaml")
    plans("delete")
    run("apply delete --output markdown", "--repo", str(repo), "--output", "markdown", "--no-wait")

    # every file the runs wrote (the job summaries, the event payloads) except the repo itself
    files = [f for f in tmp_path.rglob("*") if f.is_file() and repo.path not in f.parents]
    summaries = [f for f in files if f.name == "step-summary.md"]
    assert summaries and all(f.read_text().strip() for f in summaries), "the job summaries were written"
    for f in files:
        out.add(str(f.relative_to(tmp_path)), f.read_text(errors="replace"))

    leaks = out.leaks()
    assert leaks == [], "\n".join(leaks)
    # The control: `render` writes the desired objects, env values included, so the scan must find them there.
    control = Outputs()
    control.secrets = {v for k, v in _credentials(5)[0].items() if k != "HF_HOME"}  # jupyter is torn down
    r = reconcile("render", "--repo", str(repo), "--output-dir", str(tmp_path / "rendered"))
    assert r.code == 0, str(r)
    for f in (tmp_path / "rendered").iterdir():
        control.add(f.name, f.read_text())
    assert {leak.split(": ", 1)[1] for leak in control.leaks()} == {repr(v) for v in control.secrets}, control.leaks()
    assert not re.search(r"hf_supersecret|pg-pass-9f8e7d|sk-live-apikey", "".join(t for _, t in out.texts))
    record("no secrets out", runs=runs, outputs_scanned=len(out.texts), secret_values=len(out.secrets),
           comments=len(comments), files=len(files), leaks=0)
