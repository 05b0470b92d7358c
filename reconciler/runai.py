"""The Run:ai backend: each workspace file is a Run:ai workspace, made through Run:ai's REST API (runapy).

The only module that imports `runai` (runapy, the client generated from Run:ai's OpenAPI
document) or speaks HTTP to Run:ai. It brings what `run.Backend` asks of a backend:

- **render** (`render_runai`, pure): per workspace one object of kind `RunaiWorkspace`, whose
  ``spec`` is the body of ``POST /api/v1/workloads/workspaces`` (minus name and ids), built from the
  Kubernetes Deployment `render` makes, so args, env, working directory and mounts mean the same;
  its ``desiredPhase`` is the file's state; its annotations carry ``workspace-gitops/spec-hash``,
  a hash of the spec.
- **read** (`RunaiBackend.read_live`): one paged listing of the project's workloads
  (``GET /api/v1/workloads?filterBy=projectId==<id>``), then one ``GET`` per workspace in it (the
  listing carries no annotations). A workspace whose annotations say
  ``workspace-gitops/managed-by: workspace-reconciler`` is ours; any other workload with a
  workspace's name is a `conflict`. When the live hash equals the desired one, the live spec
  is taken as the desired spec (unchanged by definition: Run:ai may echo values normalised);
  otherwise the plan shows the fields that differ and always the hash.
- **plan notes** (`RunaiBackend.annotate`): a changed spec is a *recreate* (no in-place update
  before 2.24: delete, wait until gone, create), a state change a *suspend* or *resume*; URLs come
  from the API's connection URLs; kept PVCs from the workspace's storage.
- **apply**: create, delete by workload id (a same-named new workload never shares it),
  recreate, suspend, resume; errors per workspace; an authentication or connection failure stops
  the run with one line.
- **lock**: see `RunaiLock`.

Credentials come only from ``RUNAI_CLIENT_ID`` / ``RUNAI_CLIENT_SECRET``; the token runapy gets
with them is never printed. TLS is verified (a private CA: ``SSL_CERT_FILE``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from reconciler.changeset import (
    Action,
    BlockImpact,
    BlockKind,
    LiveState,
    ObjectChange,
    Plan,
    WorkspacePlan,
    WorkspaceResult,
)
from reconciler.errors import LockError, ReconcileError
from reconciler.fields import parse_quantity
from reconciler.lease import ApplyOptions, default_holder
from reconciler.models import Repo
from reconciler.placement import is_fraction
from reconciler.render import (
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_PART_OF,
    MANAGED_BY,
    DesiredWorkspace,
    render,
)

KIND = "RunaiWorkspace"
API_VERSION = "run.ai/v1"
ANNOTATION_MANAGED_BY = "workspace-gitops/managed-by"
ANNOTATION_SPEC_HASH = "workspace-gitops/spec-hash"
ANNOTATION_SOURCE = "workspace-gitops/source"
ANNOTATION_LOCK_HOLDER = "workspace-gitops/lock-holder"
ANNOTATION_LOCK_SECONDS = "workspace-gitops/lock-seconds"
LOCK_NAME = "workspace-reconciler-lock"
"""The lock: a suspended workspace of this name in the project (names are unique per project)."""
LOCK_IMAGE = "registry.k8s.io/pause:3.10"
TOOLS = {"jupyterlab": ("jupyter-notebook", "Jupyter"), "vscode": ("visual-studio-code", "VS Code")}
"""Run:ai's tool type and the CONNECT button's label, per environment tool."""
STOPPED_PHASES = frozenset({"Stopped", "Stopping"})
PAGE = 100


class RunaiError(ReconcileError):
    """Run:ai's API failed or refused a request; ``status`` is its HTTP status, None without an answer."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------------------------
# render (pure)


def render_runai(repo: Repo) -> list[DesiredWorkspace]:
    """Every workspace of a validated repo as one Run:ai workspace object, sorted by name."""
    return [_runai_workspace(repo, w) for w in render(repo)]


def _runai_workspace(repo: Repo, w: DesiredWorkspace) -> DesiredWorkspace:
    project = repo.project
    assert project.spec.runai is not None, "validate: backend runai needs spec.runai"
    runai_project = project.spec.runai.project
    deployment = w.objects[0]
    compute = repo.compute[w.compute].spec
    spec = workspace_spec(deployment, w.tool, float(compute.gpu) if is_fraction(compute.gpu) else None,
                          compute.node_pool or "")
    digest = spec_hash(spec)
    spec["annotations"] = [
        {"name": ANNOTATION_MANAGED_BY, "value": MANAGED_BY},
        {"name": ANNOTATION_SPEC_HASH, "value": digest},
        {"name": ANNOTATION_SOURCE, "value": w.source},
    ]
    obj = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": w.name,
            "namespace": runai_project,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_PART_OF: project.name, LABEL_INSTANCE: w.name},
            "annotations": {ANNOTATION_SPEC_HASH: digest, ANNOTATION_SOURCE: w.source},
        },
        "spec": spec,
        "desiredPhase": "Running" if w.state == "running" else "Stopped",
    }
    credentials = repo.environments[w.environment].spec.credentials
    hint = credential_hint(runai_project, w.name, credentials.file, credentials.log_pattern)
    return dataclasses.replace(w, url="", credential_hint=hint, objects=(obj,))


def workspace_spec(deployment: dict[str, Any], tool: str, gpu_portion: float | None = None,
                   node_pool: str = "") -> dict[str, Any]:
    """The Run:ai workspace spec (WorkspaceSpecSpec, camelCase) of a rendered Deployment."""
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    limits = container["resources"]["limits"]
    compute: dict[str, Any] = {
        "cpuCoreRequest": float(parse_quantity(str(limits["cpu"]))),
        "cpuCoreLimit": float(parse_quantity(str(limits["cpu"]))),
        "cpuMemoryRequest": str(limits["memory"]),
        "cpuMemoryLimit": str(limits["memory"]),
    }
    gpus = int(limits.get("nvidia.com/gpu", 0))
    if gpus:
        compute["gpuDevicesRequest"] = gpus
    elif gpu_portion is not None:  # a GPU fraction: one device, that portion of it
        compute.update(gpuDevicesRequest=1, gpuRequestType="portion", gpuPortionRequest=gpu_portion)
    port = container["ports"][0]["containerPort"]
    tool_type, tool_name = TOOLS[tool]
    spec: dict[str, Any] = {"image": container["image"], "compute": compute}
    if container.get("args"):
        # A list here, so the diff compares and masks it item by item as for Kubernetes;
        # `api_spec` joins it into the one string Run:ai takes.
        spec["args"] = list(container["args"])
    if container.get("env"):
        spec["environmentVariables"] = [{"name": e["name"], "value": e["value"]} for e in container["env"]]
    if container.get("workingDir"):
        spec["workingDir"] = container["workingDir"]
    volumes = pod.get("volumes") or ()
    if any((v.get("emptyDir") or {}).get("medium") == "Memory" for v in volumes):
        compute["largeShmRequest"] = True  # a compute block's shm: Run:ai sizes /dev/shm itself
    claims = {v["name"]: v["persistentVolumeClaim"] for v in volumes if "persistentVolumeClaim" in v}
    pvcs = [
        {
            "name": m["name"],
            "claimName": claims[m["name"]]["claimName"],
            "path": m["mountPath"],
            "existingPvc": True,
            "readOnly": bool(m.get("readOnly", False)),
        }
        for m in container.get("volumeMounts") or ()
        # Run:ai mounts a claim whole: the home kept in a sub-folder is not carried over.
        if m["name"] in claims and not m.get("subPath")
    ]
    if pvcs:
        spec["storage"] = {"pvc": pvcs}
    if node_pool:
        spec["nodePools"] = [node_pool]  # a Run:ai node pool of that name
    spec["exposedUrls"] = [{"container": port, "toolType": tool_type, "toolName": tool_name}]
    return spec


def api_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as Run:ai takes it: `args` as one shell-quoted string."""
    if isinstance(spec.get("args"), list):
        return {**spec, "args": shlex.join(spec["args"])}
    return spec


def _split_args(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as the plan compares it: Run:ai's `args` string as a list."""
    args = spec.get("args")
    if not isinstance(args, str):
        return spec
    try:
        return {**spec, "args": shlex.split(args)}
    except ValueError:  # unbalanced quotes: not ours; compared whole
        return {**spec, "args": [args]}


def spec_hash(spec: dict[str, Any]) -> str:
    """A short hash of a spec without its annotations: equal hashes, nothing to recreate."""
    body = {k: v for k, v in spec.items() if k != "annotations"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def credential_hint(runai_project: str, name: str, file: str | None, log_pattern: str | None) -> str:
    """The seed's `runai workspace exec|logs` command that prints the password or token (never the secret)."""
    if file is not None:
        return f"runai workspace exec {name} -p {runai_project} -- cat {file}"
    return f'runai workspace logs {name} -p {runai_project} | grep "{log_pattern}"'


def powershell_hint(hint: str) -> str:
    """The same command for PowerShell (`Select-String` for grep)."""
    if " | grep " in hint:
        command, pattern = hint.rsplit(" | grep ", 1)
        return f"{command} | Select-String -SimpleMatch {pattern}"  # the pattern keeps its quotes
    return hint


# --------------------------------------------------------------------------------------------
# the live objects, as the plan reads them (pure)


def live_object(workload: dict[str, Any], workspace: dict[str, Any] | None, project: str,
                runai_project: str) -> dict[str, Any]:
    """A listed workload (and, for a workspace, its GET) in the shape the plan compares."""
    spec = _split_args((workspace or {}).get("spec") or {})
    annotations = {a.get("name"): a.get("value") for a in spec.get("annotations") or () if isinstance(a, dict)}
    name = str(workload.get("name", ""))
    labels = (
        {LABEL_MANAGED_BY: MANAGED_BY, LABEL_PART_OF: project, LABEL_INSTANCE: name}
        if annotations.get(ANNOTATION_MANAGED_BY) == MANAGED_BY
        else {}
    )
    kept = {k: str(annotations[k]) for k in (ANNOTATION_SPEC_HASH, ANNOTATION_SOURCE) if annotations.get(k)}
    desired_phase = (workspace or {}).get("desiredPhase") or (
        "Stopped" if workload.get("phase") in STOPPED_PHASES else "Running"
    )
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": runai_project, "uid": str(workload.get("id", "")),
                     "labels": labels, "annotations": kept},
        "spec": spec,
        "desiredPhase": desired_phase,
        "status": {"phase": workload.get("phase", ""), "type": workload.get("type", ""),
                   "urls": list(workload.get("urls") or ()), "phaseMessage": workload.get("phaseMessage") or ""},
    }


def _recreates(change: ObjectChange) -> bool:
    ours = bool(((change.live or {}).get("metadata") or {}).get("labels"))
    return not ours or any(d.path != "desiredPhase" for d in change.diff)


def _pvcs(obj: dict[str, Any] | None) -> list[str]:
    storage = ((obj or {}).get("spec") or {}).get("storage") or {}
    claims = [str(p.get("claimName")) for p in storage.get("pvc") or () if p.get("claimName")]
    return list(dict.fromkeys(claims))


def annotate(plan: Plan, desired: Iterable[DesiredWorkspace], urls: dict[str, str]) -> Plan:
    """The plan in Run:ai's words: recreate/suspend/resume notes, connection URLs, kept PVCs, blast radius."""
    desired = list(desired)
    workspaces = [_annotate_workspace(w, urls) for w in plan.workspaces]
    warnings = [w for w in plan.warnings if "could not be listed" not in w]
    running = any(w.state == "running" and (w.pvcs or w.gpu) for w in desired)
    if running and not any(w.startswith("Run:ai checks PVCs") for w in warnings):
        warnings.append("Run:ai checks PVCs and the project's GPU quota when it schedules a workspace; "
                        "the plan does not (a missing PVC shows as a workspace that does not start)")
    return dataclasses.replace(plan, workspaces=workspaces, warnings=warnings,
                               blast_radius=blast_radius(desired, workspaces))


_BLOCK_FIELDS: dict[BlockKind, tuple[str, ...]] = {
    "environment": ("spec.image", "spec.args", "spec.command", "spec.environmentVariables", "spec.exposedUrls"),
    "compute": ("spec.compute", "spec.nodePools"),
    "data source": ("spec.storage", "spec.workingDir"),
}
"""The Run:ai spec fields each kind of block controls."""


def blast_radius(desired: list[DesiredWorkspace], workspaces: list[WorkspacePlan]) -> list[BlockImpact]:
    """Blocks that changed, with the running workspaces recreated because of them (`impact.blast_radius`'s rule:
    a block counts as changed when every existing workspace using it has diffs under the fields it controls)."""
    by_name = {w.name: w for w in workspaces}
    users: dict[tuple[BlockKind, str], list[str]] = {}
    touched: dict[str, set[BlockKind]] = {}
    for w in desired:
        wp = by_name.get(w.name)
        if wp is None or wp.action not in (Action.UPDATE, Action.UNCHANGED):
            continue
        paths = [d.path for o in wp.objects if o.id.kind == KIND and o.action is Action.UPDATE for d in o.diff]
        touched[w.name] = {kind for kind, fields in _BLOCK_FIELDS.items() if any(p.startswith(fields) for p in paths)}
        blocks: list[tuple[BlockKind, str]] = [("environment", w.environment), ("compute", w.compute),
                                               *(("data source", d) for d in w.data_sources)]
        for block in blocks:
            users.setdefault(block, []).append(w.name)
    order: dict[BlockKind, int] = {"environment": 0, "compute": 1, "data source": 2}
    return [BlockImpact(kind, name, sorted(n for n in names if by_name[n].restarts))
            for (kind, name), names in sorted(users.items(), key=lambda kv: (order[kv[0][0]], kv[0][1]))
            if all(kind in touched[n] for n in names)]


def _annotate_workspace(w: WorkspacePlan, urls: dict[str, str]) -> WorkspacePlan:
    change = next((o for o in w.objects if o.id.kind == KIND), None)
    if change is None:
        return w
    url = urls.get(w.name) or next(iter(((change.live or {}).get("status") or {}).get("urls") or ()), "")
    notes: list[str] = []
    restarts = False
    if w.action is Action.UPDATE and change.live is not None:
        before = change.live.get("desiredPhase")
        after = (change.desired or {}).get("desiredPhase")
        if _recreates(change):
            restarts = before == "Running" and after == "Running"
            notes.append("recreate: Run:ai has no in-place update, so the workspace is deleted and created again: "
                         "the pod restarts (unsaved work is lost); data on PVCs is kept")
            if after == "Stopped":
                notes.append("it is created again suspended (state: stopped)")
        elif before == "Running" and after == "Stopped":
            notes.append("suspend (state: stopped): the pod stops, unsaved work is lost; data on PVCs is kept")
        elif before == "Stopped" and after == "Running":
            notes.append("resume (state: running): the pod starts again")
    if w.action is Action.DELETE:
        kept = _pvcs(change.live)
        notes = ([f"data is kept: PVC {', '.join(kept)} {'is' if len(kept) == 1 else 'are'} not deleted"] if kept
                 else ["no PVC is mounted: whatever the pod wrote outside a PVC is lost"])
        return dataclasses.replace(w, url=url, kept_pvcs=kept, notes=notes)
    if w.action in (Action.CREATE, Action.UPDATE) and " | grep " in w.credential_hint:
        notes.append(f"on Windows (PowerShell): {powershell_hint(w.credential_hint)}")
    notes += [n for n in w.notes if n not in notes]  # annotating twice (after the wait) adds nothing
    return dataclasses.replace(w, url=url, restarts=restarts or w.restarts, notes=notes)


# --------------------------------------------------------------------------------------------
# the API (runapy)


@dataclass
class RunaiOptions:
    """Where and how to reach Run:ai; credentials default to the environment."""

    url: str
    cluster: str
    project: str
    client_id: str | None = None
    client_secret: str | None = None
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


# --------------------------------------------------------------------------------------------
# the lock


class RunaiLock:
    """One writer at a time: a suspended workspace named `LOCK_NAME` in the project.

    Run:ai keeps workload names unique per project, so the create that succeeds holds the lock;
    another run's create answers 409. The lock carries its holder and how long it may be held
    (``workspace-gitops/lock-seconds``: the holder's timeout plus a minute). Run:ai has no
    in-place update, so the lock is never renewed: a holder stops writing once that time is up
    (`ensure_held`), and releases it by deleting it (by id) at the end.

    When a runner dies holding it, the lock stays. A waiting run takes it over (deletes it by id,
    then creates its own) only after it has seen *the same* lock (same workload id) for the
    whole declared time on its own monotonic clock, so clock skew between runners does not
    matter. A waiting run whose --timeout ends first fails with the holder's name and how to
    remove a lock left by a dead run.
    """

    def __init__(self, api: RunaiApi, opts: ApplyOptions) -> None:
        self.api, self.opts = api, opts
        self.seconds = int(opts.timeout) + 60
        self.holder = f"{opts.holder or default_holder()} [{uuid.uuid4().hex[:8]}]"
        self.workload_id = ""
        self._taken_at = 0.0

    def acquire(self) -> None:
        """Create the lock, waiting (and taking over a stale one) until the timeout."""
        deadline = time.monotonic() + self.opts.timeout
        seen: tuple[str, float] | None = None  # (workload id, first seen)
        spec = {"image": LOCK_IMAGE, "compute": {"cpuCoreRequest": 0.01, "cpuMemoryRequest": "16M"},
                "annotations": [{"name": ANNOTATION_LOCK_HOLDER, "value": self.holder},
                                {"name": ANNOTATION_LOCK_SECONDS, "value": str(self.seconds)}]}
        while True:
            try:
                self.workload_id = self.api.create(LOCK_NAME, spec)
                self._taken_at = time.monotonic()
                try:
                    self.api.suspend(LOCK_NAME, self.workload_id)  # holds no GPU, CPU or quota
                except RunaiError:
                    self.release()
                    raise
                return
            except RunaiError as e:
                if e.status != 409:
                    raise
            held = next((w for w in self.api.workloads() if w.get("name") == LOCK_NAME), None)
            now = time.monotonic()
            if held is None:  # released between our create and the listing: try again
                time.sleep(self.api.opts.poll_interval)
                continue
            detail = self.api.workspace(str(held.get("id"))) or {}
            notes = {a.get("name"): a.get("value") for a in (detail.get("spec") or {}).get("annotations") or ()}
            try:
                declared = float(notes.get(ANNOTATION_LOCK_SECONDS) or self.seconds)
            except ValueError:
                declared = float(self.seconds)
            if seen is None or seen[0] != held.get("id"):
                seen = (str(held.get("id")), now)
            elif now - seen[1] >= declared:
                self.api.delete(LOCK_NAME, seen[0])  # a dead holder's: taken over
                self.api.wait_gone(LOCK_NAME, seen[0], deadline + declared)
                seen = None
                continue
            if now >= deadline:
                holder = notes.get(ANNOTATION_LOCK_HOLDER) or "an unknown holder"
                raise LockError(
                    f"the Run:ai lock {LOCK_NAME} in project {self.api.opts.project} is held by "
                    f"{holder} (created {held.get('createdAt', '?')});"
                    f" it is taken over once seen unchanged for {declared:.0f}s: re-run with --timeout above that, or,"
                    f" if that run is dead: runai workspace delete {LOCK_NAME} -p {self.api.opts.project}")
            time.sleep(self.api.opts.poll_interval)

    def ensure_held(self) -> None:
        """Refuse to write once the declared time is up: another run may have taken the lock over."""
        if time.monotonic() - self._taken_at >= self.seconds - 5:
            raise LockError(f"the Run:ai lock {LOCK_NAME} was held for its declared {self.seconds}s: stopped "
                            "writing (another run may take it over); the next run finishes the rest")

    def release(self) -> None:
        """Delete our lock (by its id: never another run's)."""
        if self.workload_id:
            self.api.delete(LOCK_NAME, self.workload_id)
            self.workload_id = ""


# --------------------------------------------------------------------------------------------
# the backend


class RunaiBackend:
    """`run.Backend` for Run:ai: read, lock, write, wait."""

    def __init__(self, project: str, opts: RunaiOptions, desired: Iterable[DesiredWorkspace],
                 api: RunaiApi | None = None) -> None:
        self.project, self.opts = project, opts
        self.desired = {w.name: w for w in desired}
        self._api = api
        self._urls: dict[str, str] = {}
        self._lock: RunaiLock | None = None

    @property
    def api(self) -> RunaiApi:
        """The connected API (a token is requested and ids are resolved on first use)."""
        if self._api is None:
            self._api = RunaiApi(self.opts)
        if not self._api.project_id:
            self._api.resolve()
        return self._api

    def read_live(self, claims: Iterable[str] = (), *, wanted: Collection[Any] | None = None) -> LiveState:
        """One paged listing, then a GET of each workspace in it (annotations are only there).

        ``wanted`` (the names the plan may create) changes nothing here: the listing is small."""
        from reconciler.changeset import ObjectId

        objects: dict[ObjectId, dict[str, Any]] = {}
        for workload in self.api.workloads():
            name = str(workload.get("name", ""))
            if name == LOCK_NAME:
                continue
            detail = None
            if str(workload.get("type", "")).lower() == "workspace":
                detail = self.api.workspace(str(workload.get("id")))
                if detail is None:
                    continue  # deleted between the listing and the read
            obj = live_object(workload, detail, self.project, self.opts.project)
            want = self.desired.get(name)
            live_hash = obj["metadata"]["annotations"].get(ANNOTATION_SPEC_HASH)
            if want is not None and obj["metadata"]["labels"] and \
                    live_hash == want.objects[0]["metadata"]["annotations"][ANNOTATION_SPEC_HASH]:
                obj["spec"] = want.objects[0]["spec"]  # equal hashes: the spec we sent
            self._urls[name] = next(iter(obj["status"]["urls"]), "") or self._urls.get(name, "")
            objects[ObjectId(KIND, self.opts.project, name)] = obj
        return LiveState(objects, None, None)

    def annotate(self, plan: Plan) -> Plan:
        """The plan with Run:ai's notes and the latest connection URLs."""
        return annotate(plan, self.desired.values(), self._urls)

    @contextmanager
    def _locked(self, opts: ApplyOptions) -> Iterator[object]:
        lock = RunaiLock(self.api, opts)
        lock.acquire()
        self._lock = lock
        try:
            yield lock
        finally:
            self._lock = None
            lock.release()

    def acquire_lease(self, opts: ApplyOptions) -> AbstractContextManager[object]:
        """The lock as a context manager (see `RunaiLock`)."""
        return self._locked(opts)

    def apply(self, plan: Plan) -> dict[str, WorkspaceResult]:
        """Each workspace's writes in name order; errors per workspace; auth/connection failures stop the run."""
        results: dict[str, WorkspaceResult] = {}
        for w in plan.workspaces:
            if w.action not in (Action.CREATE, Action.UPDATE, Action.DELETE):
                continue
            result = results.setdefault(w.name, WorkspaceResult(ready=None))
            for change in w.objects:
                if change.id.kind != KIND or change.action in (Action.UNCHANGED, Action.CONFLICT):
                    continue
                if self._lock is not None:
                    self._lock.ensure_held()
                try:
                    self._apply_one(w.name, change)
                except RunaiError as e:
                    if e.status in (None, 401):
                        raise
                    result.errors.append(str(e))
        return results

    def _apply_one(self, name: str, change: ObjectChange) -> None:
        api = self.api
        live_id = str(((change.live or {}).get("metadata") or {}).get("uid") or "")
        desired = change.desired or {}
        stopped = desired.get("desiredPhase") == "Stopped"
        if change.action is Action.DELETE:
            api.delete(name, live_id)
            return
        if change.action is Action.UPDATE and not _recreates(change):
            if stopped:
                api.suspend(name, live_id)
            else:
                api.resume(name, live_id)
            return
        if change.action is Action.UPDATE:
            api.delete(name, live_id)
            timeout = self._lock.opts.timeout if self._lock is not None else 300.0
            api.wait_gone(name, live_id, time.monotonic() + timeout)
        new_id = api.create(name, desired["spec"])
        if stopped and new_id:
            api.suspend(name, new_id)

    def wait_ready(self, project: str, names: list[str], timeout: float,
                   progress: Callable[[list[str], list[str]], None] | None = None) -> dict[str, WorkspaceResult]:
        """Until each named workspace's phase is Running (one listing per poll); why not, for the rest."""
        deadline = time.monotonic() + timeout
        pending = set(names)
        results: dict[str, WorkspaceResult] = {}
        while True:
            listed = {str(w.get("name")): w for w in self.api.workloads()}
            for name in sorted(pending):
                workload = listed.get(name) or {}
                urls = workload.get("urls") or ()
                if urls:
                    self._urls[name] = str(urls[0])
                if workload.get("phase") == "Running":
                    results[name] = WorkspaceResult(ready=True)
                    pending.discard(name)
                elif workload.get("phase") == "Failed":
                    results[name] = WorkspaceResult(ready=False, reason=_phase_text(workload))
                    pending.discard(name)
            if progress is not None:
                progress(sorted(n for n, r in results.items() if r.ready), sorted(pending))
            if not pending:
                return results
            if time.monotonic() >= deadline:
                for name in pending:
                    results[name] = WorkspaceResult(ready=False, reason=_phase_text(listed.get(name) or {}))
                return results
            time.sleep(self.opts.poll_interval)


def _phase_text(workload: dict[str, Any]) -> str:
    if not workload:
        return "not found in the project's workloads"
    message = " ".join(str(workload.get("phaseMessage") or "").split())
    return f"phase {workload.get('phase', 'Unknown')}" + (f": {message}" if message else "")
