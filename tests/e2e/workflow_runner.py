"""Run a GitHub Actions workflow's jobs locally, the way a runner would, for end-to-end tests.

Only what our workflows use is emulated, and anything else fails loudly rather than being
guessed at:

* ``uses: actions/checkout@v4`` is replaced by :meth:`GitHubRepo.checkout` (a fresh clone of the
  test's "GitHub" repository, of the ref the event names, honouring ``fetch-depth``);
  ``uses: actions/setup-python@v5`` and the install steps are replaced by the venv the tests run
  in, first on ``PATH``, so ``reconcile`` and ``python -m reconciler`` are the real CLI:
  ``python -m pip install --require-hashes --no-deps -r LOCK`` (the pinned dependencies) is a
  no-op, and ``python -m pip install .`` puts the checkout first on ``PYTHONPATH`` for the later
  steps, so a checkout that holds a ``reconciler/`` package runs its own code, as it would on
  GitHub.
* Every ``run:`` step runs with ``bash --noprofile --norc -eo pipefail <script>`` in the checkout,
  with the environment GitHub sets (``GITHUB_EVENT_PATH``, ``GITHUB_SHA``, ``RUNNER_TEMP``, a
  fresh ``GITHUB_OUTPUT`` and ``GITHUB_STEP_SUMMARY`` per step ...) plus the workflow's, the
  job's and the step's ``env:``, whose ``${{ ... }}`` expressions are evaluated against the
  ``github``, ``secrets`` and ``steps`` contexts. ``GITHUB_TOKEN`` is *not* in a step's
  environment unless its ``env:`` passes ``${{ github.token }}``, as on GitHub.
* ``if:`` (of jobs and steps) supports ``always()``, ``success()``, ``failure()``, ``==``, ``!=``,
  ``&&``, ``||``, ``!`` and parentheses, with GitHub's case-insensitive string comparison and its
  implicit ``success() &&``; ``needs:`` skips a job whose needed job did not succeed.
* Secrets: the repository's, plus those of the job's ``environment:`` only for a job that
  declares it (so a job without ``environment: production`` cannot see the apply credentials).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
VENV_BIN = Path(sys.executable).parent
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
INSTALL_STEP = "python -m pip install ."
LOCK_INSTALL_STEP = re.compile(r"python -m pip install --require-hashes --no-deps -r \S+")
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "GitHub",
    "GIT_COMMITTER_EMAIL": "noreply@github.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def load_workflow(name: str) -> dict[str, Any]:
    """The parsed workflow file ``.github/workflows/<name>`` (``on`` restored from YAML 1.1's ``True``)."""
    doc = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    assert isinstance(doc, dict), name
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


# ---------------------------------------------------------------------------------------------
# Git: the "GitHub" side of the repository, and actions/checkout


def git(cwd: Path, *args: str, check: bool = True) -> str:
    """Run git in ``cwd`` with a fixed identity and no user or system configuration; its stdout."""
    env = {"PATH": SYSTEM_PATH, "HOME": str(cwd), **GIT_IDENTITY}
    p = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {cwd}:\n{p.stdout}{p.stderr}")
    return p.stdout.strip()


class GitHubRepo:
    """The repository as GitHub holds it: branches, and ``refs/pull/N/{head,merge}`` for open PRs.

    ``path`` is an ordinary working tree: write files there, then :meth:`commit`. ``main`` is
    checked out between operations.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        git(path, "init", "--quiet", "--initial-branch=main")
        git(path, "config", "uploadpack.allowAnySHA1InWant", "true")  # checkout fetches by SHA

    def commit(self, message: str, branch: str = "main") -> str:
        """Commit every change of the working tree on ``branch`` (created from main if new)."""
        current = git(self.path, "symbolic-ref", "--short", "HEAD")
        if branch != current:
            exists = git(self.path, "branch", "--list", branch)
            git(self.path, "checkout", "--quiet", *([] if exists else ["-b"]), branch)
        git(self.path, "add", "--all")
        git(self.path, "commit", "--quiet", "--allow-empty", "-m", message)
        return self.sha(branch)

    def branch(self, name: str) -> None:
        """Start ``name`` from main and switch the working tree to it."""
        git(self.path, "checkout", "--quiet", "-b", name, "main")

    def switch(self, name: str) -> None:
        git(self.path, "checkout", "--quiet", name)

    def sha(self, ref: str) -> str:
        return git(self.path, "rev-parse", ref)

    def update_pull_refs(self, number: int, branch: str) -> str:
        """What GitHub does on every push to a PR: ``refs/pull/N/head`` and the test merge commit
        ``refs/pull/N/merge`` of the branch into main. Returns the merge commit's SHA."""
        git(self.path, "update-ref", f"refs/pull/{number}/head", self.sha(branch))
        git(self.path, "checkout", "--quiet", "--detach", "main")
        git(self.path, "merge", "--quiet", "--no-ff", "-m", f"Merge {self.sha(branch)} into {self.sha('main')}", branch)
        merge = self.sha("HEAD")
        git(self.path, "update-ref", f"refs/pull/{number}/merge", merge)
        git(self.path, "checkout", "--quiet", "main")
        return merge

    def merge(self, number: int, branch: str) -> str:
        """Merge the PR's branch into main (a merge commit); returns the new main SHA."""
        git(self.path, "checkout", "--quiet", "main")
        git(self.path, "merge", "--quiet", "--no-ff", "-m", f"Merge pull request #{number} from {branch}", branch)
        return self.sha("main")

    def checkout(self, target: Path, ref: str, sha: str, fetch_depth: int = 1) -> Path:
        """``actions/checkout@v4``: a new clone at ``target`` with ``sha`` (fetched as ``ref``) checked
        out detached; all branches as ``origin/*`` when ``fetch_depth`` is 0, else that depth only."""
        target.mkdir(parents=True)
        git(target, "init", "--quiet")
        git(target, "remote", "add", "origin", self.path.as_uri())
        depth = [] if fetch_depth == 0 else [f"--depth={fetch_depth}"]
        if fetch_depth == 0:
            git(target, "fetch", "--quiet", "--prune", "origin", "+refs/heads/*:refs/remotes/origin/*")
        remote = ref.removeprefix("refs/heads/")
        local = f"refs/remotes/origin/{remote}" if ref.startswith("refs/heads/") else f"refs/remotes/{ref[5:]}"
        git(target, "fetch", "--quiet", *depth, "origin", f"+{sha}:{local}")
        git(target, "checkout", "--quiet", "--detach", sha)
        return target


# ---------------------------------------------------------------------------------------------
# Expressions


_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<op>==|!=|&&|\|\||!|\(|\))"
    r"|(?P<call>(?:always|success|failure|cancelled)\(\))|(?P<literal>true|false|null)\b"
    r"|(?P<number>\d+)\b|(?P<path>[A-Za-z_][\w-]*(?:\.[A-Za-z_*][\w-]*)*))"
)
_STATUS_CALL = re.compile(r"\b(always|success|failure|cancelled)\(\)")


class Expressions:
    """The subset of GitHub's expression language our workflows use (see the module doc)."""

    def __init__(self, contexts: Mapping[str, Any], *, job_ok: bool = True) -> None:
        self.contexts = contexts
        self.job_ok = job_ok

    def value(self, text: str) -> Any:
        tokens = self._tokens(text)
        result, rest = self._or(tokens)
        if rest:
            raise NotImplementedError(f"cannot evaluate {text!r} (left over: {rest})")
        return result

    def condition(self, text: str | bool | None) -> bool:
        """An ``if:``: absent means ``success()``; without a status function, ``success() && (...)``."""
        if text is None:
            return self.job_ok
        if isinstance(text, bool):
            return text and self.job_ok
        text = _EXPRESSION.sub(lambda m: m.group(1), text.strip())
        result = _truthy(self.value(text))
        return result if _STATUS_CALL.search(text) else (self.job_ok and result)

    def interpolate(self, text: Any) -> str:
        """An ``env:`` value with each ``${{ ... }}`` replaced by its value as a string."""
        return _EXPRESSION.sub(lambda m: _string(self.value(m.group(1))), str(text))

    # recursive descent: or > and > not > comparison > primary

    def _tokens(self, text: str) -> list[tuple[str, str]]:
        tokens, pos = [], 0
        text = text.strip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise NotImplementedError(f"cannot evaluate {text!r} at {text[pos:]!r}")
            kind = m.lastgroup
            assert kind is not None
            tokens.append((kind, m.group(kind)))
            pos = m.end()
        return tokens

    def _or(self, t: list[tuple[str, str]]) -> tuple[Any, list[tuple[str, str]]]:
        left, t = self._and(t)
        while t and t[0] == ("op", "||"):
            right, t = self._and(t[1:])
            left = left if _truthy(left) else right
        return left, t

    def _and(self, t: list[tuple[str, str]]) -> tuple[Any, list[tuple[str, str]]]:
        left, t = self._not(t)
        while t and t[0] == ("op", "&&"):
            right, t = self._not(t[1:])
            left = right if _truthy(left) else left
        return left, t

    def _not(self, t: list[tuple[str, str]]) -> tuple[Any, list[tuple[str, str]]]:
        if t and t[0] == ("op", "!"):
            value, t = self._not(t[1:])
            return not _truthy(value), t
        return self._compare(t)

    def _compare(self, t: list[tuple[str, str]]) -> tuple[Any, list[tuple[str, str]]]:
        left, t = self._primary(t)
        if t and t[0] in (("op", "=="), ("op", "!=")):
            op = t[0][1]
            right, t = self._primary(t[1:])
            equal = _loose_equal(left, right)
            return (equal if op == "==" else not equal), t
        return left, t

    def _primary(self, t: list[tuple[str, str]]) -> tuple[Any, list[tuple[str, str]]]:
        if not t:
            raise NotImplementedError("unexpected end of expression")
        kind, text = t[0]
        rest = t[1:]
        if (kind, text) == ("op", "("):
            inner, rest = self._or(rest)
            if not rest or rest[0] != ("op", ")"):
                raise NotImplementedError("unbalanced parentheses")
            return inner, rest[1:]
        if kind == "string":
            return text[1:-1].replace("''", "'"), rest
        if kind == "number":
            return int(text), rest
        if kind == "literal":
            return {"true": True, "false": False, "null": None}[text], rest
        if kind == "call":
            name = text[:-2]
            return {"always": True, "success": self.job_ok, "failure": not self.job_ok, "cancelled": False}[name], rest
        if kind == "path":
            value: Any = self.contexts
            for part in text.split("."):
                value = value.get(part) if isinstance(value, Mapping) else None
            return value, rest
        raise NotImplementedError(f"unexpected {text!r}")


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, "")


def _loose_equal(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.casefold() == b.casefold()  # GitHub compares strings ignoring case
    return bool(a == b)


def _string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


# ---------------------------------------------------------------------------------------------
# Events


@dataclass
class Event:
    """A webhook event: its name, payload, and the ``GITHUB_*`` values GitHub derives from it."""

    name: str
    payload: dict[str, Any]
    sha: str
    ref: str
    actor: str
    base_ref: str = ""
    head_ref: str = ""


def pull_request_event(
    repository: str,
    number: int,
    *,
    head_branch: str,
    head_sha: str,
    base_sha: str,
    merge_sha: str,
    actor: str,
    action: str = "opened",
    head_repository: str | None = None,
) -> Event:
    """A ``pull_request`` event: GitHub runs it on the test merge commit ``refs/pull/N/merge``."""
    head_repo = head_repository or repository
    payload = {
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "state": "open",
            "user": {"login": actor},
            "head": {
                "ref": head_branch,
                "sha": head_sha,
                "repo": {"full_name": head_repo, "fork": head_repo != repository},
            },
            "base": {"ref": "main", "sha": base_sha, "repo": {"full_name": repository}},
            "html_url": f"https://github.com/{repository}/pull/{number}",
        },
        "repository": {"full_name": repository},
        "sender": {"login": actor},
    }
    return Event("pull_request", payload, merge_sha, f"refs/pull/{number}/merge", actor, "main", head_branch)


def push_event(repository: str, *, before: str, after: str, actor: str) -> Event:
    """A ``push`` of main from ``before`` to ``after`` (a merge, for our tests)."""
    payload = {
        "ref": "refs/heads/main",
        "before": before,
        "after": after,
        "repository": {"full_name": repository},
        "head_commit": {"id": after},
        "pusher": {"name": actor},
        "sender": {"login": actor},
    }
    return Event("push", payload, after, "refs/heads/main", actor)


def dispatch_event(repository: str, *, sha: str, actor: str) -> Event:
    """A ``workflow_dispatch`` on main (someone pressed "Run workflow")."""
    payload = {
        "ref": "refs/heads/main",
        "inputs": {},
        "repository": {"full_name": repository},
        "sender": {"login": actor},
    }
    return Event("workflow_dispatch", payload, sha, "refs/heads/main", actor)


# ---------------------------------------------------------------------------------------------
# Running jobs


@dataclass
class StepRun:
    """What one step did (``skipped`` steps have no process)."""

    name: str
    kind: str  # "run", "uses" (emulated) or "install" (the venv stands in)
    skipped: bool = False
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""
    summary: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    exported: dict[str, str] = field(default_factory=dict)  # written to GITHUB_ENV

    @property
    def ok(self) -> bool:
        return self.skipped or self.returncode == 0

    def annotations(self, level: str = "error") -> list[str]:
        """The ``::error ...`` (or ``level``) workflow commands the step printed."""
        return [line for line in self.stdout.splitlines() if line.startswith((f"::{level} ", f"::{level}::"))]

    def __str__(self) -> str:
        state = "skipped" if self.skipped else f"exit {self.returncode}"
        return f"step {self.name!r} ({self.kind}): {state}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


@dataclass
class JobRun:
    """What one job did: its steps in order, or ``skipped`` (its ``if:`` or ``needs:``)."""

    workflow: str
    job: str
    skipped: bool = False
    steps: list[StepRun] = field(default_factory=list)
    workspace: Path | None = None
    runner_temp: Path | None = None

    @property
    def ok(self) -> bool:
        return self.skipped or all(s.ok for s in self.steps)

    def step(self, prefix: str) -> StepRun:
        for s in self.steps:
            if s.name.startswith(prefix):
                return s
        raise AssertionError(f"no step {prefix!r} in {self.workflow}:{self.job}: {[s.name for s in self.steps]}")

    def logs(self) -> str:
        return "\n".join(s.stdout + s.stderr for s in self.steps)

    def __str__(self) -> str:
        if self.skipped:
            return f"{self.workflow}:{self.job}: skipped"
        return f"{self.workflow}:{self.job}\n" + "\n".join(str(s) for s in self.steps)


@dataclass
class Runner:
    """Runs workflows against ``repo`` (the "GitHub" repository) with ``api_url`` as GitHub's API."""

    base: Path
    repo: GitHubRepo
    repository: str
    api_url: str
    token: str
    secrets: dict[str, str] = field(default_factory=dict)
    environment_secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    server_url: str = "https://github.com"
    step_timeout: float = 120.0
    runs: int = 0

    def run_workflow(self, name: str, event: Event, jobs: tuple[str, ...] | None = None) -> dict[str, JobRun]:
        """Every job of workflow ``name`` for ``event`` (or only ``jobs``), in ``needs:`` order; a
        needed job that is not among ``jobs`` counts as succeeded."""
        doc = load_workflow(name)
        triggers = doc["on"]
        assert event.name in (triggers if isinstance(triggers, list | dict) else [triggers]), (
            f"{name} does not run on {event.name}"
        )
        self.runs += 1
        results: dict[str, JobRun] = {}
        pending = {j: spec for j, spec in doc["jobs"].items() if jobs is None or j in jobs}
        assert jobs is None or set(jobs) <= set(pending), f"{name} has no job among {jobs}"

        def needs(spec: dict[str, Any]) -> list[str]:
            return [n for n in _needs(spec) if n in doc["jobs"] and (jobs is None or n in jobs)]

        while pending:
            ready = [j for j, spec in pending.items() if all(n in results for n in needs(spec))]
            assert ready, f"{name}: a cycle in needs: {list(pending)}"
            for job in ready:
                spec = pending.pop(job)
                if not all(results[n].ok and not results[n].skipped for n in needs(spec)):
                    results[job] = JobRun(name, job, skipped=True)
                    continue
                results[job] = self._run_job(name, doc, job, spec, event)
        return results

    def _run_job(self, name: str, doc: dict[str, Any], job: str, spec: dict[str, Any], event: Event) -> JobRun:
        run_id = f"{self.runs}"
        github = {
            "token": self.token,
            "repository": self.repository,
            "repository_owner": self.repository.split("/")[0],
            "server_url": self.server_url,
            "api_url": self.api_url,
            "run_id": run_id,
            "event_name": event.name,
            "event": event.payload,
            "sha": event.sha,
            "ref": event.ref,
            "actor": event.actor,
            "base_ref": event.base_ref,
            "head_ref": event.head_ref,
        }
        secrets = dict(self.secrets)
        if "environment" in spec:
            environment = spec["environment"]
            environment = environment["name"] if isinstance(environment, dict) else environment
            secrets.update(self.environment_secrets.get(environment, {}))
        contexts: dict[str, Any] = {"github": github, "secrets": secrets, "steps": {}, "env": {}}
        if not Expressions(contexts).condition(spec.get("if")):
            return JobRun(name, job, skipped=True)

        home = self.base / f"{name}-{job}-{run_id}-{uuid.uuid4().hex[:6]}"
        workspace = home / "work" / self.repository.split("/")[1]
        temp = home / "temp"
        temp.mkdir(parents=True)
        event_path = home / "event.json"
        event_path.write_text(json.dumps(event.payload), encoding="utf-8")
        result = JobRun(name, job, workspace=workspace, runner_temp=temp)
        shell = (spec.get("defaults") or doc.get("defaults") or {}).get("run", {}).get("shell", "bash")
        assert shell == "bash", f"{name}:{job}: only bash steps are emulated, not {shell}"
        base_env = {
            "PATH": f"{VENV_BIN}:{SYSTEM_PATH}",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKFLOW": doc.get("name", name),
            "GITHUB_JOB": job,
            "GITHUB_RUN_ID": run_id,
            "GITHUB_RUN_NUMBER": run_id,
            "GITHUB_RUN_ATTEMPT": "1",
            "GITHUB_EVENT_NAME": event.name,
            "GITHUB_EVENT_PATH": str(event_path),
            "GITHUB_SHA": event.sha,
            "GITHUB_REF": event.ref,
            "GITHUB_BASE_REF": event.base_ref,
            "GITHUB_HEAD_REF": event.head_ref,
            "GITHUB_ACTOR": event.actor,
            "GITHUB_REPOSITORY": self.repository,
            "GITHUB_REPOSITORY_OWNER": self.repository.split("/")[0],
            "GITHUB_SERVER_URL": self.server_url,
            "GITHUB_API_URL": self.api_url,
            "GITHUB_WORKSPACE": str(workspace),
            "RUNNER_TEMP": str(temp),
            "RUNNER_OS": "Linux",
        }
        added_env: dict[str, str] = {}
        job_ok = True
        for index, step in enumerate(spec["steps"]):
            label = step.get("name") or step.get("uses") or step.get("run", "").splitlines()[0]
            expressions = Expressions(contexts, job_ok=job_ok)
            if not expressions.condition(step.get("if")):
                result.steps.append(StepRun(label, "uses" if "uses" in step else "run", skipped=True))
                continue
            if "uses" in step:
                outcome = self._uses(step, event, workspace)
            elif step["run"].strip() == INSTALL_STEP:
                # What `pip install .` installs is the checkout's own reconciler, when it has one
                # (the tests' config repos have none: the venv's stands in).
                cwd = workspace / step["working-directory"] if "working-directory" in step else workspace
                outcome = StepRun(label, "install", exported={"PYTHONPATH": str(cwd)})
                added_env.update(outcome.exported)
            elif LOCK_INSTALL_STEP.fullmatch(step["run"].strip()):
                outcome = StepRun(label, "install")  # the venv stands in for the pinned dependencies
            else:
                values = {**doc.get("env", {}), **spec.get("env", {}), **step.get("env", {})}
                env = {**base_env, **added_env, **{k: expressions.interpolate(v) for k, v in values.items()}}
                outcome = self._run(label, step, env, home, index, workspace)
                added_env.update(outcome.exported)
            outcome.name = label
            result.steps.append(outcome)
            if "id" in step:
                contexts["steps"][step["id"]] = {
                    "outputs": outcome.outputs,
                    "outcome": "success" if outcome.ok else "failure",
                    "conclusion": "success" if outcome.ok else "failure",
                }
            job_ok = job_ok and outcome.ok
        return result

    def _uses(self, step: dict[str, Any], event: Event, workspace: Path) -> StepRun:
        action = step["uses"]
        options = step.get("with", {})
        if action == "actions/checkout@v4":
            assert options.get("persist-credentials") is False, "the checkout must not keep the token"
            depth = int(options.get("fetch-depth", 1))
            self.repo.checkout(workspace, event.ref, event.sha, depth)
            return StepRun(action, "uses")
        if action == "actions/setup-python@v5":
            version = f"{sys.version_info.major}.{sys.version_info.minor}"
            assert str(options.get("python-version")) == version, f"the venv is Python {version}"
            return StepRun(action, "uses")
        raise NotImplementedError(f"no local stand-in for {action}")

    def _run(self, label: str, step: dict[str, Any], env: dict[str, str], home: Path, index: int,
             workspace: Path) -> StepRun:
        script = step["run"]
        assert "${{" not in script, f"step {label!r} interpolates an expression into its script"
        files = home / f"step-{index}"
        files.mkdir()
        output, summary, env_file = files / "output", files / "summary.md", files / "env"
        for f in (output, summary, env_file):
            f.touch()
        env = {**env, "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_ENV": str(env_file)}
        path = files / "script.sh"
        path.write_text(script, encoding="utf-8")
        cwd = workspace / step["working-directory"] if "working-directory" in step else workspace
        p = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(path)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=self.step_timeout,
        )
        return StepRun(
            label,
            "run",
            returncode=p.returncode,
            stdout=p.stdout,
            stderr=p.stderr,
            summary=summary.read_text(encoding="utf-8"),
            outputs=_parse_env_file(output),
            exported=_parse_env_file(env_file),
        )


def _needs(spec: dict[str, Any]) -> list[str]:
    needs = spec.get("needs", [])
    return [needs] if isinstance(needs, str) else list(needs)


def _parse_env_file(path: Path) -> dict[str, str]:
    """``name=value`` lines and ``name<<DELIMITER`` blocks, as in GITHUB_OUTPUT and GITHUB_ENV."""
    values: dict[str, str] = {}
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, i + 1)
            values[name] = "\n".join(lines[i + 1 : end])
            i = end + 1
            continue
        if "=" in line:
            name, value = line.split("=", 1)
            values[name] = value
        i += 1
    return values
