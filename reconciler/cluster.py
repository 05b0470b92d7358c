"""The one module that talks to Kubernetes.

Reads live state with one LIST per kind, writes with server-side apply (field manager
`workspace-reconciler`, forced), deletes with a uid precondition, serializes writers with a
Lease, waits for readiness and reports status. Every API failure becomes a ClusterError or
LockError here, once, with the object's identity first.

Requests go through the official client's connection pool and authentication, but bodies are
read with `json.loads` instead of the typed models (much faster on large LISTs) and writes are
raw `application/apply-patch+yaml` PATCHes; no API discovery is run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from reconciler.errors import ClusterError, LockError
from reconciler.plan import Action, LiveState, ObjectId, Plan, StatusRow, StatusState, WorkspaceResult, is_ours
from reconciler.render import (
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_PART_OF,
    MANAGED_BY,
    DesiredWorkspace,
)

FIELD_MANAGER = MANAGED_BY
LEASE_NAME = "workspace-reconciler"
APPLY_ORDER = ("Deployment", "Service", "Ingress")
DELETE_ORDER = ("Ingress", "Service", "Deployment")
KINDS: dict[str, tuple[str, str]] = {
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Service": ("/api/v1", "services"),
    "Ingress": ("/apis/networking.k8s.io/v1", "ingresses"),
}
RETRYABLE = {429, 500, 502, 503, 504}
Json = dict[str, Any]


@dataclass
class ClusterOptions:
    """How to reach the cluster."""

    kubeconfig: str | None = None
    context: str | None = None
    request_timeout: float = 30.0
    retries: int = 3
    workers: int = 8


@dataclass
class ApplyOptions:
    """How to write: lock wait, lease length, who we are."""

    timeout: float = 300.0
    lease_seconds: int = field(default_factory=lambda: int(os.environ.get("WORKSPACE_RECONCILER_LEASE_SECONDS", "60")))
    holder: str = field(default_factory=lambda: default_holder())


def default_holder() -> str:
    """Who holds the Lease: the CI run when there is one, else user@host, plus the pid."""
    run = os.environ.get("GITHUB_RUN_ID")
    who = f"github-actions run {run}" if run else f"{getpass.getuser()}@{socket.gethostname()}"
    return f"{who} (pid {os.getpid()})"


class Cluster:
    """A connection to one namespace of one cluster."""

    def __init__(self, namespace: str, opts: ClusterOptions | None = None) -> None:
        self.namespace = namespace
        self.opts = opts or ClusterOptions()
        self._api = _api_client(self.opts)
        self._host = self._api.configuration.host.rstrip("/")
        # The client's own pool (TLS, client certs, proxy) without its body handling: we send
        # exact bytes (apply-patch+yaml) and read JSON ourselves.
        self._pool = self._api.rest_client.pool_manager
        self._timeout = urllib3.Timeout(connect=5, read=self.opts.request_timeout)
        self.requests = 0
        # Set once a request found the API server unreachable after all its retries: every later
        # call fails at once, so a run whose apiserver died ends in seconds, not retries x objects.
        self._unreachable: str | None = None

    # --- transport ---------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        cfg = self._api.configuration
        if cfg.refresh_api_key_hook is not None:
            cfg.refresh_api_key_hook(cfg)
        headers = {"Accept": "application/json", "User-Agent": "workspace-reconciler/0.1"}
        for auth in cfg.auth_settings().values():
            if auth.get("in") == "header" and auth.get("value"):
                headers[auth["key"]] = auth["value"]
        return headers

    def request(self, method: str, path: str, *, query: dict[str, str] | None = None, body: Any = None,
                content_type: str = "application/json", what: str = "") -> Json:
        """One API call; retries transient failures (429, 5xx, connection errors) with backoff."""
        url = self._host + path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = self._headers()
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = content_type
        elif method in ("POST", "PUT", "PATCH", "DELETE"):
            data = b"{}" if method == "DELETE" else b""
            headers["Content-Type"] = content_type
        what = what or f"{method} {path}"
        delay = 0.5
        for attempt in range(self.opts.retries + 1):
            last = attempt == self.opts.retries
            if self._unreachable is not None:
                raise ClusterError(f"{what}: {self._unreachable}")
            self.requests += 1
            try:
                r = self._pool.request(method, url, body=data, headers=headers, timeout=self._timeout)
                raw = r.data
            except (urllib3.exceptions.HTTPError, OSError) as e:
                if last:
                    self._unreachable = f"cannot reach the API server at {self._host}: {_short(e)}"
                    raise ClusterError(f"{what}: {self._unreachable}") from None
                time.sleep(delay)
                delay *= 2
                continue
            if 200 <= r.status < 300:
                return json.loads(raw) if raw else {}
            if r.status in RETRYABLE and not last:
                retry_after = r.headers.get("Retry-After")
                time.sleep(min(float(retry_after), 10.0) if retry_after and retry_after.isdigit() else delay)
                delay *= 2
                continue
            raise _api_error(r.status, raw, what)
        raise AssertionError("unreachable")

    # --- read --------------------------------------------------------------------------------
    def _list(self, path: str, what: str, query: dict[str, str] | None = None) -> list[Json]:
        items: list[Json] = []
        q = dict(query or {})
        q["limit"] = "2000"
        while True:
            page = self.request("GET", path, query=q, what=what)
            items.extend(page.get("items") or [])
            cont = (page.get("metadata") or {}).get("continue")
            if not cont:
                return items
            q["continue"] = cont

    def read_live(self, claims: Iterable[str] = (), *, gpu_check: bool = True) -> LiveState:
        """Everything the plan needs, one LIST per kind; any failed read aborts (never 'nothing exists')."""
        ns = self.namespace
        objects: dict[ObjectId, Json] = {}
        for kind, (prefix, plural) in KINDS.items():
            for item in self._list(f"{prefix}/namespaces/{ns}/{plural}", f"list {plural} in namespace {ns}"):
                item.setdefault("kind", kind)
                objects[ObjectId(kind, ns, item["metadata"]["name"])] = item
        pvcs: dict[str, str] | None = {}
        if claims:
            try:
                found = self._list(f"/api/v1/namespaces/{ns}/persistentvolumeclaims", f"list PVCs in {ns}")
                pvcs = {p["metadata"]["name"]: (p.get("status") or {}).get("phase", "Pending") for p in found}
            except ClusterError as e:
                if e.status != 403:
                    raise
                pvcs = None
        node_gpus: list[int] | None = []
        if gpu_check:
            try:
                nodes = self._list("/api/v1/nodes", "list nodes")
                node_gpus = [int((n.get("status") or {}).get("allocatable", {}).get("nvidia.com/gpu", "0"))
                             for n in nodes]
            except ClusterError as e:
                if e.status != 403:
                    raise
                node_gpus = None
        return LiveState(objects=objects, pvcs=pvcs, node_gpus=node_gpus)

    # --- write -------------------------------------------------------------------------------
    def _object_path(self, kind: str, name: str) -> str:
        prefix, plural = KINDS[kind]
        return f"{prefix}/namespaces/{self.namespace}/{plural}/{name}"

    def server_side_apply(self, obj: Json) -> Json:
        """Server-side apply of a whole object, taking back fields others changed (force)."""
        oid = ObjectId(obj["kind"], self.namespace, obj["metadata"]["name"])
        return self.request("PATCH", self._object_path(oid.kind, oid.name),
                            query={"fieldManager": FIELD_MANAGER, "force": "true"}, body=obj,
                            content_type="application/apply-patch+yaml", what=f"{oid} apply failed")

    def replace(self, obj: Json, live: Json) -> Json:
        """PUT the desired object over a live one (adoption), guarded by the live resourceVersion."""
        oid = ObjectId(obj["kind"], self.namespace, obj["metadata"]["name"])
        body = {**obj, "metadata": {**obj["metadata"], "resourceVersion": live["metadata"]["resourceVersion"]}}
        return self.request("PUT", self._object_path(oid.kind, oid.name), query={"fieldManager": FIELD_MANAGER},
                            body=body, what=f"{oid} adopt failed")

    def delete(self, oid: ObjectId, uid: str | None) -> None:
        """Delete one object, only if it is still the one we planned to delete (uid precondition)."""
        body: Json = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self.request("DELETE", self._object_path(oid.kind, oid.name), body=body, what=f"{oid} delete failed")
        except ClusterError as e:
            if e.status != 404:
                raise

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
                if c.action in (Action.CREATE, Action.UPDATE) and c.desired is not None:
                    if c.live is not None and not is_ours(c.live, plan.project):
                        # --adopt: replace the foreign object whole first, so none of its fields
                        # (another manager's ports, say) survive next to ours.
                        ops.append(partial(self.replace, c.desired, c.live))
                    ops.append(partial(self.server_side_apply, c.desired))
                elif c.action == Action.DELETE:
                    ops.append(partial(self.delete, c.id, (c.live or {}).get("metadata", {}).get("uid")))
            jobs.append((w.name, partial(_run_all, ops)))

        def run(job: tuple[str, Callable[[], object]]) -> tuple[str, str | None]:
            try:
                job[1]()
                return job[0], None
            except ClusterError as e:
                return job[0], str(e)

        with ThreadPoolExecutor(max_workers=self.opts.workers) as pool:
            for name, err in pool.map(run, jobs):
                if err:
                    results[name].errors.append(err)
        if self._unreachable is not None:  # one reason, not one line per workspace
            raise ClusterError(f"apply stopped: {self._unreachable} (the next run writes what is missing)")
        return results

    # --- lock --------------------------------------------------------------------------------
    def acquire_lease(self, opts: ApplyOptions) -> Lease:
        """Take the `workspace-reconciler` Lease, waiting up to opts.timeout for another holder."""
        lease = Lease(self, opts)
        lease.acquire()
        return lease

    # --- wait and status ---------------------------------------------------------------------
    def _managed_selector(self, project: str) -> dict[str, str]:
        return {"labelSelector": f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_PART_OF}={project}"}

    def wait_ready(self, project: str, names: list[str], timeout: float,
                   progress: Callable[[list[str], list[str]], None] | None = None) -> dict[str, WorkspaceResult]:
        """Wait until each named workspace's Deployment is Available; say why for those that are not."""
        deadline = time.monotonic() + timeout
        pending = set(names)
        ready: list[str] = []
        while True:
            deps = {d["metadata"]["name"]: d for d in self._list(
                f"/apis/apps/v1/namespaces/{self.namespace}/deployments", f"list deployments in {self.namespace}",
                self._managed_selector(project))}
            for n in sorted(pending):
                if n in deps and _deployment_ready(deps[n]):
                    pending.discard(n)
                    ready.append(n)
            if progress:
                progress(sorted(ready), sorted(pending))
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
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
        return {n: _why_not_ready(deps.get(n), [p for p in pods
                                                 if p["metadata"].get("labels", {}).get(LABEL_INSTANCE) == n])
                for n in names}

    def status(self, project: str, desired: list[DesiredWorkspace]) -> list[StatusRow]:
        """Every workspace of the repo and of the cluster: ready / not ready / stopped / missing / orphaned."""
        deps = {d["metadata"]["name"]: d for d in self._list(
            f"/apis/apps/v1/namespaces/{self.namespace}/deployments", f"list deployments in {self.namespace}",
            self._managed_selector(project))}
        want = {w.name: w for w in desired}
        not_ready = [n for n in want if n in deps and not _deployment_ready(deps[n])
                     and deps[n]["spec"].get("replicas", 1) != 0]
        reasons = self._not_ready_reasons(project, deps, not_ready) if not_ready else {}
        rows: list[StatusRow] = []
        state: StatusState
        for name in sorted(set(want) | set(deps)):
            w, d = want.get(name), deps.get(name)
            owner = w.owner if w else ""
            age = _age(d["metadata"].get("creationTimestamp")) if d else ""
            if w is None:
                state, reason = "orphaned", "in the cluster but not in the repo"
            elif d is None:
                state, reason = "missing", "in the repo but not in the cluster (run reconcile)"
            elif d["spec"].get("replicas", 1) == 0:
                state, reason = "stopped", "scaled to zero; data kept"
            elif _deployment_ready(d):
                state, reason = "ready", ""
            else:
                state, reason = "not ready", reasons.get(name, "")
            rows.append(StatusRow(name=name, owner=owner, state=state, url=w.url if w else "",
                                  credential_hint=w.credential_hint if w else "", age=age, reason=reason))
        return rows


class Lease:
    """The `workspace-reconciler` coordination.k8s.io/v1 Lease: one writer at a time, renewed while held."""

    def __init__(self, cluster: Cluster, opts: ApplyOptions) -> None:
        self.cluster = cluster
        self.opts = opts
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{cluster.namespace}/leases"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._obj: Json | None = None

    def _body(self, rv: str | None, acquire_time: str | None = None) -> Json:
        now = _now()
        meta: Json = {"name": LEASE_NAME, "namespace": self.cluster.namespace,
                      "labels": {LABEL_MANAGED_BY: MANAGED_BY}}
        if rv:
            meta["resourceVersion"] = rv
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": {"holderIdentity": self.opts.holder, "leaseDurationSeconds": self.opts.lease_seconds,
                         "acquireTime": acquire_time or now, "renewTime": now}}

    def acquire(self) -> None:
        c = self.cluster
        deadline = time.monotonic() + self.opts.timeout
        holder = ""
        while True:
            try:
                cur = c.request("GET", f"{self.path}/{LEASE_NAME}", what=f"Lease/{c.namespace}/{LEASE_NAME}")
            except ClusterError as e:
                if e.status != 404:
                    raise
                cur = None
            try:
                if cur is None:
                    self._obj = c.request("POST", self.path, body=self._body(None),
                                          what=f"Lease/{c.namespace}/{LEASE_NAME} create failed")
                    break
                spec = cur.get("spec") or {}
                holder = spec.get("holderIdentity") or ""
                if not holder or holder == self.opts.holder or _expired(spec):
                    self._obj = c.request("PUT", f"{self.path}/{LEASE_NAME}",
                                          body=self._body(cur["metadata"]["resourceVersion"]),
                                          what=f"Lease/{c.namespace}/{LEASE_NAME} update failed")
                    break
            except ClusterError as e:
                if e.status != 409:  # somebody else got there first: look again
                    raise
            if time.monotonic() >= deadline:
                raise LockError(f"Lease/{c.namespace}/{LEASE_NAME} is held by {holder!r}; gave up after "
                                f"{self.opts.timeout:g}s (it expires {self.opts.lease_seconds}s after its last "
                                "renewal if that run died)")
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        self._thread = threading.Thread(target=self._renew, name="lease-renew", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        interval = max(1.0, self.opts.lease_seconds / 3)
        while not self._stop.wait(interval):
            try:
                assert self._obj is not None
                body = self._body(self._obj["metadata"]["resourceVersion"], self._obj["spec"].get("acquireTime"))
                self._obj = self.cluster.request("PUT", f"{self.path}/{LEASE_NAME}", body=body)
            except ClusterError:
                continue  # the next renewal tries again; an expired lease is only ever taken after expiry

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if self._obj is None:
            return
        with contextlib.suppress(ClusterError):  # if this fails, the lease expires on its own
            self.cluster.request("DELETE", f"{self.path}/{LEASE_NAME}",
                                 body={"preconditions": {"uid": self._obj["metadata"]["uid"]}})
        self._obj = None

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# --- helpers -------------------------------------------------------------------------------------

def _run_all(ops: list[Callable[[], object]]) -> None:
    for op in ops:
        op()


def _api_client(opts: ClusterOptions) -> client.ApiClient:
    try:
        if opts.kubeconfig or os.environ.get("KUBECONFIG") or os.path.exists(os.path.expanduser("~/.kube/config")):
            api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=opts.kubeconfig, context=opts.context)
        else:
            cfg = client.Configuration()
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            api = client.ApiClient(cfg)
    except (ConfigException, OSError, ValueError, TypeError) as e:
        where = opts.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise ClusterError(f"cannot load kubeconfig {where}"
                           f"{' context ' + opts.context if opts.context else ''}: {_short(e)}") from None
    pool = max(opts.workers * 2, 10)
    api.configuration.connection_pool_maxsize = pool
    api.configuration.retries = urllib3.util.Retry(total=0, connect=0, read=0, redirect=0)
    api.rest_client = type(api.rest_client)(api.configuration)
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


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def _expired(spec: Json) -> bool:
    renew = spec.get("renewTime") or spec.get("acquireTime")
    if not renew:
        return True
    until = _parse_time(renew) + dt.timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0))
    return dt.datetime.now(dt.UTC) >= until


def _age(ts: str | None) -> str:
    if not ts:
        return ""
    secs = int((dt.datetime.now(dt.UTC) - _parse_time(ts)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{max(secs, 0)}s"


def _deployment_ready(d: Json) -> bool:
    spec, status = d.get("spec") or {}, d.get("status") or {}
    want = spec.get("replicas", 1)
    if (status.get("observedGeneration") or 0) < (d["metadata"].get("generation") or 0):
        return False
    if want == 0:
        return True
    return bool((status.get("updatedReplicas") or 0) >= want and (status.get("availableReplicas") or 0) >= want
                and (status.get("replicas") or 0) == want)


def _why_not_ready(dep: Json | None, pods: list[Json]) -> str:
    if dep is None:
        return "Deployment not found"
    for cond in (dep.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            return f"ReplicaFailure: {cond.get('message', '')}"
    if not pods:
        return "no pod yet (the ReplicaSet has not created one)"
    pod = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""))[-1]
    status = pod.get("status") or {}
    phase = status.get("phase", "Pending")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return f"{phase}: {cond.get('reason', 'Unschedulable')}: {cond.get('message', '')}".strip()
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            why = f"{waiting.get('reason', 'waiting')}: {waiting.get('message', '')}".rstrip(": ")
            return f"{phase}: container {cs['name']} {why}"
    return f"{phase}: pod {pod['metadata']['name']} is not ready yet"
