"""The one module that talks to Kubernetes.

Reads live state with a paged LIST per kind (`limit`/`continue`), decoding each page one item at a
time as it streams in and keeping only what the plan needs (see `read_live`), writes with
server-side apply (field manager `workspace-reconciler`, forced), deletes with a uid precondition,
serializes writers with a Lease, waits for readiness and reads status (judged by the pure `readiness` module). Every API
failure becomes a ClusterError or LockError here, once, with the object's identity first.

Requests go through the official client's public `ApiClient.param_serialize` and `call_api`
(its connection pool, TLS, proxy and authentication, token refresh included), but answers are
read with `json.loads` instead of the typed models (much faster on large LISTs) and writes are
`application/apply-patch+yaml` PATCHes of plain dicts; no API discovery is run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from reconciler.changeset import DELETE_ORDER, CompactEntry, CompactObjects
from reconciler.errors import ClusterError, LockError
from reconciler.extensions import extension_notes
from reconciler.lease import ApplyOptions as ApplyOptions
from reconciler.lease import Lease as Lease
from reconciler.lifecycle import Activity, code_server_heartbeat, jupyter_last_activity
from reconciler.listing import StreamedList
from reconciler.plan import Action, LiveState, ObjectChange, ObjectId, Plan, StatusRow, WorkspaceResult, is_ours
from reconciler.readiness import deployment_ready, parse_time, status_rows, unready_names, why_not_ready
from reconciler.render import (
    CONTAINER_NAME,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    PORT_NAME,
    DesiredWorkspace,
    instances_selector,
    managed_selector,
)

FIELD_MANAGER = MANAGED_BY
APPLY_ORDER = ("Deployment", "Service", "Ingress")
KINDS: dict[str, tuple[str, str]] = {
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Service": ("/api/v1", "services"),
    "Ingress": ("/apis/networking.k8s.io/v1", "ingresses"),
}
RETRYABLE = {429, 500, 502, 503, 504}
WAIT_BY_NAME = 50
"""Up to this many workspaces, the readiness wait lists only their Deployments (by instance label)."""
Json = dict[str, Any]
_Kept = TypeVar("_Kept")


@dataclass
class ClusterOptions:
    """How to reach the cluster."""

    kubeconfig: str | None = None
    context: str | None = None
    request_timeout: float = 30.0
    retries: int = 3
    workers: int = 8
    list_page_size: int = 5000
    """Items per LIST page. Memory does not depend on it (items are decoded one at a time as the
    page streams in); requests do: at 5,000 workspaces a plan is 2 pages per kind. Tests force a
    small one to prove that paging loses nothing."""


class Cluster:
    """A connection to one namespace of one cluster."""

    def __init__(self, namespace: str, opts: ClusterOptions | None = None) -> None:
        self.namespace = namespace
        self.opts = opts or ClusterOptions()
        self._api = _api_client(self.opts)
        self._host = self._api.configuration.host.rstrip("/")
        self._timeout = (5.0, self.opts.request_timeout)  # (connect, read)
        self.requests = 0
        # Set while a Lease is held: checked before every attempt of every object write, so nothing
        # is written once the Lease may belong to another run.
        self.fence: Callable[[], None] | None = None
        # Set once a request found the API server unreachable after all its retries: every later
        # call fails at once, so a run whose apiserver died ends in seconds, not retries x objects.
        self._unreachable: str | None = None
        # The failure of the latest attempt that got no answer at all (None once one is answered):
        # when the Lease cannot be renewed, this is usually why.
        self.transport_error: str | None = None

    # --- transport ---------------------------------------------------------------------------
    def request(self, method: str, path: str, *, query: dict[str, str] | None = None, body: Any = None,
                content_type: str = "application/json", what: str = "", write: bool = False) -> Json:
        """One API call; retries transient failures (429, 5xx, connection errors) with backoff.

        Sent through the client's public ``ApiClient.param_serialize`` / ``call_api`` (its auth,
        token refresh, TLS, proxy and connection pool), and read as raw JSON bytes: no typed
        models. `write`: an object write, sent only while the Lease is held (see `fence`)."""
        answer: Json = self._send(method, path, query, body, content_type, what or f"{method} {path}", write,
                                  lambda r: json.loads(raw) if (raw := r.read()) else {})
        return answer

    def _send(self, method: str, path: str, query: dict[str, str] | None, body: Any, content_type: str,
              what: str, write: bool, read: Callable[[Any], Any]) -> Any:
        """Send one request (with the retries of `request`) and return `read` of its 2xx answer.

        `read` runs inside the retry loop: a connection lost while the answer streams in is retried
        like one lost before it."""
        headers = {"Accept": "application/json"}
        if body is None and method == "DELETE":
            body = {}
        if body is not None:
            headers["Content-Type"] = content_type
        delay = 0.5
        for attempt in range(self.opts.retries + 1):
            last = attempt == self.opts.retries
            if self._unreachable is not None:
                raise ClusterError(f"{what}: {self._unreachable}")
            if write and self.fence is not None:
                self.fence()
            self.requests += 1
            try:
                verb, url, sent_headers, payload, _ = self._api.param_serialize(
                    method, path, query_params=list(query.items()) if query else None,
                    header_params=dict(headers), body=body, auth_settings=["BearerToken"])
                r = self._api.call_api(verb, url, header_params=sent_headers, body=payload,
                                       _request_timeout=self._timeout)
                if 200 <= r.status < 300:
                    answer = read(r)
                    self.transport_error = None
                    return answer
                raw = r.read()  # type: ignore[no-untyped-call]
            except (urllib3.exceptions.HTTPError, OSError, ApiException) as e:
                if isinstance(e, ApiException) and e.status:  # not a transport failure: never expected here
                    raise
                self.transport_error = f"cannot reach the API server at {self._host}: {_short(e)}"
                if last:
                    self._unreachable = self.transport_error
                    raise ClusterError(f"{what}: {self._unreachable}") from None
                time.sleep(delay)
                delay *= 2
                continue
            self.transport_error = None
            if r.status in RETRYABLE and not last:
                retry_after = r.headers.get("Retry-After")
                time.sleep(min(float(retry_after), 10.0) if retry_after and retry_after.isdigit() else delay)
                delay *= 2
                continue
            raise _api_error(r.status, raw, what)
        raise AssertionError("unreachable")

    # --- read --------------------------------------------------------------------------------
    def _pages(self, path: str, what: str, query: dict[str, str] | None,
               keep: Callable[[Json], _Kept | None]) -> Iterator[_Kept]:
        """Every item of a LIST, page by page (`limit`/`continue`), each decoded on its own as the
        page streams in and passed through `keep` (None drops it): a page is never held decoded."""
        q = dict(query or {})
        q["limit"] = str(self.opts.list_page_size)
        while True:
            kept: list[_Kept] = []

            def read(r: Any, kept: list[_Kept] = kept) -> str:
                kept.clear()  # a page read again after a lost connection starts over
                page = StreamedList(r.response.stream(1 << 20))
                for item in page.items():
                    if (k := keep(item)) is not None:
                        kept.append(k)
                return str((page.metadata.get("metadata") or {}).get("continue") or "")

            try:
                cont = self._send("GET", path, q, None, "application/json", what, False, read)
            except ValueError as e:  # not the JSON a LIST answers
                raise ClusterError(f"{what}: the API server's answer is not a list ({e})") from None
            yield from kept
            if not cont:
                return
            q["continue"] = cont

    def _list(self, path: str, what: str, query: dict[str, str] | None = None) -> list[Json]:
        return list(self._pages(path, what, query, lambda item: item))

    def read_live(self, claims: Iterable[str] = (), *, gpu_check: bool = True,
                  wanted: Collection[ObjectId] | None = None, instances: Collection[str] | None = None) -> LiveState:
        """Everything the plan needs, one paged LIST per kind; any failed read aborts (never 'nothing exists').

        Kept as each object is decoded: ours (our managed-by label) whole, except other managers'
        managedFields entries (the plan reads only ours) and the status; another's object only when it has the name
        of an object in `wanted` (the desired objects: a conflict, or an object to adopt, which the
        plan diffs and the adoption replaces whole), and every one when `wanted` is None. So memory
        grows with the workspaces we manage, not with whatever else the namespace holds.

        `instances` (`reconcile --since`): only those workspaces' objects, one LIST per kind by
        label, then a GET of each wanted object the LIST did not return (another's, of that name):
        a few requests however many workspaces the namespace holds."""
        ns = self.namespace
        objects = CompactObjects()
        for kind, (prefix, plural) in KINDS.items():
            if instances is not None and not instances:
                break
            keep = partial(_keep_compact, kind, ns, wanted)
            query = None if instances is None else {
                "labelSelector": f"{LABEL_MANAGED_BY}={MANAGED_BY},{instances_selector(instances)}"}
            for entry in self._pages(f"{prefix}/namespaces/{ns}/{plural}", f"list {plural} in namespace {ns}",
                                     query, keep):
                objects.put(entry)
        if instances is not None:
            for oid, obj in self._get_each(sorted(set(wanted or ()) - set(objects))).items():
                objects.add(oid, obj)
        pvcs: dict[str, str] | None = {}
        if claims:
            try:
                found = self._pages(f"/api/v1/namespaces/{ns}/persistentvolumeclaims", f"list PVCs in {ns}", None,
                                    lambda p: {"n": p["metadata"]["name"],
                                               "p": (p.get("status") or {}).get("phase", "Pending")})
                pvcs = {p["n"]: p["p"] for p in found}
            except ClusterError as e:
                if e.status != 403:
                    raise
                pvcs = None
        node_gpus: list[int] | None = []
        node_labels: list[dict[str, str]] | None = None
        if gpu_check:
            try:
                nodes = list(self._pages("/api/v1/nodes", "list nodes", None, lambda n: (
                    int((n.get("status") or {}).get("allocatable", {}).get("nvidia.com/gpu", "0")),
                    {str(k): str(v) for k, v in ((n.get("metadata") or {}).get("labels") or {}).items()})))
                node_gpus = [gpus for gpus, _ in nodes]
                node_labels = [labels for _, labels in nodes]
            except ClusterError as e:
                if e.status != 403:
                    raise
                node_gpus = node_labels = None
        return LiveState(objects=objects, pvcs=pvcs, node_gpus=node_gpus, node_labels=node_labels)

    def _get_each(self, ids: list[ObjectId]) -> dict[ObjectId, Json]:
        """The objects of `ids` that exist (a GET each, `opts.workers` at a time)."""
        def get(oid: ObjectId) -> tuple[ObjectId, Json | None]:
            try:
                found = self.request("GET", self._object_path(oid.kind, oid.name), what=f"get {oid}")
            except ClusterError as e:
                if e.status == 404:
                    return oid, None
                raise
            return oid, _keep_live(oid.kind, oid.namespace, None, found)

        with ThreadPoolExecutor(max_workers=self.opts.workers) as pool:
            return {oid: obj for oid, obj in pool.map(get, ids) if obj is not None}

    # --- write -------------------------------------------------------------------------------
    def _object_path(self, kind: str, name: str) -> str:
        prefix, plural = KINDS[kind]
        return f"{prefix}/namespaces/{self.namespace}/{plural}/{name}"

    def server_side_apply(self, obj: Json) -> Json:
        """Server-side apply of a whole object, taking back fields others changed (force)."""
        oid = ObjectId(obj["kind"], self.namespace, obj["metadata"]["name"])
        return self.request("PATCH", self._object_path(oid.kind, oid.name),
                            query={"fieldManager": FIELD_MANAGER, "force": "true"}, body=obj,
                            content_type="application/apply-patch+yaml", what=f"{oid} apply failed", write=True)

    def replace(self, obj: Json, live: Json) -> Json:
        """PUT the desired object over a live one (adoption), guarded by the live resourceVersion."""
        oid = ObjectId(obj["kind"], self.namespace, obj["metadata"]["name"])
        body = {**obj, "metadata": {**obj["metadata"], "resourceVersion": live["metadata"]["resourceVersion"]}}
        return self.request("PUT", self._object_path(oid.kind, oid.name), query={"fieldManager": FIELD_MANAGER},
                            body=body, what=f"{oid} adopt failed", write=True)

    def delete(self, oid: ObjectId, uid: str | None) -> None:
        """Delete one object, only if it is still the one we planned to delete (uid precondition)."""
        body: Json = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self.request("DELETE", self._object_path(oid.kind, oid.name), body=body, what=f"{oid} delete failed",
                         write=True)
        except ClusterError as e:
            if e.status != 404:
                raise

    def _write(self, change: ObjectChange, project: str) -> None:
        """One create or update. Its bodies are decoded only now: a plan keeps them as compact JSON, and
        15,000 decoded ones waiting for a worker are most of the memory of creating 5,000 workspaces."""
        desired, live = change.desired, change.live
        if desired is None:
            return
        if live is not None and not is_ours(live, project):
            # --adopt: replace the foreign object whole first, so none of its fields
            # (another manager's ports, say) survive next to ours.
            self.replace(desired, live)
        self.server_side_apply(desired)

    def apply(self, plan: Plan) -> dict[str, WorkspaceResult]:
        """Write every change of the plan (unchanged objects are never written); per-object errors are kept.

        An API server that cannot be reached stops the whole apply with one ClusterError."""
        results = {w.name: WorkspaceResult(ready=None, reason="", errors=[]) for w in plan.workspaces}
        jobs: list[tuple[str, Callable[[], object]]] = []
        for w in plan.workspaces:
            if w.action in (Action.UNCHANGED, Action.CONFLICT):
                continue
            changes = sorted(w.objects, key=lambda c: (DELETE_ORDER if w.action == Action.DELETE
                                                        else APPLY_ORDER).index(c.id.kind))
            ops: list[Callable[[], object]] = []
            for c in changes:
                if c.action in (Action.CREATE, Action.UPDATE):
                    ops.append(partial(self._write, c, plan.project))
                elif c.action == Action.DELETE:
                    ops.append(partial(self.delete, c.id, (c.live or {}).get("metadata", {}).get("uid")))
            jobs.append((w.name, partial(_run_all, ops)))

        fenced: list[LockError] = []

        def run(job: tuple[str, Callable[[], object]]) -> tuple[str, str | None]:
            try:
                job[1]()
                return job[0], None
            except ClusterError as e:
                return job[0], str(e)
            except LockError as e:
                fenced.append(e)
                return job[0], None

        with ThreadPoolExecutor(max_workers=self.opts.workers) as pool:
            for name, err in pool.map(run, jobs):
                if err:
                    results[name].errors.append(err)
        if self._unreachable is not None:  # one reason, not one line per workspace
            raise ClusterError(f"apply stopped: {self._unreachable} (the next run writes what is missing)")
        if fenced:  # the Lease may be another run's now
            raise fenced[0]
        return results

    # --- lock --------------------------------------------------------------------------------
    def acquire_lease(self, opts: ApplyOptions) -> Lease:
        """Take the `workspace-reconciler` Lease, waiting up to opts.timeout for another holder."""
        lease = Lease(self, opts)
        lease.acquire()
        return lease

    # --- wait and status ---------------------------------------------------------------------
    def _managed_selector(self, project: str) -> dict[str, str]:
        return {"labelSelector": managed_selector(project)}

    def wait_ready(self, project: str, names: list[str], timeout: float,
                   progress: Callable[[list[str], list[str]], None] | None = None) -> dict[str, WorkspaceResult]:
        """Wait until each named workspace's Deployment is Available; say why for those that are not."""
        deadline = time.monotonic() + timeout
        pending = set(names)
        ready: list[str] = []
        selector = self._managed_selector(project)
        interval = 1.0
        if len(pending) <= WAIT_BY_NAME:  # a pull request's few workspaces: not every Deployment, every second
            selector = {"labelSelector": f"{selector['labelSelector']},{instances_selector(pending)}"}
            interval = 0.2  # a small LIST: look often at first (a pod is often ready within a second or two)
        while True:
            deps = {d["metadata"]["name"]: d for d in self._list(
                f"/apis/apps/v1/namespaces/{self.namespace}/deployments", f"list deployments in {self.namespace}",
                selector)}
            for n in sorted(pending):
                if n in deps and deployment_ready(deps[n]):
                    pending.discard(n)
                    ready.append(n)
            if progress:
                progress(sorted(ready), sorted(pending))
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            interval = min(1.0, interval * 1.5)
        results = {n: WorkspaceResult(ready=True, reason="ready", errors=[]) for n in ready}
        if pending:
            reasons = self._not_ready_reasons(project, deps, pending)
            for n in pending:
                results[n] = WorkspaceResult(ready=False, reason=reasons[n], errors=[])
        return results

    def _pods(self, project: str) -> list[Json]:
        return self._list(f"/api/v1/namespaces/{self.namespace}/pods", f"list pods in {self.namespace}",
                          self._managed_selector(project))

    def _not_ready_reasons(self, project: str, deps: dict[str, Json], names: Iterable[str]) -> dict[str, str]:
        try:
            pods = self._pods(project)
        except ClusterError as e:
            return {n: f"not ready ({e})" for n in names}
        return {n: why_not_ready(deps.get(n), [p for p in pods
                                                 if p["metadata"].get("labels", {}).get(LABEL_INSTANCE) == n])
                for n in names}

    def status(self, project: str, desired: list[DesiredWorkspace]) -> list[StatusRow]:
        """Every workspace of the repo and of the cluster: ready / not ready / stopped / missing / orphaned."""
        deps = {d["metadata"]["name"]: d for d in self._list(
            f"/apis/apps/v1/namespaces/{self.namespace}/deployments", f"list deployments in {self.namespace}",
            self._managed_selector(project))}
        not_ready = unready_names(desired, deps)
        reasons = self._not_ready_reasons(project, deps, not_ready) if not_ready else {}
        rows = status_rows(desired, deps, reasons, dt.datetime.now(dt.UTC))
        with_extensions = [w.name for w in desired if w.extensions and w.state == "running" and w.name in deps]
        if not with_extensions:
            return rows
        notes = extension_notes(with_extensions, self._pods(project))  # which VS Code extensions failed, and why
        return [dataclasses.replace(r, reason="; ".join(filter(None, (r.reason, notes.get(r.name, "")))))
                for r in rows]

    # --- activity ----------------------------------------------------------------------------
    def activity(self, project: str, desired: list[DesiredWorkspace]) -> dict[str, Activity]:
        """The last user activity of each running workspace, asked of its IDE through the Service.

        GET through the API server's service proxy (RBAC: `get` on `services/proxy`), to the
        endpoint each IDE serves without the user's credentials: code-server's `/healthz`
        (`lastHeartbeat`, beaten by every request and every open connection, not by /healthz
        itself) and JupyterLab's `/metrics` (`jupyter_server_last_activity_timestamp_seconds`,
        unauthenticated because the render sets `--ServerApp.authenticate_prometheus=False`). A
        server that has not been used since it started reports its start (from the pod)."""
        deps = {d["metadata"]["name"]: d for d in self._list(
            f"/apis/apps/v1/namespaces/{self.namespace}/deployments", f"list deployments in {self.namespace}",
            self._managed_selector(project))}
        running = [w for w in desired if w.state == "running" and w.name in deps
                   and ((deps[w.name].get("status") or {}).get("readyReplicas") or 0) > 0]
        if not running:
            return {}
        started = self._started(project)
        with ThreadPoolExecutor(max_workers=self.opts.workers) as pool:
            found = list(pool.map(lambda w: self._activity(w, started.get(w.name)), running))
        return {a.name: a for a in found}

    def _started(self, project: str) -> dict[str, dt.datetime]:
        """When each workspace's running server container started (its newest pod)."""
        out: dict[str, dt.datetime] = {}
        try:
            pods = self._pods(project)
        except ClusterError as e:
            if e.status != 403:
                raise
            return out  # an identity that may not list pods: the IDE's own answer only
        for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", "")):
            name = pod["metadata"].get("labels", {}).get(LABEL_INSTANCE)
            for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                at = ((cs.get("state") or {}).get("running") or {}).get("startedAt")
                if name and cs.get("name") == CONTAINER_NAME and at:
                    out[name] = parse_time(at)
        return out

    def _activity(self, w: DesiredWorkspace, started: dt.datetime | None) -> Activity:
        path = "healthz" if w.tool == "vscode" else "metrics"
        source = f"{'code-server' if w.tool == 'vscode' else 'jupyter_server'} /{path}"
        try:
            raw = self.proxy_get(w.name, PORT_NAME, path)
            last = (code_server_heartbeat(raw) if w.tool == "vscode" else jupyter_last_activity(raw))
        except ClusterError as e:
            return Activity(w.name, None, source, _short(e))
        except ValueError as e:
            return Activity(w.name, None, source, f"unexpected answer from {source}: {e}")
        if last is None or (started is not None and last < started):
            last = started  # not used since it started: idle since then
        return Activity(w.name, last, source, "" if last is not None else "no activity and no start time")

    def proxy_get(self, service: str, port: str, path: str) -> bytes:
        """GET `path` of a Service's port through the API server's service proxy; the body as bytes."""
        what = f"Service/{self.namespace}/{service} GET /{path}"
        url_path = f"/api/v1/namespaces/{self.namespace}/services/{service}:{port}/proxy/{path}"
        self.requests += 1
        try:
            verb, url, headers, payload, _ = self._api.param_serialize(
                "GET", url_path, header_params={"Accept": "*/*"}, auth_settings=["BearerToken"])
            r = self._api.call_api(verb, url, header_params=headers, body=payload, _request_timeout=self._timeout)
            raw: bytes = r.read()  # type: ignore[no-untyped-call]
        except (urllib3.exceptions.HTTPError, OSError, ApiException) as e:
            raise ClusterError(f"{what}: cannot reach the API server at {self._host}: {_short(e)}") from None
        if not 200 <= r.status < 300:
            raise _api_error(r.status, raw, what)
        return raw


# --- helpers -------------------------------------------------------------------------------------

def _keep_live(kind: str, namespace: str, wanted: Collection[ObjectId] | None, item: Json) -> Json | None:
    """What `read_live` keeps of one listed object (see there); None drops it."""
    item.setdefault("kind", kind)
    meta = item.get("metadata") or {}
    if (meta.get("labels") or {}).get(LABEL_MANAGED_BY) == MANAGED_BY:
        # Ours: the plan reads neither the status nor other managers' entries (peak memory at 5,000:
        # bench/RUN_NOTES.md).
        item.pop("status", None)
        fields = meta.get("managedFields")
        if fields:
            meta["managedFields"] = [f for f in fields if f.get("manager") == FIELD_MANAGER]
        return item
    if wanted is None or ObjectId(kind, namespace, str(meta.get("name", ""))) in wanted:
        return item
    return None


def _keep_compact(kind: str, namespace: str, wanted: Collection[ObjectId] | None, item: Json) -> CompactEntry | None:
    """`_keep_live`, kept as compact JSON right away: a page holds no decoded object it keeps."""
    kept = _keep_live(kind, namespace, wanted, item)
    return None if kept is None else CompactObjects.entry(ObjectId(kind, namespace, kept["metadata"]["name"]), kept)


def _run_all(ops: list[Callable[[], object]]) -> None:
    for op in ops:
        op()


def _api_client(opts: ClusterOptions) -> client.ApiClient:
    """An ApiClient from the kubeconfig (or in-cluster config), configured before it is built:
    a pool sized for the write workers, and no urllib3 retries (ours count and back off)."""
    cfg = client.Configuration()
    try:
        if opts.kubeconfig or os.environ.get("KUBECONFIG") or os.path.exists(os.path.expanduser("~/.kube/config")):
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=opts.kubeconfig, context=opts.context, client_configuration=cfg)
        else:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError, ValueError, TypeError) as e:
        where = opts.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise ClusterError(f"cannot load kubeconfig {where}"
                           f"{' context ' + opts.context if opts.context else ''}: {_short(e)}") from None
    cfg.connection_pool_maxsize = max(opts.workers * 2, 10)
    cfg.retries = urllib3.util.Retry(total=0, connect=0, read=0, redirect=0)
    api = client.ApiClient(cfg)
    api.user_agent = "workspace-reconciler/0.1"
    return api


def _short(e: object) -> str:
    """A transport failure in a few words, from the exception types urllib3 wraps (not their text)."""
    chain: list[BaseException] = []
    cause: object = e
    while isinstance(cause, BaseException) and cause not in chain:
        chain.append(cause)
        cause = getattr(cause, "reason", None) or cause.__cause__ or cause.__context__
    if any(isinstance(c, ConnectionRefusedError) for c in chain):
        return "connection refused"
    # urllib3's NewConnectionError is a ConnectTimeoutError too: refused is checked first.
    if any(isinstance(c, TimeoutError | urllib3.exceptions.ReadTimeoutError) for c in chain) or (
        any(isinstance(c, urllib3.exceptions.ConnectTimeoutError) for c in chain)
        and not any(isinstance(c, urllib3.exceptions.NewConnectionError) for c in chain)
    ):
        return "timed out"
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:300]


def _api_error(status: int, raw: bytes, what: str) -> ClusterError:
    try:
        msg = json.loads(raw).get("message", "")
    except (ValueError, AttributeError):
        msg = raw[:200].decode(errors="replace")
    reason = {401: "unauthorized (check the kubeconfig's credentials)",
              403: "forbidden", 404: "not found", 409: "conflict", 422: "invalid"}.get(status, "failed")
    return ClusterError(f"{what}: {reason} ({status}): {msg}".rstrip(": "), status)
