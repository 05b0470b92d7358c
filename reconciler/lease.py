"""The `workspace-reconciler` Lease: one writer at a time per namespace (I/O, through the cluster module's requests)."""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from reconciler.errors import ClusterError, LockError
from reconciler.readiness import parse_time
from reconciler.render import LABEL_MANAGED_BY, MANAGED_BY

LEASE_NAME = "workspace-reconciler"
Json = dict[str, Any]


class LeaseApi(Protocol):
    """What the Lease needs of a cluster connection (`cluster.Cluster`)."""

    namespace: str
    fence: Callable[[], None] | None
    transport_error: str | None

    def request(self, method: str, path: str, *, query: dict[str, str] | None = None, body: Any = None,
                content_type: str = "application/json", what: str = "", write: bool = False) -> Json: ...


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


class Lease:
    """The `workspace-reconciler` coordination.k8s.io/v1 Lease: one writer at a time, renewed while held.

    Fencing, as client-go's leader election does it: expiry is judged on the local monotonic
    clock, never by comparing another runner's `renewTime` with ours (so clock skew between
    runners cannot let two write at once).
    * Taking: a Lease held by another is taken only after its record (resourceVersion) was seen
      unchanged for its `leaseDurationSeconds` on our clock.
    * Holding: every write of the apply first checks `ensure_held()`, which fails once our clock
      passes the start of our last successful renewal plus the lease duration (another runner
      may then take it), or once a renewal found the Lease taken or deleted. A renewal answered
      409 reads the Lease: still ours (a renewal stored whose answer was lost), it carries on
      from the stored version; another holder's, the Lease is lost.
    * Releasing: the delete carries the uid and resourceVersion we last wrote, so a stale holder
      can never delete its successor's Lease.
    """

    def __init__(self, cluster: LeaseApi, opts: ApplyOptions) -> None:
        self.cluster = cluster
        self.opts = opts
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{cluster.namespace}/leases"
        self.name = f"Lease/{cluster.namespace}/{LEASE_NAME}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._obj: Json | None = None
        self._renewed = 0.0  # time.monotonic() when the last successful write of the Lease was sent
        self._lost: str | None = None
        self._lock = threading.Lock()

    def _body(self, rv: str | None, acquire_time: str | None = None) -> Json:
        now = _now()
        meta: Json = {"name": LEASE_NAME, "namespace": self.cluster.namespace,
                      "labels": {LABEL_MANAGED_BY: MANAGED_BY}}
        if rv:
            meta["resourceVersion"] = rv
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": {"holderIdentity": self.opts.holder, "leaseDurationSeconds": self.opts.lease_seconds,
                         "acquireTime": acquire_time or now, "renewTime": now}}

    def _held(self, obj: Json, sent: float) -> None:
        with self._lock:
            self._obj, self._renewed = obj, sent

    def acquire(self) -> None:
        """Take the Lease, waiting up to `opts.timeout`; then renew it in the background."""
        c = self.cluster
        deadline = time.monotonic() + self.opts.timeout
        holder = ""
        observed: tuple[str, float] | None = None  # (resourceVersion, when first seen on our clock)
        while True:
            try:
                cur = c.request("GET", f"{self.path}/{LEASE_NAME}", what=self.name)
            except ClusterError as e:
                if e.status != 404:
                    raise
                cur = None
            try:
                sent = time.monotonic()
                if cur is None:
                    self._held(c.request("POST", self.path, body=self._body(None),
                                         what=f"{self.name} create failed"), sent)
                    break
                spec = cur.get("spec") or {}
                holder = spec.get("holderIdentity") or ""
                rv = cur["metadata"]["resourceVersion"]
                if observed is None or observed[0] != rv:
                    observed = (rv, sent)
                duration = int(spec.get("leaseDurationSeconds") or self.opts.lease_seconds)
                if not holder or sent >= observed[1] + duration:
                    self._held(c.request("PUT", f"{self.path}/{LEASE_NAME}", body=self._body(rv),
                                         what=f"{self.name} update failed"), sent)
                    break
            except ClusterError as e:
                if e.status != 409:  # somebody else got there first: look again
                    raise
            if time.monotonic() >= deadline:
                raise LockError(f"{self.name} is held by {holder!r}; gave up after {self.opts.timeout:g}s (if that "
                                f"run died, its Lease is taken over once unchanged for its duration, "
                                f"{self.opts.lease_seconds}s by default)")
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        c.fence = self.ensure_held
        self._thread = threading.Thread(target=self._renew, name="lease-renew", daemon=True)
        self._thread.start()

    def _check_deadline(self) -> str | None:
        """Why the Lease is no longer ours, if it is not (called with the lock held)."""
        if self._lost is None and time.monotonic() >= self._renewed + self.opts.lease_seconds:
            self._lost = (f"{self.name} was not renewed within its {self.opts.lease_seconds}s, so another "
                          "run may hold it now")
        return self._lost

    def ensure_held(self) -> None:
        """Raise LockError unless the Lease is surely still ours (called before every write)."""
        with self._lock:
            lost = self._check_deadline()
        if lost is None:
            return
        why = self.cluster.transport_error
        if why is not None and lost.startswith(f"{self.name} was not renewed"):
            lost = f"{why}, and {lost}"
        raise LockError(f"apply stopped: {lost}; nothing more was written (the next run writes what is missing)")

    def _renew(self) -> None:
        interval = max(0.2, self.opts.lease_seconds / 3)
        wait = interval
        while not self._stop.wait(wait):
            with self._lock:
                if self._check_deadline() is not None or self._obj is None:
                    return  # once lost, always lost: a run never writes again after its fence fell
                rv, acquired = self._obj["metadata"]["resourceVersion"], self._obj["spec"].get("acquireTime")
            sent = time.monotonic()
            wait = interval / 2  # after a failure, try again sooner
            try:
                obj = self.cluster.request("PUT", f"{self.path}/{LEASE_NAME}", body=self._body(rv, acquired),
                                           what=f"{self.name} renewal failed")
            except ClusterError as e:
                if e.status in (404, 409):
                    wait = self._after_conflict(acquired, e.status)
                continue  # other failures: the next try may succeed; ensure_held fences writes meanwhile
            with self._lock:
                if self._lost is not None or self._obj is None:
                    return  # lost, or release() has already taken the last version
                # Sent before the deadline and stored: nobody can have seen this version before `sent`.
                # Kept even when release() is waiting for this thread: it deletes the version stored last.
                self._obj, self._renewed = obj, sent
            wait = interval

    def _after_conflict(self, acquired: str | None, status: int) -> float:
        """A renewal was refused (409: the Lease changed; 404: it is gone): ours still, or lost?"""
        try:
            cur = self.cluster.request("GET", f"{self.path}/{LEASE_NAME}", what=self.name)
        except ClusterError as e:
            if e.status != 404:
                return 0.1
            cur = None
        spec = (cur or {}).get("spec") or {}
        ours = (cur is not None and spec.get("holderIdentity") == self.opts.holder and acquired is not None
                and _same_time(spec.get("acquireTime"), acquired))
        with self._lock:
            if ours:
                # Our own renewal was stored and its answer lost: carry on from the stored version,
                # without counting it as a renewal (when it was stored is unknown).
                assert cur is not None
                self._obj = cur
                return 0.0
            holder = spec.get("holderIdentity") or ""
            self._lost = (f"{self.name} was taken over by {holder!r}" if cur is not None
                          else f"{self.name} was deleted by someone else")
        return 0.0

    def release(self) -> None:
        """Stop renewing and delete the Lease if it is still the version we last wrote."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if self.cluster.fence == self.ensure_held:
            self.cluster.fence = None
        with self._lock:
            obj, self._obj = self._obj, None
        if obj is None:
            return
        meta = obj["metadata"]
        preconditions = {"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]}
        with contextlib.suppress(ClusterError):  # gone, taken over, or unreachable: it expires on its own
            self.cluster.request("DELETE", f"{self.path}/{LEASE_NAME}", what=f"{self.name} release failed",
                                 body={"preconditions": preconditions})

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _same_time(a: str | None, b: str | None) -> bool:
    """Whether two API timestamps name the same instant (the server may reformat a MicroTime)."""
    if not a or not b:
        return False
    try:
        return parse_time(a) == parse_time(b)
    except ValueError:
        return a == b
