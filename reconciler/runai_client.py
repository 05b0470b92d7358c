"""The Run:ai REST API through runapy: the only module that imports `runai` (runapy, the client generated from
Run:ai's OpenAPI document) or speaks HTTP to Run:ai.

`RunaiApi` makes the few calls the backend needs: the token (credentials only from ``RUNAI_CLIENT_ID`` /
``RUNAI_CLIENT_SECRET``; the token is never printed), reads retried on 429/5xx/timeouts and paged, writes never
retried; every failure becomes one `RunaiError` naming what to check. TLS is verified (a private CA:
``SSL_CERT_FILE``)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reconciler.errors import ReconcileError
from reconciler.runai_spec import KIND, api_spec

PAGE = 100


class RunaiError(ReconcileError):
    """Run:ai's API failed or refused a request; ``status`` is its HTTP status, None without an answer."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status




# --------------------------------------------------------------------------------------------
# the API (runapy)


@dataclass
class RunaiOptions:
    """Where and how to reach Run:ai; credentials default to the environment."""

    url: str
    cluster: str
    project: str
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)  # never in a repr or a traceback
    request_timeout: float = field(default_factory=lambda: float(os.environ.get("RUNAI_REQUEST_TIMEOUT", "30")))
    poll_interval: float = 1.0
    retries: int = 3  # reads only: a write is never retried blindly

    def __post_init__(self) -> None:
        if self.client_id is None:
            self.client_id = os.environ.get("RUNAI_CLIENT_ID")
        if self.client_secret is None:
            self.client_secret = os.environ.get("RUNAI_CLIENT_SECRET")


class RunaiApi:
    """The few calls this backend makes, through runapy; every failure becomes a `RunaiError`, once."""

    def __init__(self, opts: RunaiOptions) -> None:
        self.opts = opts
        if not opts.client_id or not opts.client_secret:
            raise RunaiError("RUNAI_CLIENT_ID and RUNAI_CLIENT_SECRET must be set: the Run:ai backend takes its "
                             "credentials only from the environment")
        self._client = _connect(opts)
        self.project_id = ""
        self.cluster_id = ""

    # ---- reads (retried on 429/5xx/timeouts)

    def resolve(self) -> None:
        """The project's and cluster's ids, from their names."""
        clusters = self._read("GET /api/v1/clusters", lambda c: c.organizations.clusters.get_clusters())
        matches = [c for c in clusters or () if c.get("name") == self.opts.cluster]
        if not matches:
            raise RunaiError(f"Run:ai cluster {self.opts.cluster!r} not found at {self.opts.url} "
                             "(project.yaml spec.runai.cluster; does the service account see it?)", 404)
        self.cluster_id = str(matches[0].get("uuid") or matches[0].get("id"))
        found = self._read("GET /api/v1/org-unit/projects", lambda c: c.organizations.projects.get_projects(
            filter_by=[f"name=={self.opts.project}"]))
        projects = [p for p in (found or {}).get("projects") or () if p.get("name") == self.opts.project
                    and str(p.get("clusterId")) == self.cluster_id]
        if not projects:
            raise RunaiError(f"Run:ai project {self.opts.project!r} not found in cluster {self.opts.cluster!r} "
                             "(project.yaml spec.runai.project; does the service account see it?)", 404)
        self.project_id = str(projects[0]["id"])

    def workloads(self) -> list[dict[str, Any]]:
        """Every workload of the project, all pages."""
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            def listing(c: Any, o: int = offset) -> Any:
                return c.workloads.workloads.get_workloads(offset=o, limit=PAGE,
                                                           filter_by=[f"projectId=={self.project_id}"])

            page = self._read("GET /api/v1/workloads", listing)
            items = list((page or {}).get("workloads") or ())
            out += items
            nxt = (page or {}).get("next")
            if not items or not isinstance(nxt, int) or nxt <= offset:
                return out
            offset = nxt

    def workspace(self, workload_id: str) -> dict[str, Any] | None:
        """One workspace (None when it is gone)."""
        try:
            data = self._read(f"GET workspace {workload_id}",
                              lambda c: c.workloads.workspaces.get_workspace(workload_id=workload_id))
        except RunaiError as e:
            if e.status == 404:
                return None
            raise
        return data if isinstance(data, dict) else None

    # ---- writes (never retried: the next run sees what happened)

    def create(self, name: str, spec: dict[str, Any]) -> str:
        """POST a workspace; its workload id."""
        from runai.models.workspace_creation_request import WorkspaceCreationRequest

        body = {"name": name, "useGivenNameAsPrefix": False, "projectId": self.project_id,
                "clusterId": self.cluster_id, "spec": api_spec(spec)}
        try:
            request = WorkspaceCreationRequest.from_dict(body)
        except ValueError as e:  # pydantic's ValidationError: our mapping broke the published schema
            raise RunaiError(f"{KIND}/{self.opts.project}/{name}: the request does not match Run:ai's schema: "
                             f"{str(e).splitlines()[0]}") from None
        data = self._write(f"{KIND}/{self.opts.project}/{name}: create",
                           lambda c: c.workloads.workspaces.create_workspace1(workspace_creation_request=request))
        return str((data or {}).get("workloadId") or (data or {}).get("id") or "")

    def delete(self, name: str, workload_id: str) -> None:
        """DELETE by workload id; a workspace already gone is fine."""
        try:
            self._write(f"{KIND}/{self.opts.project}/{name}: delete",
                        lambda c: c.workloads.workspaces.delete_workspace(workload_id=workload_id))
        except RunaiError as e:
            if e.status != 404:
                raise

    def suspend(self, name: str, workload_id: str) -> None:
        """POST …/suspend."""
        self._write(f"{KIND}/{self.opts.project}/{name}: suspend",
                    lambda c: c.workloads.workspaces.suspend_workspace(workload_id=workload_id))

    def resume(self, name: str, workload_id: str) -> None:
        """POST …/resume."""
        self._write(f"{KIND}/{self.opts.project}/{name}: resume",
                    lambda c: c.workloads.workspaces.resume_workspace(workload_id=workload_id))

    def wait_gone(self, name: str, workload_id: str, deadline: float) -> None:
        """Until GET answers 404 (Run:ai deletes asynchronously), or raise at `deadline`."""
        while self.workspace(workload_id) is not None:
            if time.monotonic() >= deadline:
                raise RunaiError(f"{KIND}/{self.opts.project}/{name}: still deleting after the timeout; "
                                 "nothing was created in its place (the next run does)")
            time.sleep(self.opts.poll_interval)

    # ---- plumbing

    def _read(self, what: str, call: Callable[[Any], Any]) -> Any:
        for attempt in range(self.opts.retries + 1):
            try:
                return self._call(what, call)
            except RunaiError as e:
                transient = e.status is None or e.status == 429 or e.status >= 500
                if not transient or attempt == self.opts.retries or e.status == 401:
                    raise
                time.sleep(min(0.2 * 2**attempt, 2.0))
        raise AssertionError("unreachable")

    def _write(self, what: str, call: Callable[[Any], Any]) -> Any:
        return self._call(what, call)

    def _call(self, what: str, call: Callable[[Any], Any]) -> Any:
        from runai.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            response = call(self._client)
        except ApiException as e:
            raise _api_error(what, e.status, e.body, self.opts.url) from None
        except HTTPError as e:
            raise RunaiError(f"{what}: cannot reach Run:ai at {self.opts.url}: {_why(e, self.opts)}") from None
        return getattr(response, "data", None)


def _why(error: Exception, opts: RunaiOptions) -> str:
    """Why a request got no answer, in a few words (urllib3 wraps the cause in MaxRetryError)."""
    cause = getattr(error, "reason", None) or error
    name = type(cause).__name__
    if "Timeout" in name:
        return f"{name} (no answer within {opts.request_timeout:g}s; RUNAI_REQUEST_TIMEOUT)"
    return name


def _api_error(what: str, status: int | None, body: Any, url: str) -> RunaiError:
    if status == 401:
        return RunaiError(f"{what}: Run:ai at {url} refused the token (HTTP 401): check RUNAI_CLIENT_ID and "
                          "RUNAI_CLIENT_SECRET", 401)
    if status == 403:
        return RunaiError(f"{what}: forbidden (HTTP 403): the service account lacks the role for this "
                          "(plan needs read access to the project's workloads; apply a workspace-writing role)", 403)
    message = ""
    try:
        parsed = json.loads(body) if isinstance(body, str | bytes) else body
        if isinstance(parsed, dict):
            message = str(parsed.get("message") or "")
    except ValueError:
        message = ""
    return RunaiError(f"{what}: HTTP {status}" + (f": {' '.join(message.split())[:300]}" if message else ""), status)


def _connect(opts: RunaiOptions) -> Any:
    """A runapy client with a token; a refused credential is one RunaiError naming the variables."""
    import logging

    from runai.api_client import ApiClient
    from runai.configuration import Configuration
    from runai.runai_client import RunaiClient
    from urllib3.exceptions import HTTPError

    class Client(ApiClient):
        """runapy's client with a timeout on every request and a token request that checks its status."""

        def call_api(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("_request_timeout", opts.request_timeout)
            return super().call_api(*args, **kwargs)

        def _make_token_request(self) -> str:
            body = json.dumps({"grantType": "app_token", "AppId": opts.client_id, "AppSecret": opts.client_secret})
            url = f"{self.configuration.runai_base_url}/api/v1/token"
            headers = {"Accept": "application/json", "Content-Type": "application/json"}
            response = self.rest_client.request(  # type: ignore[no-untyped-call]
                method="POST", url=url, body=body, headers=headers, _request_timeout=opts.request_timeout)
            data = response.read()
            if response.status in (400, 401, 403):
                raise RunaiError(f"Run:ai at {opts.url} refused the client credentials (HTTP {response.status}): "
                                 "check RUNAI_CLIENT_ID and RUNAI_CLIENT_SECRET", response.status)
            if response.status != 200:
                raise RunaiError(f"Run:ai at {opts.url}: the token request failed (HTTP {response.status})",
                                 response.status)
            try:
                token = json.loads(data)["accessToken"]
            except (ValueError, KeyError, TypeError):
                raise RunaiError(f"Run:ai at {opts.url}: the token answer has no accessToken") from None
            return str(token)

    quiet = logging.getLogger("reconciler.runai.runapy")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    config = Configuration(client_id=str(opts.client_id), client_secret=str(opts.client_secret),
                           runai_base_url=opts.url, retry_enabled=False, logger=quiet)
    try:
        return RunaiClient(Client(config))  # type: ignore[no-untyped-call]
    except HTTPError as e:
        raise RunaiError(f"cannot reach Run:ai at {opts.url}: {_why(e, opts)}") from None
    except ValueError:  # the token is not a JWT with an expiry (runapy refreshes by it)
        raise RunaiError(f"Run:ai at {opts.url}: the token answer is not a JWT with an expiry") from None
