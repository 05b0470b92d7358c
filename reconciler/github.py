"""The only module that speaks HTTP to GitHub: find the pull request, post the report, write the job summary.

Everything here is configured from the environment GitHub Actions sets (``GITHUB_API_URL``,
``GITHUB_REPOSITORY``, ``GITHUB_TOKEN``, ``GITHUB_SHA``, ``GITHUB_EVENT_PATH``,
``GITHUB_EVENT_NAME``, ``GITHUB_STEP_SUMMARY``, and for links ``GITHUB_SERVER_URL`` and
``GITHUB_RUN_ID``), so tests point it at a local HTTP server.

Errors: every failure (bad token, missing permission, rate limit, wrong repository or PR,
GitHub down, no PR for the pushed commit) becomes one :class:`~reconciler.errors.GitHubError`
with a one-line message. A comment is a by-product of a reconcile, never its result: the CLI
prints the error as a warning on stderr and keeps the reconcile's own exit code.

Secrets: the token is sent only in the ``Authorization`` header of requests to
``GITHUB_API_URL`` (never logged, never in a ``repr``, never followed to another host by a
redirect or a pagination link), and a request body that contains the token, or any other
string the caller declares secret, is refused before it leaves the process. Comment bodies
come from the report module, which masks secrets; the check here is the last line of defence.

Which comment is "ours" (the sticky plan comment): one whose body contains the marker AND whose
author is the token's own identity, so nobody can plant the marker in a comment of theirs:

* ``GET /user`` answers (a personal access token, a user-to-server token): the author's login
  must equal that login (case-insensitive).
* ``GET /user`` answers 403 (a GitHub App installation token, which is what Actions'
  ``GITHUB_TOKEN`` is): the author must be a ``Bot`` whose login is ``<slug>[bot]`` and, when
  GitHub records it, whose ``performed_via_github_app.slug`` is ``<slug>``; ``<slug>`` is
  ``$GITHUB_APP_SLUG`` when set (a workflow that posts with its own App's token) and
  ``github-actions`` otherwise. Logins ending in ``[bot]`` cannot be registered by people.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.client import HTTPMessage
from pathlib import Path
from typing import Any

from reconciler.errors import GitHubError
from reconciler.report import APPLY_MARKER, PLAN_MARKER, escape_markdown

log = logging.getLogger(__name__)

# The report puts these hidden markers first; here they pick the comment to edit. The dry-run
# report's (MARKER_PLAN): one comment per PR, edited in place on every push; the apply
# report's (MARKER_APPLY): always a new comment on the merged PR.
MARKER_PLAN = PLAN_MARKER
MARKER_APPLY = APPLY_MARKER
MAX_COMMENT_CHARS = 65_536
"""GitHub refuses an issue comment body longer than this."""
MAX_STEP_SUMMARY_BYTES = 1024 * 1024
"""GitHub drops a step's job summary that is larger than this."""

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_APP_SLUG = "github-actions"
API_VERSION = "2022-11-28"
USER_AGENT = "workspace-gitops-reconciler"

_PULL_REQUEST_EVENTS = frozenset({"pull_request", "pull_request_target"})
_MESSAGE_MAX = 200


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry: 5xx and network errors, a short rate limit, and the
    empty answer of ``commits/{sha}/pulls`` right after a merge (exponential backoff)."""

    attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 16.0
    max_rate_limit_wait: float = 60.0
    timeout: float = 30.0

    def delay(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (0-based): base * 2**attempt, capped."""
        return float(min(self.base_delay * (2**attempt), self.max_delay))


@dataclass(frozen=True)
class GitHubContext:
    """Where and as whom to talk to GitHub, and which run this is (from the Actions environment)."""

    api_url: str
    repository: str
    token: str = field(repr=False)
    sha: str | None = None
    event_name: str | None = None
    event_path: Path | None = None
    server_url: str | None = None
    run_id: str | None = None
    step_summary: Path | None = None
    app_slug: str = DEFAULT_APP_SLUG
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> GitHubContext:
        """Read the context from ``env`` (default ``os.environ``); GitHubError names a missing variable.

        ``GITHUB_TOKEN`` and ``GITHUB_REPOSITORY`` are required; ``GITHUB_API_URL`` defaults to
        https://api.github.com; the others are optional here and required by the calls that
        need them.
        """
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        token = get("GITHUB_TOKEN")
        if token is None:
            raise GitHubError(
                "GITHUB_TOKEN is not set: pass the workflow's token to the step "
                "(env: GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }})"
            )
        repository = get("GITHUB_REPOSITORY")
        if repository is None:
            raise GitHubError("GITHUB_REPOSITORY is not set (expected owner/name)")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", repository):
            raise GitHubError(f"GITHUB_REPOSITORY={repository!r} is not of the form owner/name")
        api_url = (get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/")
        if urllib.parse.urlsplit(api_url).scheme not in ("http", "https"):
            raise GitHubError(f"GITHUB_API_URL={api_url!r} is not an http(s) URL")
        event_path = get("GITHUB_EVENT_PATH")
        step_summary = get("GITHUB_STEP_SUMMARY")
        return cls(
            api_url=api_url,
            repository=repository,
            token=token,
            sha=get("GITHUB_SHA"),
            event_name=get("GITHUB_EVENT_NAME"),
            event_path=Path(event_path) if event_path else None,
            server_url=(get("GITHUB_SERVER_URL") or "").rstrip("/") or None,
            run_id=get("GITHUB_RUN_ID"),
            step_summary=Path(step_summary) if step_summary else None,
            app_slug=get("GITHUB_APP_SLUG") or DEFAULT_APP_SLUG,
            retry=retry if retry is not None else RetryPolicy(),
            sleep=sleep if sleep is not None else time.sleep,
        )

    @property
    def run_url(self) -> str | None:
        """The web page of this workflow run (its job summary holds the full report), when known."""
        if self.server_url and self.run_id:
            return f"{self.server_url}/{self.repository}/actions/runs/{self.run_id}"
        return None

    def event(self) -> dict[str, Any]:
        """The webhook payload of the event that started the run (``GITHUB_EVENT_PATH``)."""
        if self.event_path is None:
            raise GitHubError("GITHUB_EVENT_PATH is not set: cannot tell which pull request this run is for")
        try:
            payload = json.loads(self.event_path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise GitHubError(f"cannot read GITHUB_EVENT_PATH={self.event_path}: {exc.strerror}") from None
        except ValueError as exc:
            raise GitHubError(f"GITHUB_EVENT_PATH={self.event_path} is not JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise GitHubError(f"GITHUB_EVENT_PATH={self.event_path} does not hold a JSON object")
        return payload


# --------------------------------------------------------------------------------------------
# Public operations


def find_pull_request(ctx: GitHubContext) -> int | None:
    """The number of the PR this run is about, or None (a push with no PR, a schedule, a dispatch).

    ``pull_request`` event: the payload's number. ``push`` event: ``GET
    /repos/{owner}/{repo}/commits/{sha}/pulls``, retried with exponential backoff while it
    answers an empty list (it does for a few seconds after a merge); of several PRs, the one
    whose ``merge_commit_sha`` is the pushed commit wins, then a merged one, then the first.
    """
    event_name = ctx.event_name
    if event_name is None:
        raise GitHubError("GITHUB_EVENT_NAME is not set: cannot tell which pull request this run is for")
    if event_name in _PULL_REQUEST_EVENTS:
        payload = ctx.event()
        pr = payload.get("pull_request")
        number = pr.get("number") if isinstance(pr, dict) else None
        if number is None:
            number = payload.get("number")
        if not isinstance(number, int) or isinstance(number, bool):
            raise GitHubError(f"the {event_name} event payload at {ctx.event_path} carries no PR number")
        return number
    if event_name != "push":
        return None
    sha = ctx.sha
    if sha is None:
        after = ctx.event().get("after") if ctx.event_path else None
        sha = after if isinstance(after, str) and after else None
    if sha is None:
        raise GitHubError("GITHUB_SHA is not set: cannot find the pull request of the pushed commit")
    path = f"/repos/{ctx.repository}/commits/{urllib.parse.quote(sha)}/pulls"
    attempts = max(1, ctx.retry.attempts)
    for attempt in range(attempts):
        pulls = _request(ctx, "GET", path, query={"per_page": "100"}).json
        if not isinstance(pulls, list):
            raise GitHubError(f"GET {path}: expected a JSON list, got {type(pulls).__name__}")
        candidates = [p for p in pulls if isinstance(p, dict) and isinstance(p.get("number"), int)]
        if candidates:
            return _pick_pull(candidates, sha)
        if attempt + 1 < attempts:
            wait = ctx.retry.delay(attempt)
            log.debug("no pull request for %s yet; retrying in %.1fs", sha[:12], wait)
            ctx.sleep(wait)
    return None


def post_report(
    ctx: GitHubContext,
    markdown: str,
    *,
    marker: str,
    pr: int | None = None,
    secrets: Iterable[str] = (),
) -> str:
    """Post ``markdown`` to the run's PR and return the comment's ``html_url``.

    ``marker`` is :data:`MARKER_PLAN` (the one comment of ours carrying it is edited in place,
    or created) or :data:`MARKER_APPLY` (always a new comment). The marker is put on the first
    line when ``markdown`` lacks it; a body over :data:`MAX_COMMENT_CHARS` is cut to a summary
    that says the full report is in the run's job summary. ``pr`` defaults to
    :func:`find_pull_request`. A body containing the token or one of ``secrets`` is refused.
    """
    if marker not in (MARKER_PLAN, MARKER_APPLY):
        raise ValueError(f"unknown report marker {marker!r}")
    secrets = tuple(secrets)
    _refuse_secrets(ctx, markdown, secrets)
    body = markdown if marker in markdown else f"{marker}\n{markdown}"
    body = fit_comment(body, marker=marker, run_url=ctx.run_url)
    _refuse_secrets(ctx, body, secrets)
    if pr is None:
        pr = find_pull_request(ctx)
        if pr is None:
            where = f"commit {ctx.sha[:12]}" if ctx.sha else "this run"
            raise GitHubError(
                f"no pull request found for {where} ({ctx.event_name} event): report not posted"
            )
    comments_path = f"/repos/{ctx.repository}/issues/{pr}/comments"
    if marker == MARKER_PLAN:
        existing = _find_own_comment(ctx, pr, marker)
        if existing is not None:
            edited = _request(
                ctx, "PATCH", f"/repos/{ctx.repository}/issues/comments/{existing}", body={"body": body}
            ).json
            return _html_url(edited, f"PATCH comment {existing}")
    created = _request(ctx, "POST", comments_path, body={"body": body}).json
    return _html_url(created, f"POST {comments_path}")


def publish_report(
    markdown: str,
    *,
    dry_run: bool,
    env: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
) -> str:
    """What ``reconcile [--dry-run] --comment`` does: post the run's Markdown report to its PR.

    A dry run's report is the sticky plan comment (:data:`MARKER_PLAN`), an apply's a new
    comment (:data:`MARKER_APPLY`). Reads the context from ``env`` (default ``os.environ``) and
    returns the comment's URL; every failure is a one-line GitHubError for the caller to print
    as a warning, keeping the reconcile's exit code.
    """
    ctx = GitHubContext.from_env(env)
    return post_report(ctx, markdown, marker=MARKER_PLAN if dry_run else MARKER_APPLY, secrets=secrets)


def failure_markdown(reason: str, run_url: str | None = None) -> str:
    """The comment of an apply that failed as a whole: why, and how to run it again."""
    where = f"[this workflow run]({run_url})" if run_url else "this workflow run"
    return "\n".join([
        MARKER_APPLY,
        "### workspace-gitops apply failed",
        "",
        f"**Reason:** {_one_line(escape_markdown(reason))}",
        "",
        f"The cluster may be partly updated; the next successful apply converges it. Logs: {where}.",
        "",
        "**To run it again:** fix the cause if it is in the repository (merging the fix applies again), "
        "or open *Actions → apply → Run workflow* on `main`. Its inputs pass `--adopt <workspace>` "
        "(`adopt`: take over the objects of that workspace that are not ours) and `--allow-mass-delete` "
        "(`allow-mass-delete`: a mass delete that is intended); the `production` environment's reviewers "
        "approve the run.",
        "",
    ])


def publish_failure(reason: str, *, env: Mapping[str, str] | None = None) -> str:
    """What ``reconcile --comment`` does when an apply fails as a whole: a new comment on the merged
    PR with the reason and how to re-run (:func:`failure_markdown`); its URL, or a GitHubError."""
    ctx = GitHubContext.from_env(env)
    return post_report(ctx, failure_markdown(reason, ctx.run_url), marker=MARKER_APPLY)


TEAMS_TOKEN = "GITHUB_TEAMS_TOKEN"
"""The token ``validate --actor`` reads admin teams' membership with. Actions' own GITHUB_TOKEN
cannot: use a GitHub App installation token whose App has the organization permission
"Members: read", or a fine-grained personal access token with that permission (a classic one
needs ``read:org``)."""


def team_membership(env: Mapping[str, str] | None = None) -> Callable[[str, str], bool] | None:
    """``(org/team, login) -> is an active member``, asked with ``$GITHUB_TEAMS_TOKEN``; None when unset.

    ``GET /orgs/{org}/teams/{team}/memberships/{login}``: 200 with ``state: active`` is a member;
    404 (not a member, or a team the token cannot see) is not; anything else is a GitHubError.
    """
    env = os.environ if env is None else env
    token = env.get(TEAMS_TOKEN, "").strip()
    if not token:
        return None
    ctx = GitHubContext.from_env({**env, "GITHUB_TOKEN": token, "GITHUB_REPOSITORY": env.get(
        "GITHUB_REPOSITORY", "").strip() or "unknown/unknown"})

    def is_member(team: str, login: str) -> bool:
        org, _, slug = team.partition("/")
        if not all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", part) for part in (org, slug, login)):
            raise GitHubError(f"{team!r} is not an org/team, or {login!r} not a login")
        path = f"/orgs/{org}/teams/{slug}/memberships/{login}"
        try:
            answer = _request(ctx, "GET", path, permission_hint=False).json
        except _NotFound:
            return False
        except _Forbidden:
            raise GitHubError(
                f"GET {path}: 403 Forbidden: {TEAMS_TOKEN} needs the organization permission \"Members: read\" "
                "(read:org for a classic token)"
            ) from None
        return isinstance(answer, dict) and answer.get("state") == "active"

    return is_member


# --------------------------------------------------------------------------------------------
# Branches, files and pull requests (`reconcile lifecycle`: contents and pull-requests write)


def list_pulls(ctx: GitHubContext, *, state: str = "all", base: str | None = None) -> list[dict[str, Any]]:
    """Every pull request of the repository in ``state`` (open, closed, all), newest first."""
    query = f"?state={urllib.parse.quote(state)}" + (f"&base={urllib.parse.quote(base)}" if base else "")
    return list(_paginate(ctx, f"/repos/{ctx.repository}/pulls{query}"))


def own_author(ctx: GitHubContext) -> Callable[[dict[str, Any]], bool]:
    """Whether a pull request or comment was written by the token's own identity (see the module doc)."""
    return _own_author_rule(ctx)


def branch_head(ctx: GitHubContext, branch: str) -> str | None:
    """The commit SHA ``branch`` points at, or None when there is no such branch."""
    try:
        ref = _request(ctx, "GET", f"/repos/{ctx.repository}/git/ref/heads/{_path(branch)}").json
    except _NotFound:
        return None
    sha = (ref.get("object") or {}).get("sha") if isinstance(ref, dict) else None
    if not isinstance(sha, str):
        raise GitHubError(f"GET git/ref/heads/{branch}: the answer carries no commit SHA")
    return sha


def set_branch(ctx: GitHubContext, branch: str, sha: str) -> None:
    """Point ``branch`` at ``sha``: created when missing, else moved there (forced: it is ours alone)."""
    if branch_head(ctx, branch) is None:
        _request(ctx, "POST", f"/repos/{ctx.repository}/git/refs", body={"ref": f"refs/heads/{branch}", "sha": sha})
    else:
        _request(ctx, "PATCH", f"/repos/{ctx.repository}/git/refs/heads/{_path(branch)}",
                 body={"sha": sha, "force": True})


def read_file(ctx: GitHubContext, path: str, ref: str) -> tuple[str, str] | None:
    """``(blob SHA, text)`` of ``path`` at ``ref``, or None when it does not exist there."""
    try:
        answer = _request(ctx, "GET", f"/repos/{ctx.repository}/contents/{_path(path)}", query={"ref": ref}).json
    except _NotFound:
        return None
    if not isinstance(answer, dict) or answer.get("type", "file") != "file" or not isinstance(answer.get("sha"), str):
        raise GitHubError(f"GET contents/{path}: not a file")
    try:
        text = base64.b64decode(str(answer.get("content", ""))).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise GitHubError(f"GET contents/{path}: the content is not UTF-8 text") from None
    return answer["sha"], text


def write_file(ctx: GitHubContext, branch: str, path: str, text: str | None, message: str, blob_sha: str) -> None:
    """One commit on ``branch``: ``path`` (whose current blob is ``blob_sha``) gets ``text``, or is deleted (None)."""
    where = f"/repos/{ctx.repository}/contents/{_path(path)}"
    if text is None:
        _request(ctx, "DELETE", where, body={"message": message, "sha": blob_sha, "branch": branch})
        return
    content = base64.b64encode(text.encode("utf-8")).decode("ascii")
    _request(ctx, "PUT", where, body={"message": message, "content": content, "sha": blob_sha, "branch": branch})


def open_pull(ctx: GitHubContext, *, head: str, base: str, title: str, body: str) -> dict[str, Any]:
    """Open a pull request from ``head`` into ``base``; the new pull request."""
    _refuse_secrets(ctx, body, ())
    answer = _request(ctx, "POST", f"/repos/{ctx.repository}/pulls",
                      body={"title": title, "head": head, "base": base, "body": body})
    if not isinstance(answer.json, dict) or not isinstance(answer.json.get("number"), int):
        raise GitHubError("POST pulls: the answer carries no pull request number")
    return dict(answer.json)


def edit_pull(ctx: GitHubContext, number: int, *, title: str | None = None, body: str | None = None,
              state: str | None = None) -> None:
    """Change a pull request's title, body or state (``closed`` closes it without merging)."""
    fields = {k: v for k, v in (("title", title), ("body", body), ("state", state)) if v is not None}
    if body is not None:
        _refuse_secrets(ctx, body, ())
    _request(ctx, "PATCH", f"/repos/{ctx.repository}/pulls/{number}", body=fields)


def comment(ctx: GitHubContext, number: int, body: str) -> str:
    """A new comment on issue or pull request ``number``; its URL."""
    _refuse_secrets(ctx, body, ())
    path = f"/repos/{ctx.repository}/issues/{number}/comments"
    return _html_url(_request(ctx, "POST", path, body={"body": body}).json, f"POST {path}")


def _path(text: str) -> str:
    return urllib.parse.quote(text, safe="/")


def fit_comment(body: str, *, marker: str, run_url: str | None = None, limit: int = MAX_COMMENT_CHARS) -> str:
    """``body`` itself when it fits in a comment; else the marker, the report's leading summary
    (its lines up to the second heading, as many whole lines as fit) and a note saying that the
    full report is in the job summary of the run (linked when ``run_url`` is known)."""
    if len(body) <= limit:
        return body
    what = "plan" if marker == MARKER_PLAN else "report"
    where = (
        f"[the job summary of this workflow run]({run_url})"
        if run_url
        else "the job summary of this workflow run"
    )
    note = (
        f"\n\n---\n**This {what} is too long for a comment ({len(body):,} characters; GitHub allows "
        f"{limit:,}).** The full {what} is in {where}.\n"
    )
    budget = limit - len(note) - len(marker) - 64
    lines = body.splitlines(keepends=True)
    if lines and lines[0].strip() == marker:
        lines = lines[1:]
    summary: list[str] = []
    used = 0
    headings = 0
    for line in lines:
        if line.lstrip().startswith("#"):
            headings += 1
            if headings > 1 and summary:
                break
        if used + len(line) > budget:
            break
        summary.append(line)
        used += len(line)
    text = "".join(summary).rstrip("\n")
    if text.count("```") % 2:
        text += "\n```"
    cut = f"{marker}\n{text}{note}" if text else f"{marker}{note}"
    return cut[:limit]


def write_step_summary(markdown: str, path: str | os.PathLike[str] | None = None) -> bool:
    """Append ``markdown`` to ``$GITHUB_STEP_SUMMARY`` (or ``path``); a no-op returning False when unset.

    GitHub drops a step summary over 1 MiB, so an addition that would pass that size is cut,
    with a note, to what still fits.
    """
    where = path if path is not None else os.environ.get("GITHUB_STEP_SUMMARY", "").strip()
    if not where:
        return False
    target = Path(where)
    text = markdown if markdown.endswith("\n") else markdown + "\n"
    try:
        size = target.stat().st_size if target.exists() else 0
        data = text.encode("utf-8")
        room = MAX_STEP_SUMMARY_BYTES - size - 1
        if len(data) > room:
            note = b"\n\n_(cut: GitHub keeps at most 1 MiB of job summary per step)_\n"
            keep = max(0, room - len(note))
            data = data[:keep].decode("utf-8", errors="ignore").encode("utf-8") + note if keep else b""
        with target.open("ab") as fh:
            fh.write(data)
    except OSError as exc:
        raise GitHubError(f"cannot write the job summary to {target}: {exc.strerror}") from None
    return True


# --------------------------------------------------------------------------------------------
# Comments


def _pick_pull(pulls: list[dict[str, Any]], sha: str) -> int:
    for pull in pulls:
        if pull.get("merge_commit_sha") == sha:
            return int(pull["number"])
    for pull in pulls:
        if pull.get("merged_at") or pull.get("state") == "closed":
            return int(pull["number"])
    return int(pulls[0]["number"])


def _find_own_comment(ctx: GitHubContext, pr: int, marker: str) -> int | None:
    """The id of the first comment on ``pr`` that carries ``marker`` and was written by us."""
    is_ours = _own_author_rule(ctx)
    for comment in _paginate(ctx, f"/repos/{ctx.repository}/issues/{pr}/comments"):
        body = comment.get("body")
        if isinstance(body, str) and marker in body and is_ours(comment):
            comment_id = comment.get("id")
            if isinstance(comment_id, int):
                return comment_id
    return None


def _own_author_rule(ctx: GitHubContext) -> Callable[[dict[str, Any]], bool]:
    """A predicate telling whether a comment was written by the token's identity (see module doc)."""
    try:
        me = _request(ctx, "GET", "/user", permission_hint=False).json
    except _Forbidden:
        slug = ctx.app_slug.casefold()

        def is_our_bot(comment: dict[str, Any]) -> bool:
            user = comment.get("user")
            if not isinstance(user, dict) or user.get("type") != "Bot":
                return False
            if str(user.get("login", "")).casefold() != f"{slug}[bot]":
                return False
            app = comment.get("performed_via_github_app")
            return not isinstance(app, dict) or str(app.get("slug", "")).casefold() == slug

        return is_our_bot
    login = me.get("login") if isinstance(me, dict) else None
    if not isinstance(login, str) or not login:
        raise GitHubError("GET /user answered without a login: cannot tell which comments are ours")
    own = login.casefold()

    def is_ours(comment: dict[str, Any]) -> bool:
        user = comment.get("user")
        return isinstance(user, dict) and str(user.get("login", "")).casefold() == own

    return is_ours


def _paginate(ctx: GitHubContext, path: str) -> Iterator[dict[str, Any]]:
    """Every item of a list endpoint, 100 per page, following the ``Link: rel="next"`` headers."""
    url: str | None = _url(ctx, path, {"per_page": "100"})
    seen: set[str] = set()
    while url is not None:
        if url in seen:
            raise GitHubError(f"GET {path}: pagination loops back to a page already read")
        seen.add(url)
        response = _request(ctx, "GET", url)
        if not isinstance(response.json, list):
            raise GitHubError(f"GET {path}: expected a JSON list, got {type(response.json).__name__}")
        yield from (item for item in response.json if isinstance(item, dict))
        url = _next_link(response.headers.get("Link"), url)


def _next_link(header: str | None, current: str) -> str | None:
    """The ``rel="next"`` target of an RFC 8288 ``Link`` header, resolved against ``current``."""
    if not header:
        return None
    for match in re.finditer(r"<([^>]*)>([^<]*)", header):
        for param in match.group(2).strip().rstrip(",").split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "rel" and "next" in value.strip().strip('"').lower().split():
                return str(urllib.parse.urljoin(current, match.group(1)))
    return None


def _html_url(payload: Any, what: str) -> str:
    url = payload.get("html_url") if isinstance(payload, dict) else None
    if not isinstance(url, str):
        raise GitHubError(f"{what}: the answer carries no html_url")
    return url


def _refuse_secrets(ctx: GitHubContext, body: str, secrets: Iterable[str]) -> None:
    if ctx.token in body:
        raise GitHubError("refusing to post the report: it contains the value of GITHUB_TOKEN")
    for secret in secrets:
        if secret and len(secret) >= 4 and secret in body:
            raise GitHubError("refusing to post the report: it contains a value declared secret")


# --------------------------------------------------------------------------------------------
# HTTP


@dataclass(frozen=True)
class _Response:
    status: int
    headers: Message
    json: Any


class _Forbidden(GitHubError):
    """A 403 that is not a rate limit (the token lacks a permission)."""


class _NotFound(GitHubError):
    """A 404."""


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to the API's own origin, which is the only place the token may go."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if _origin(newurl) != _origin(req.full_url):
            return None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_SameOriginRedirects())


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _url(ctx: GitHubContext, path: str, query: Mapping[str, str] | None = None) -> str:
    url = path if "://" in path else ctx.api_url + path
    if query:
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode(query)
    return url


def _describe(ctx: GitHubContext, method: str, url: str) -> str:
    """``METHOD /path`` for messages: relative to the API root, without the query string."""
    path = urllib.parse.urlsplit(url).path
    root = urllib.parse.urlsplit(ctx.api_url).path.rstrip("/")
    if root and path.startswith(root):
        path = path[len(root) :]
    return f"{method} {path}"


def _request(
    ctx: GitHubContext,
    method: str,
    path: str,
    *,
    query: Mapping[str, str] | None = None,
    body: Mapping[str, Any] | None = None,
    permission_hint: bool = True,
) -> _Response:
    """One API call with retries (5xx, network errors, a short rate limit); errors become GitHubError."""
    url = _url(ctx, path, query)
    what = _describe(ctx, method, url)
    if _origin(url) != _origin(ctx.api_url) or not urllib.parse.urlsplit(url).path.startswith(
        urllib.parse.urlsplit(ctx.api_url).path
    ):
        raise GitHubError(f"{what}: refusing to send the token outside GITHUB_API_URL ({ctx.api_url})")
    data: bytes | None = None
    headers = {
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": API_VERSION,
        "User-Agent": USER_AGENT,
        "Authorization": f"Bearer {ctx.token}",
    }
    if body is not None:
        text = json.dumps(body)
        if ctx.token in text:
            raise GitHubError(f"{what}: refusing to send a request body that contains GITHUB_TOKEN")
        data = text.encode("utf-8")
        headers["Content-Type"] = "application/json; charset=utf-8"

    attempts = max(1, ctx.retry.attempts)
    attempt = 0
    rate_limit_retried = False
    while True:
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with _OPENER.open(request, timeout=ctx.retry.timeout) as raw:
                payload = raw.read()
                log.debug("%s -> %s", what, raw.status)
                return _Response(raw.status, raw.headers, _parse_json(payload, what))
        except urllib.error.HTTPError as exc:
            status, answer = exc.code, exc.headers
            message = _github_message(exc.read() if exc.fp is not None else b"")
            exc.close()
            log.debug("%s -> %s %s", what, status, message)
            if status in (403, 429):
                wait = _rate_limit_wait(answer, message)
                if wait is None and status == 429:
                    wait = 60.0
                if wait is not None:
                    if not rate_limit_retried and wait <= ctx.retry.max_rate_limit_wait:
                        rate_limit_retried = True
                        ctx.sleep(wait)
                        continue
                    raise GitHubError(
                        f"GitHub API rate limit exceeded for {what}: try again in {wait:.0f}s"
                        + (f" ({message})" if message else "")
                    ) from None
            if status >= 500 and attempt + 1 < attempts:
                ctx.sleep(ctx.retry.delay(attempt))
                attempt += 1
                continue
            raise _http_error(ctx, what, status, message, attempts, permission_hint) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            if attempt + 1 < attempts:
                ctx.sleep(ctx.retry.delay(attempt))
                attempt += 1
                continue
            raise GitHubError(
                f"{what}: cannot reach GITHUB_API_URL ({ctx.api_url}) after {attempts} attempt(s): "
                f"{_one_line(str(reason))}"
            ) from None


def _http_error(
    ctx: GitHubContext, what: str, status: int, message: str, attempts: int, permission_hint: bool
) -> GitHubError:
    detail = f": {message}" if message else ""
    if status == 401:
        return GitHubError(f"{what}: 401 Unauthorized: GITHUB_TOKEN is invalid or expired{detail}")
    if status == 403:
        hint = (
            " (the job needs `permissions: pull-requests: write` or `issues: write`; a fork's PR "
            "gets a read-only token)"
            if permission_hint
            else ""
        )
        return _Forbidden(f"{what}: 403 Forbidden: the token lacks permission{hint}{detail}")
    if status == 404:
        return _NotFound(
            f"{what}: 404 Not Found: wrong repository (GITHUB_REPOSITORY={ctx.repository}) or pull "
            f"request, or the token cannot see it{detail}"
        )
    if status >= 500:
        return GitHubError(f"{what}: GitHub answered {status} after {attempts} attempt(s){detail}")
    return GitHubError(f"{what}: GitHub answered {status}{detail}")


def _rate_limit_wait(headers: Message, message: str) -> float | None:
    """Seconds to wait when the answer is a (primary or secondary) rate limit, else None."""
    retry_after = headers.get("Retry-After")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            return 60.0
    if headers.get("X-RateLimit-Remaining") == "0":
        try:
            return max(1.0, float(headers.get("X-RateLimit-Reset", "")) - time.time())
        except ValueError:
            return 60.0
    if "rate limit" in message.lower():
        return 60.0
    return None


def _parse_json(payload: bytes, what: str) -> Any:
    if not payload.strip():
        return None
    try:
        return json.loads(payload)
    except ValueError:
        raise GitHubError(f"{what}: GitHub answered something that is not JSON") from None


def _github_message(payload: bytes) -> str:
    try:
        data = json.loads(payload)
    except ValueError:
        return _one_line(payload.decode("utf-8", errors="replace"))
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return _one_line(data["message"])
    return ""


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_MAX else text[: _MESSAGE_MAX - 1] + "…"
