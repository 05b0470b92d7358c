"""A fake GitHub REST API on loopback, for tests of everything that posts to pull requests.

It serves the endpoints ``reconciler.github`` uses, records every request (method, path,
query, headers, JSON body) and keeps scriptable state::

    with FakeGitHub() as gh:                      # or the ``fake_github`` pytest fixture
        gh.add_pull(7, merge_commit_sha="abc")
        gh.commit_pulls["abc"] = [7]
        gh.commit_pulls_empty_first = 2           # the first two answers are [] (just merged)
        gh.add_comment(7, "<!-- workspace-gitops:plan -->", login="mallory")
        gh.inject("POST", r"/issues/\\d+/comments$", 403, {"message": "Resource not accessible"})
        env = gh.environment(tmp_path, event_name="push", sha="abc")
        ...
        [r.method for r in gh.requests]

Served: ``GET /user`` (403 when ``user_login`` is None, like an App installation token),
``GET /repos/{o}/{r}/commits/{sha}/pulls``, ``GET|POST /repos/{o}/{r}/issues/{n}/comments``
(paginated with ``per_page``/``page`` and RFC 8288 ``Link`` headers),
``PATCH /repos/{o}/{r}/issues/comments/{id}``. A wrong token answers 401, an unknown
repository or PR 404, anything else 404 too.

With ``git_dir`` set to a Git working tree (the test's "GitHub" repository, e.g.
``tests.e2e.workflow_runner.GitHubRepo.path``), branches, files and pull requests work on it as
GitHub's would: ``GET git/ref/heads/{b}``, ``POST git/refs``, ``PATCH git/refs/heads/{b}``,
``GET|PUT|DELETE contents/{path}`` (each write one commit on its branch, with the blob SHA
checked), ``GET|POST pulls`` and ``PATCH pulls/{n}``. Branches are written with Git's plumbing
and a private index, so the working tree (main) is untouched; :meth:`FakeGitHub.merge_pull` and
:meth:`FakeGitHub.close_pull` are what a person does on the website.

Use it from a test module with::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/ on the path
    from fakegithub import FakeGitHub, fake_github  # noqa: F401  (the fixture)
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loopback import LoopbackServer  # noqa: E402

DEFAULT_TOKEN = "ghs_FakeToken0123456789abcdefABCDEF"
DEFAULT_REPOSITORY = "acme/workspaces"
SERVER_URL = "https://github.example"


@dataclass(frozen=True)
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    raw_body: bytes

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class _Injection:
    method: str
    path: re.Pattern[str]
    status: int
    body: Any
    headers: dict[str, str]
    times: int | None


@dataclass
class FakeGitHub(LoopbackServer):
    """The fake's state; every attribute may be changed by a test at any time."""

    thread_name = "fake-github"

    repository: str = DEFAULT_REPOSITORY
    token: str = DEFAULT_TOKEN
    user_login: str | None = "workspace-bot"
    """The token's own user; None makes ``GET /user`` answer 403 like an App installation token."""
    app_slug: str = "github-actions"
    """The App that writes comments when ``user_login`` is None (author ``<slug>[bot]``)."""
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    commit_pulls: dict[str, list[int]] = field(default_factory=dict)
    commit_pulls_empty_first: int = 0
    """``commits/{sha}/pulls`` answers ``[]`` for this many calls first (GitHub right after a merge)."""
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    git_dir: Path | None = None
    """A Git working tree whose branches the refs, contents and pulls endpoints work on."""
    requests: list[Recorded] = field(default_factory=list)
    _injections: list[_Injection] = field(default_factory=list)
    _next_id: int = 1000
    _commit_pulls_calls: int = 0
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # ----------------------------------------------------------------------------------------
    # lifecycle

    def _bind(self) -> ThreadingHTTPServer:
        fake = self

        class Handler(_Handler):
            github = fake

        return ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    # ----------------------------------------------------------------------------------------
    # scripting

    def add_pull(
        self,
        number: int,
        *,
        state: str = "open",
        merged: bool = False,
        merge_commit_sha: str | None = None,
        head_sha: str | None = None,
    ) -> dict[str, Any]:
        """Add (or replace) a pull request."""
        with self._lock:
            pull = {
                "number": number,
                "state": "closed" if merged else state,
                "merged_at": "2024-01-01T00:00:00Z" if merged else None,
                "merge_commit_sha": merge_commit_sha,
                "head": {"sha": head_sha or f"{number:040x}"},
                "html_url": f"{SERVER_URL}/{self.repository}/pull/{number}",
            }
            self.pulls[number] = pull
            self.comments.setdefault(number, [])
            return pull

    def add_comment(
        self, pr: int, body: str, *, login: str, type: str = "User", app_slug: str | None = None
    ) -> dict[str, Any]:
        """Add a comment written by ``login`` (a ``Bot`` with ``app_slug`` for an App's comment)."""
        with self._lock:
            return self._new_comment(pr, body, login=login, type=type, app_slug=app_slug)

    def inject(
        self,
        method: str,
        path: str,
        status: int,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        times: int | None = 1,
    ) -> None:
        """Answer ``status`` to requests whose path matches the regex ``path``; ``times=None``: always."""
        with self._lock:
            self._injections.append(
                _Injection(method.upper(), re.compile(path), status, body, dict(headers or {}), times)
            )

    def requests_to(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """The recorded requests, filtered by method and by a regex searched in the path."""
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method.upper())
                and (path is None or re.search(path, r.path))
            ]

    def environment(
        self,
        tmp_path: Path,
        *,
        event_name: str = "pull_request",
        pr: int | None = None,
        sha: str | None = None,
        payload: dict[str, Any] | None = None,
        run_id: str | None = "4242",
        step_summary: bool = True,
    ) -> dict[str, str]:
        """The Actions environment of a run against this fake; writes the event payload in ``tmp_path``."""
        if payload is None:
            payload = {}
            if event_name.startswith("pull_request") and pr is not None:
                payload = {
                    "number": pr,
                    "pull_request": {
                        "number": pr,
                        "base": {"sha": "0" * 40, "ref": "main"},
                        "head": {"repo": {"full_name": self.repository}},
                    },
                }
            elif event_name == "push":
                payload = {"after": sha, "ref": "refs/heads/main"}
        event_path = tmp_path / f"event-{event_name}.json"
        event_path.write_text(json.dumps(payload), encoding="utf-8")
        env = {
            "GITHUB_API_URL": self.url,
            "GITHUB_SERVER_URL": SERVER_URL,
            "GITHUB_REPOSITORY": self.repository,
            "GITHUB_TOKEN": self.token,
            "GITHUB_EVENT_NAME": event_name,
            "GITHUB_EVENT_PATH": str(event_path),
            "GITHUB_SHA": sha or "f" * 40,
        }
        if run_id is not None:
            env["GITHUB_RUN_ID"] = run_id
        if step_summary:
            summary = tmp_path / "step-summary.md"
            summary.touch()
            env["GITHUB_STEP_SUMMARY"] = str(summary)
        return env

    def merge_pull(self, number: int) -> str:
        """A person presses "Merge": a merge commit of the PR's head on its base; the new base SHA."""
        with self._lock:
            pull = self.pulls[number]
            base, head = pull["base"]["ref"], pull["head"]["ref"]
            self._git("checkout", "--quiet", base)
            self._git("merge", "--quiet", "--no-ff", "-m", f"Merge pull request #{number} from {head}", head)
            sha = self._git("rev-parse", base)
            pull.update(state="closed", merged_at="2024-01-02T00:00:00Z", merge_commit_sha=sha)
            self.commit_pulls[sha] = [number]
            return sha

    def close_pull(self, number: int) -> None:
        """A person presses "Close pull request" (not merged)."""
        with self._lock:
            self.pulls[number]["state"] = "closed"

    def lifecycle_pulls(self) -> list[dict[str, Any]]:
        """The pull requests opened through the API (``POST pulls``), oldest first."""
        with self._lock:
            return [p for _, p in sorted(self.pulls.items()) if "title" in p]

    def file_at(self, ref: str, path: str) -> str | None:
        """The text of ``path`` at ``ref`` in ``git_dir``, or None."""
        try:
            return self._git("show", f"{ref}:{path}", strip=False)
        except AssertionError:
            return None

    # ----------------------------------------------------------------------------------------
    # the Git side (branches and files)

    def _git(self, *args: str, index: str | None = None, stdin: bytes | None = None, strip: bool = True) -> str:
        assert self.git_dir is not None, "FakeGitHub(git_dir=...) is needed for branches and files"
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.git_dir), "GIT_CONFIG_NOSYSTEM": "1",
               "GIT_AUTHOR_NAME": "workspace-bot", "GIT_AUTHOR_EMAIL": "bot@example.com",
               "GIT_COMMITTER_NAME": "GitHub", "GIT_COMMITTER_EMAIL": "noreply@github.com"}
        if index is not None:
            env["GIT_INDEX_FILE"] = index
        p = subprocess.run(["git", *args], cwd=self.git_dir, input=stdin, capture_output=True, env=env, timeout=60)
        if p.returncode != 0:
            raise AssertionError(f"git {' '.join(args)}: {p.stderr.decode(errors='replace')}")
        out = p.stdout.decode("utf-8")
        return out.strip() if strip else out

    def _head(self, branch: str) -> str | None:
        try:
            return self._git("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}")
        except AssertionError:
            return None

    def _blob(self, ref: str, path: str) -> str | None:
        try:
            return self._git("rev-parse", "--verify", "--quiet", f"{ref}:{path}")
        except AssertionError:
            return None

    def _commit_file(self, branch: str, path: str, data: bytes | None, message: str) -> str:
        parent = self._head(branch)
        assert parent is not None
        fd, index = tempfile.mkstemp(prefix="fakegithub-index-")
        os.close(fd)
        os.unlink(index)
        try:
            self._git("read-tree", parent, index=index)
            if data is None:
                self._git("update-index", "--force-remove", path, index=index)
            else:
                blob = self._git("hash-object", "-w", "--stdin", stdin=data)
                self._git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", index=index)
            tree = self._git("write-tree", index=index)
        finally:
            if os.path.exists(index):
                os.unlink(index)
        commit = self._git("commit-tree", tree, "-p", parent, "-m", message)
        self._git("update-ref", f"refs/heads/{branch}", commit, parent)
        return commit

    def _git_api(self, method: str, rest: str, query: dict[str, list[str]], body: Any
                 ) -> tuple[int, Any, dict[str, str]] | None:
        """The refs, contents and pulls endpoints; None when ``rest`` is none of them."""
        body = body if isinstance(body, dict) else {}
        if method == "GET" and (m := re.fullmatch(r"git/ref/heads/(.+)", rest)):
            sha = self._head(m.group(1))
            if sha is None:
                return 404, {"message": "Not Found"}, {}
            return 200, {"ref": f"refs/heads/{m.group(1)}", "object": {"sha": sha, "type": "commit"}}, {}
        if method == "POST" and rest == "git/refs":
            ref, sha = str(body.get("ref", "")), str(body.get("sha", ""))
            if not ref.startswith("refs/heads/") or self._head(ref[11:]) is not None:
                return 422, {"message": "Reference already exists"}, {}
            self._git("update-ref", ref, sha)
            return 201, {"ref": ref, "object": {"sha": sha}}, {}
        if method == "PATCH" and (m := re.fullmatch(r"git/refs/heads/(.+)", rest)):
            current = self._head(m.group(1))
            if current is None:
                return 422, {"message": "Reference does not exist"}, {}
            sha = str(body.get("sha", ""))
            if not body.get("force") and self._git("merge-base", current, sha) != current:
                return 422, {"message": "Update is not a fast forward"}, {}
            self._git("update-ref", f"refs/heads/{m.group(1)}", sha)
            return 200, {"ref": f"refs/heads/{m.group(1)}", "object": {"sha": sha}}, {}
        if m := re.fullmatch(r"contents/(.+)", rest):
            path = urllib.parse.unquote(m.group(1))
            if method == "GET":
                ref = query.get("ref", ["main"])[0]
                blob = self._blob(ref, path)
                if blob is None:
                    return 404, {"message": "Not Found"}, {}
                text = self._git("cat-file", "blob", blob, strip=False)
                return 200, {"type": "file", "path": path, "sha": blob, "encoding": "base64",
                             "content": base64.b64encode(text.encode()).decode()}, {}
            branch = str(body.get("branch", "main"))
            if self._head(branch) is None:
                return 404, {"message": "Branch not found"}, {}
            blob = self._blob(branch, path)
            if blob is not None and body.get("sha") != blob:
                return 409, {"message": f"{path} does not match {body.get('sha')}"}, {}
            if method == "PUT":
                data = base64.b64decode(str(body.get("content", "")))
                commit = self._commit_file(branch, path, data, str(body.get("message", "update")))
                return (200 if blob else 201), {"commit": {"sha": commit}, "content": {"path": path}}, {}
            if method == "DELETE":
                if blob is None:
                    return 404, {"message": "Not Found"}, {}
                commit = self._commit_file(branch, path, None, str(body.get("message", "delete")))
                return 200, {"commit": {"sha": commit}, "content": None}, {}
        if rest == "pulls" and method == "GET":
            state = query.get("state", ["open"])[0]
            base = query.get("base", [None])[0]
            items = [p for _, p in sorted(self.pulls.items(), reverse=True)
                     if (state == "all" or p["state"] == state)
                     and (base is None or p.get("base", {}).get("ref") == base)]
            return self._page("/repos/" + self.repository + "/pulls", query, items)
        if rest == "pulls" and method == "POST":
            head, base = str(body.get("head", "")), str(body.get("base", ""))
            sha = self._head(head)
            if sha is None or self._head(base) is None:
                return 422, {"message": "Validation Failed: head or base does not exist"}, {}
            if any(p.get("head", {}).get("ref") == head and p["state"] == "open" for p in self.pulls.values()):
                return 422, {"message": f"A pull request already exists for {head}."}, {}
            number = max([0, *self.pulls]) + 1
            a = self._author()
            pull = self.add_pull(number, head_sha=sha)
            pull.update(title=body.get("title"), body=body.get("body"), head={"ref": head, "sha": sha},
                        base={"ref": base}, user={"login": a["login"], "type": a["type"]})
            return 201, pull, {}
        if method == "PATCH" and (m := re.fullmatch(r"pulls/(\d+)", rest)):
            pull = self.pulls.get(int(m.group(1)))
            if pull is None:
                return 404, {"message": "Not Found"}, {}
            for key in ("title", "body", "state"):
                if key in body:
                    pull[key] = body[key]
            return 200, pull, {}
        return None

    # ----------------------------------------------------------------------------------------
    # serving (called from the handler threads, under the lock)

    def _new_comment(
        self, pr: int, body: str, *, login: str, type: str, app_slug: str | None
    ) -> dict[str, Any]:
        self._next_id += 1
        comment_id = self._next_id
        comment = {
            "id": comment_id,
            "body": body,
            "user": {"login": login, "type": type},
            "performed_via_github_app": {"slug": app_slug} if app_slug else None,
            "html_url": f"{SERVER_URL}/{self.repository}/pull/{pr}#issuecomment-{comment_id}",
        }
        self.comments.setdefault(pr, []).append(comment)
        return comment

    def _author(self) -> dict[str, Any]:
        if self.user_login is not None:
            return {"login": self.user_login, "type": "User", "app_slug": None}
        return {"login": f"{self.app_slug}[bot]", "type": "Bot", "app_slug": self.app_slug}

    def _handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        for injection in self._injections:
            if injection.method == method and injection.path.search(path) and injection.times != 0:
                if injection.times is not None:
                    injection.times -= 1
                return injection.status, injection.body, injection.headers
        auth = headers.get("authorization", "")
        if auth not in (f"Bearer {self.token}", f"token {self.token}"):
            return 401, {"message": "Bad credentials"}, {}
        if method == "GET" and path == "/user":
            if self.user_login is None:
                return 403, {"message": "Resource not accessible by integration"}, {}
            return 200, {"login": self.user_login, "type": "User"}, {}
        prefix = f"/repos/{self.repository}/"
        if not path.startswith(prefix):
            return 404, {"message": "Not Found"}, {}
        rest = path[len(prefix) :]
        if self.git_dir is not None:
            answered = self._git_api(method, rest, query, body)
            if answered is not None:
                return answered
        if method == "GET" and (m := re.fullmatch(r"commits/([0-9a-zA-Z]+)/pulls", rest)):
            self._commit_pulls_calls += 1
            if self._commit_pulls_calls <= self.commit_pulls_empty_first:
                return 200, [], {}
            return 200, [self.pulls[n] for n in self.commit_pulls.get(m.group(1), []) if n in self.pulls], {}
        if m := re.fullmatch(r"issues/(\d+)/comments", rest):
            pr = int(m.group(1))
            if pr not in self.pulls:
                return 404, {"message": "Not Found"}, {}
            if method == "GET":
                return self._page(path, query, self.comments.get(pr, []))
            if method == "POST":
                if not isinstance(body, dict) or not isinstance(body.get("body"), str):
                    return 422, {"message": "Invalid request: body is missing"}, {}
                if len(body["body"]) > 65_536:
                    return (
                        422,
                        {"message": "Validation Failed: body is too long (maximum is 65536 characters)"},
                        {},
                    )
                a = self._author()
                return (
                    201,
                    self._new_comment(
                        pr, body["body"], login=a["login"], type=a["type"], app_slug=a["app_slug"]
                    ),
                    {},
                )
        if method == "PATCH" and (m := re.fullmatch(r"issues/comments/(\d+)", rest)):
            comment_id = int(m.group(1))
            for comments in self.comments.values():
                for comment in comments:
                    if comment["id"] == comment_id:
                        if not isinstance(body, dict) or not isinstance(body.get("body"), str):
                            return 422, {"message": "Invalid request: body is missing"}, {}
                        if len(body["body"]) > 65_536:
                            return 422, {"message": "Validation Failed: body is too long"}, {}
                        comment["body"] = body["body"]
                        return 200, comment, {}
            return 404, {"message": "Not Found"}, {}
        return 404, {"message": "Not Found"}, {}

    def _page(
        self, path: str, query: dict[str, list[str]], items: list[dict[str, Any]]
    ) -> tuple[int, Any, dict[str, str]]:
        per_page = min(100, max(1, int(query.get("per_page", ["30"])[0])))
        page = max(1, int(query.get("page", ["1"])[0]))
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        links = []
        if page < last:
            links.append(f'<{self.url}{path}?per_page={per_page}&page={page + 1}>; rel="next"')
            links.append(f'<{self.url}{path}?per_page={per_page}&page={last}>; rel="last"')
        return 200, chunk, ({"Link": ", ".join(links)} if links else {})


class _Handler(BaseHTTPRequestHandler):
    github: FakeGitHub

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean; the requests are recorded instead

    def _serve(self) -> None:
        split = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in self.headers.items()}
        query = urllib.parse.parse_qs(split.query)
        with self.github._lock:
            self.github.requests.append(Recorded(self.command, split.path, query, headers, body, raw))
            status, answer, extra = self.github._handle(self.command, split.path, query, headers, body)
        payload = b"" if answer is None else json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    """A started :class:`FakeGitHub`, stopped after the test."""
    with FakeGitHub() as fake:
        yield fake
