"""One plan/apply run against a cluster: plan, take the Lease, plan again under it, apply, wait.

Returns what happened (`RunResult`); rendering it, posting it and choosing the exit code are the
CLI's. Conflicts are refused per workspace (left alone, reported); `check` then guards only
against mass deletes, which refuse the whole run (`RunResult.refused`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Collection, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from reconciler import cluster
from reconciler.cluster import ClusterOptions
from reconciler.cost import compute_hourly, plan_cost
from reconciler.errors import PlanRefused
from reconciler.impact import check, conflict_refusals
from reconciler.lease import ApplyOptions
from reconciler.lifecycle import expiry_warnings
from reconciler.models import Repo
from reconciler.plan import (
    Action,
    LiveState,
    ObjectId,
    Plan,
    PlanOptions,
    Scope,
    WorkspaceResult,
    compute_plan,
    workspace_object_ids,
)
from reconciler.render import DesiredWorkspace

Progress = Callable[[list[str], list[str]], None]


class Backend(Protocol):
    """Where workspaces run: read, lock, write, wait. `cluster.Cluster` is the Kubernetes one.

    The seam for a second backend (a Run:ai one, say): the plan, its impact and the reports stay
    shared; a backend brings its own reader and writer of the objects `render` made for it.
    """

    def read_live(self, claims: Iterable[str] = (), *, wanted: Collection[ObjectId] | None = None,
                  instances: Collection[str] | None = None) -> LiveState: ...

    def acquire_lease(self, opts: ApplyOptions) -> AbstractContextManager[object]: ...

    def apply(self, plan: Plan) -> dict[str, WorkspaceResult]: ...

    def wait_ready(self, project: str, names: list[str], timeout: float,
                   progress: Progress | None = None) -> dict[str, WorkspaceResult]: ...


@runtime_checkable
class Annotates(Protocol):
    """A backend that says more about a plan than the shared plan can (Run:ai: recreate, suspend, URLs)."""

    def annotate(self, plan: Plan) -> Plan: ...


@dataclass
class RunOptions:
    """How to run: the plan's options, the cluster to reach, and whether to write and wait."""

    plan: PlanOptions
    cluster: ClusterOptions
    dry_run: bool = False
    wait: bool = True
    timeout: float = 300.0
    progress: Callable[[int], Progress] | None = None  # given how many to wait for
    scope: Scope | None = None  # --since: `desired` is these workspaces'; read and plan only them


@dataclass
class RunResult:
    """A run's outcome: the last plan made, per-workspace results (empty when nothing was written)."""

    plan: Plan
    results: dict[str, WorkspaceResult]
    refused: PlanRefused | None = None  # a mass delete refused the whole run: nothing was written
    left_alone: dict[str, str] = field(default_factory=dict)  # workspace -> why (a conflict)

    @property
    def failed(self) -> bool:
        """True when the run must exit 1."""
        return (self.refused is not None or bool(self.left_alone)
                or any(r.errors or r.ready is False for r in self.results.values()))


def reconcile(desired: list[DesiredWorkspace], project: str, namespace: str, opts: RunOptions,
              backend: Backend | None = None) -> RunResult:
    """Plan `desired` against the backend (the cluster by default) and, unless a dry run or refused, apply and wait."""
    # Looked up per run, not at import: tests put a fake in cluster.Cluster's place.
    api: Backend = backend if backend is not None else cluster.Cluster(namespace, opts.cluster)
    claims = sorted({c for w in desired for c in w.pvcs})
    # Another's object matters to the plan only where we want one of that name (a conflict).
    wanted = {oid for w in desired for oid in workspace_object_ids(w, namespace)}

    scoped = opts.scope.names if opts.scope is not None else None
    # A backend that annotates the plan reads its unchanged objects too (Run:ai: their URLs); otherwise
    # the plan keeps only what changes, as compact JSON (its memory at 5,000 workspaces).
    lean = not isinstance(api, Annotates)

    def make_plan() -> Plan:
        live = api.read_live(claims, wanted=wanted, instances=scoped)
        made = compute_plan(desired, live, project, namespace, opts.plan, opts.scope, lean=lean)
        return api.annotate(made) if isinstance(api, Annotates) else made

    mass_delete_rules = dataclasses.replace(opts.plan, adopt=True)
    plan = make_plan()
    refused: PlanRefused | None = None
    try:
        check(plan, mass_delete_rules)
    except PlanRefused as e:
        refused = e
    results: dict[str, WorkspaceResult] = {}
    if not opts.dry_run and refused is None and plan.has_changes:
        with api.acquire_lease(ApplyOptions(timeout=opts.timeout)):
            del plan  # its live state is not kept next to the new one's (the peak memory of an apply)
            plan = make_plan()  # again, under the lock: never act on a plan another run made stale
            check(plan, mass_delete_rules)
            results = api.apply(plan)
        to_wait = [
            w.name
            for w in plan.workspaces
            if w.action in (Action.CREATE, Action.UPDATE) and w.state == "running" and not results[w.name].errors
        ]
        if opts.wait and to_wait:
            progress = opts.progress(len(to_wait)) if opts.progress else None
            ready = api.wait_ready(project, to_wait, opts.timeout, progress)
            for name, r in ready.items():
                results[name].ready, results[name].reason = r.ready, r.reason
            if isinstance(api, Annotates):
                plan = api.annotate(plan)  # what waiting learnt (Run:ai: the connection URLs)
    left_alone = conflict_refusals(plan)
    if results:
        for name, why in left_alone.items():
            results.setdefault(name, WorkspaceResult(ready=None)).errors.append(why)
    return RunResult(plan, results, refused, left_alone)


def plan_extras(repo: Repo, plan: Plan) -> dict[str, Any]:
    """The plan comment's cost section and expiry warnings (for the changed workspaces)."""
    changed = [w.name for w in plan.workspaces if w.action.value in ("create", "update")]
    today = dt.datetime.now(dt.UTC).date()
    # Run:ai workspaces are not Deployments: their cost is Run:ai's to report.
    prices = repo.project.spec.prices if repo.project.spec.backend == "kubernetes" else None
    # What each running workspace costs as the repo renders it: for those the plan did not read (--since)
    # and the unchanged ones it keeps no body of.
    rendered = {n: compute_hourly(repo.compute[w.spec.compute], prices) for n, w in repo.workspaces.items()
                if w.spec.state == "running"} if prices is not None else {}
    names = plan.scope.names if plan.scope is not None else None
    unread = sum((c for n, c in rendered.items() if n not in names), Decimal(0)) if names is not None else Decimal(0)
    cost = plan_cost(plan, prices, repo.project.spec.node_pools, unread, rendered)
    return {"cost": cost, "expiring": expiry_warnings(repo, today, changed)}
