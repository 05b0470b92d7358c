"""`reconcile status`: each workspace's live state, when it was last active, and what the running ones cost.

Reads the cluster (read-only) and returns a `StatusResult`; `status_report.py` renders it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

from reconciler import cluster as kube
from reconciler.cluster import ClusterOptions
from reconciler.cost import running_cost
from reconciler.lifecycle import human, iso
from reconciler.models import Repo
from reconciler.plan import StatusRow
from reconciler.render import render


@dataclass
class StatusResult:
    """The rows to show, LAST ACTIVE as shown ("5m ago") by name, and the running cost (JSON and one line)."""

    rows: list[StatusRow]
    last_active: dict[str, str]
    cost: dict[str, Any] | None = None
    cost_line: str | None = None


def workspace_status(repo: Repo, opts: ClusterOptions, owner: str | None = None,
                     now: dt.datetime | None = None) -> StatusResult:
    """The status of the repo's workspaces in its namespace (only `owner`'s, and orphans named `owner-*`, if given)."""
    cluster = kube.Cluster(repo.project.namespace, opts)  # looked up per call: tests may put a fake there
    desired = render(repo)
    rows = cluster.status(repo.project.metadata.name, desired)
    if owner is not None:
        rows = [r for r in rows if r.owner == owner or (r.state == "orphaned" and r.name.startswith(f"{owner}-"))]
    running = [w for w in desired if any(r.name == w.name and r.state in ("ready", "not ready") for r in rows)]
    seen = cluster.activity(repo.project.metadata.name, running)
    last = {name: a.last_active for name, a in seen.items() if a.last_active is not None}
    rows = [dataclasses.replace(r, last_active=iso(last[r.name])) if r.name in last else r for r in rows]
    now = now or dt.datetime.now(dt.UTC)
    shown = {name: f"{human(now - moment)} ago" for name, moment in last.items()}
    prices = repo.project.spec.prices
    pools = repo.project.spec.node_pools
    total = running_cost((w.objects[0] for w in running), prices, pools) if prices is not None else None
    if total is None:
        return StatusResult(rows, shown)
    return StatusResult(rows, shown, total.as_json(), total.line())
