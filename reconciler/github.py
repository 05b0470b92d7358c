"""What the reconciler asks of GitHub: the pull request of this run, the report posted on it,
the job summary, and admin teams' membership. The HTTP calls themselves are
:mod:`reconciler.github_api`'s.

Everything here is configured from the environment GitHub Actions sets (``GITHUB_API_URL``,
``GITHUB_REPOSITORY``, ``GITHUB_TOKEN``, ``GITHUB_SHA``, ``GITHUB_EVENT_PATH``,
``GITHUB_EVENT_NAME``, ``GITHUB_STEP_SUMMARY``, and for links ``GITHUB_SERVER_URL`` and
``GITHUB_RUN_ID``), so tests point it at a local HTTP server.

A comment is a by-product of a reconcile, never its result: every failure is one
:class:`~reconciler.errors.GitHubError`, which the CLI prints as a warning on stderr, keeping
the reconcile's own exit code. Comment bodies come from the report module, which masks
secrets; refusing a body that holds the token is the last line of defence.

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
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from reconciler.errors import GitHubError, one_line
from reconciler.github_api import (
    Forbidden,
    GitHubContext,
    NotFound,
    paginate,
    refuse_secrets,
    request,
)
from reconciler.markup import escape_markdown
from reconciler.report import APPLY_MARKER, PLAN_MARKER

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


_PULL_REQUEST_EVENTS = frozenset({"pull_request", "pull_request_target"})


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
    if not re.fullmatch(r"[0-9a-fA-F]{7,64}", sha):
        raise GitHubError(f"GITHUB_SHA={sha!r} is not a commit id")
    path = f"/repos/{ctx.repository}/commits/{sha}/pulls"
    attempts = max(1, ctx.retry.attempts)
    for attempt in range(attempts):
        pulls = request(ctx, "GET", path, query={"per_page": "100"}).json
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
    refuse_secrets(ctx, markdown, secrets)
    body = markdown if marker in markdown else f"{marker}\n{markdown}"
    body = fit_comment(body, marker=marker, run_url=ctx.run_url)
    refuse_secrets(ctx, body, secrets)
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
            edited = request(
                ctx, "PATCH", f"/repos/{ctx.repository}/issues/comments/{existing}", body={"body": body}
            ).json
            return _html_url(edited, f"PATCH comment {existing}")
    created = request(ctx, "POST", comments_path, body={"body": body}).json
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
        f"**Reason:** {one_line(escape_markdown(reason))}",
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


def workflow_run_url(env: Mapping[str, str] | None = None) -> str | None:
    """The web page of the current workflow run, from Actions' variables (None outside Actions)."""
    env = os.environ if env is None else env
    server = env.get("GITHUB_SERVER_URL", "").strip().rstrip("/")
    repository = env.get("GITHUB_REPOSITORY", "").strip()
    run_id = env.get("GITHUB_RUN_ID", "").strip()
    return f"{server}/{repository}/actions/runs/{run_id}" if server and repository and run_id else None


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
            answer = request(ctx, "GET", path, permission_hint=False).json
        except NotFound:
            return False
        except Forbidden:
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
    query = f"?state={_path(state)}" + (f"&base={_path(base)}" if base else "")
    return list(paginate(ctx, f"/repos/{ctx.repository}/pulls{query}"))


def own_author(ctx: GitHubContext) -> Callable[[dict[str, Any]], bool]:
    """Whether a pull request or comment was written by the token's own identity (see the module doc)."""
    return _own_author_rule(ctx)


def branch_head(ctx: GitHubContext, branch: str) -> str | None:
    """The commit SHA ``branch`` points at, or None when there is no such branch."""
    try:
        ref = request(ctx, "GET", f"/repos/{ctx.repository}/git/ref/heads/{_path(branch)}").json
    except NotFound:
        return None
    sha = (ref.get("object") or {}).get("sha") if isinstance(ref, dict) else None
    if not isinstance(sha, str):
        raise GitHubError(f"GET git/ref/heads/{branch}: the answer carries no commit SHA")
    return sha


def set_branch(ctx: GitHubContext, branch: str, sha: str) -> None:
    """Point ``branch`` at ``sha``: created when missing, else moved there (forced: it is ours alone)."""
    if branch_head(ctx, branch) is None:
        request(ctx, "POST", f"/repos/{ctx.repository}/git/refs", body={"ref": f"refs/heads/{branch}", "sha": sha})
    else:
        request(ctx, "PATCH", f"/repos/{ctx.repository}/git/refs/heads/{_path(branch)}",
                 body={"sha": sha, "force": True})


def read_file(ctx: GitHubContext, path: str, ref: str) -> tuple[str, str] | None:
    """``(blob SHA, text)`` of ``path`` at ``ref``, or None when it does not exist there."""
    try:
        answer = request(ctx, "GET", f"/repos/{ctx.repository}/contents/{_path(path)}", query={"ref": ref}).json
    except NotFound:
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
        request(ctx, "DELETE", where, body={"message": message, "sha": blob_sha, "branch": branch})
        return
    content = base64.b64encode(text.encode("utf-8")).decode("ascii")
    request(ctx, "PUT", where, body={"message": message, "content": content, "sha": blob_sha, "branch": branch})


def open_pull(ctx: GitHubContext, *, head: str, base: str, title: str, body: str) -> dict[str, Any]:
    """Open a pull request from ``head`` into ``base``; the new pull request."""
    refuse_secrets(ctx, body, ())
    answer = request(ctx, "POST", f"/repos/{ctx.repository}/pulls",
                      body={"title": title, "head": head, "base": base, "body": body})
    if not isinstance(answer.json, dict) or not isinstance(answer.json.get("number"), int):
        raise GitHubError("POST pulls: the answer carries no pull request number")
    return dict(answer.json)


def edit_pull(ctx: GitHubContext, number: int, *, title: str | None = None, body: str | None = None,
              state: str | None = None) -> None:
    """Change a pull request's title, body or state (``closed`` closes it without merging)."""
    fields = {k: v for k, v in (("title", title), ("body", body), ("state", state)) if v is not None}
    if body is not None:
        refuse_secrets(ctx, body, ())
    request(ctx, "PATCH", f"/repos/{ctx.repository}/pulls/{number}", body=fields)


def comment(ctx: GitHubContext, number: int, body: str) -> str:
    """A new comment on issue or pull request ``number``; its URL."""
    refuse_secrets(ctx, body, ())
    path = f"/repos/{ctx.repository}/issues/{number}/comments"
    return _html_url(request(ctx, "POST", path, body={"body": body}).json, f"POST {path}")


def _path(text: str) -> str:
    """A branch name or file path as it goes into a URL: plain characters only, so nothing needs quoting."""
    if not re.fullmatch(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*", text) or ".." in text.split("/"):
        raise GitHubError(f"{text!r} is not a plain branch name or file path")
    return text


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
    for comment in paginate(ctx, f"/repos/{ctx.repository}/issues/{pr}/comments"):
        body = comment.get("body")
        if isinstance(body, str) and marker in body and is_ours(comment):
            comment_id = comment.get("id")
            if isinstance(comment_id, int):
                return comment_id
    return None


def _own_author_rule(ctx: GitHubContext) -> Callable[[dict[str, Any]], bool]:
    """A predicate telling whether a comment was written by the token's identity (see module doc)."""
    try:
        me = request(ctx, "GET", "/user", permission_hint=False).json
    except Forbidden:
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


def _html_url(payload: Any, what: str) -> str:
    url = payload.get("html_url") if isinstance(payload, dict) else None
    if not isinstance(url, str):
        raise GitHubError(f"{what}: the answer carries no html_url")
    return url
