"""The HTTP client of GitHub's REST API: where and as whom (:class:`GitHubContext`, from the
Actions environment), one call with retries (:func:`request`) and every page of a list
(:func:`paginate`). The only module that speaks HTTP to GitHub; :mod:`reconciler.github` says
what to ask.

Errors: every failure (bad token, missing permission, rate limit, wrong repository, GitHub down)
becomes one :class:`~reconciler.errors.GitHubError` with a one-line message.

Secrets: the token is sent only in the ``Authorization`` header of requests to
``GITHUB_API_URL`` (never logged, never in a ``repr``, never followed to another host by a
redirect or a pagination link), and a request body that contains the token, or any other
string the caller declares secret, is refused before it leaves the process.
"""

from __future__ import annotations

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

from reconciler.errors import GitHubError, one_line

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_APP_SLUG = "github-actions"
API_VERSION = "2022-11-28"
USER_AGENT = "workspace-gitops-reconciler"

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


def paginate(ctx: GitHubContext, path: str) -> Iterator[dict[str, Any]]:
    """Every item of a list endpoint, 100 per page, following the ``Link: rel="next"`` headers."""
    url: str | None = _url(ctx, path, {"per_page": "100"})
    seen: set[str] = set()
    while url is not None:
        if url in seen:
            raise GitHubError(f"GET {path}: pagination loops back to a page already read")
        seen.add(url)
        response = request(ctx, "GET", url)
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


def refuse_secrets(ctx: GitHubContext, body: str, secrets: Iterable[str]) -> None:
    if ctx.token in body:
        raise GitHubError("refusing to post the report: it contains the value of GITHUB_TOKEN")
    for secret in secrets:
        if secret and len(secret) >= 4 and secret in body:
            raise GitHubError("refusing to post the report: it contains a value declared secret")


# --------------------------------------------------------------------------------------------
# HTTP


@dataclass(frozen=True)
class Response:
    status: int
    headers: Message
    json: Any


class Forbidden(GitHubError):
    """A 403 that is not a rate limit (the token lacks a permission)."""


class NotFound(GitHubError):
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


def request(
    ctx: GitHubContext,
    method: str,
    path: str,
    *,
    query: Mapping[str, str] | None = None,
    body: Mapping[str, Any] | None = None,
    permission_hint: bool = True,
) -> Response:
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
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with _OPENER.open(req, timeout=ctx.retry.timeout) as raw:
                payload = raw.read()
                log.debug("%s -> %s", what, raw.status)
                return Response(raw.status, raw.headers, _parse_json(payload, what))
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
                f"{_short(str(reason))}"
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
        return Forbidden(f"{what}: 403 Forbidden: the token lacks permission{hint}{detail}")
    if status == 404:
        return NotFound(
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
        return _short(payload.decode("utf-8", errors="replace"))
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return _short(data["message"])
    return ""


def _short(text: str) -> str:
    return one_line(text, _MESSAGE_MAX)
