"""The Run:ai backend: each workspace file is a Run:ai workspace, made through Run:ai's REST API (runapy).

It brings what `run.Backend` asks of a backend; the calls go through `runai_client` (the only module that
imports runapy and speaks HTTP to Run:ai), the objects are `runai_spec`'s:

- **render** (`runai_spec.render_runai`, pure): per workspace one object of kind `RunaiWorkspace`, whose
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
- **plan notes** (`annotate`, pure; `RunaiBackend.annotate`): a changed spec is a *recreate* (no in-place update
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
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
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
from reconciler.errors import LockError
from reconciler.lease import ApplyOptions, default_holder
from reconciler.plan import data_kept_note
from reconciler.render import DesiredWorkspace
from reconciler.runai_client import RunaiApi, RunaiError, RunaiOptions
from reconciler.runai_spec import ANNOTATION_SPEC_HASH, KIND, live_object, powershell_hint

ANNOTATION_LOCK_HOLDER = "workspace-gitops/lock-holder"
ANNOTATION_LOCK_SECONDS = "workspace-gitops/lock-seconds"
LOCK_NAME = "workspace-reconciler-lock"
"""The lock: a suspended workspace of this name in the project (names are unique per project)."""
LOCK_IMAGE = "registry.k8s.io/pause:3.10"


# --------------------------------------------------------------------------------------------
# plan notes (pure)


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
        notes = [data_kept_note(kept)]
        return dataclasses.replace(w, url=url, kept_pvcs=kept, notes=notes)
    if w.action in (Action.CREATE, Action.UPDATE) and " | grep " in w.credential_hint:
        notes.append(f"on Windows (PowerShell): {powershell_hint(w.credential_hint)}")
    notes += [n for n in w.notes if n not in notes]  # annotating twice (after the wait) adds nothing
    return dataclasses.replace(w, url=url, restarts=restarts or w.restarts, notes=notes)


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

    def read_live(self, claims: Iterable[str] = (), *, wanted: Collection[Any] | None = None,
                  instances: Collection[str] | None = None) -> LiveState:
        """One paged listing, then a GET of each workspace in it (annotations are only there), of
        those in ``instances`` only when given (``--since``).

        ``wanted`` (the names the plan may create) changes nothing here: the listing is small."""
        from reconciler.changeset import ObjectId

        objects: dict[ObjectId, dict[str, Any]] = {}
        for workload in self.api.workloads():
            name = str(workload.get("name", ""))
            if name == LOCK_NAME or (instances is not None and name not in instances):
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
