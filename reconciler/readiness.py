"""Readiness and status of workspaces, judged from live Deployments and pods. Pure.

The cluster module lists the Deployments and pods (with the ownership label selector); this
module decides what they mean: ready or not and why, and each workspace's `reconcile status` row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from reconciler.changeset import StatusRow, StatusState
from reconciler.render import DesiredWorkspace

Json = dict[str, Any]


def parse_time(s: str) -> dt.datetime:
    """An API timestamp (RFC 3339, `Z` or an offset) as an aware datetime."""
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def unready_names(desired: list[DesiredWorkspace], deps: Mapping[str, Json]) -> list[str]:
    """The desired workspaces whose Deployment exists, should run, and is not ready: those need a reason."""
    return [w.name for w in desired if w.name in deps and not deployment_ready(deps[w.name])
            and deps[w.name]["spec"].get("replicas", 1) != 0]


def status_rows(desired: list[DesiredWorkspace], deps: Mapping[str, Json], reasons: Mapping[str, str],
                now: dt.datetime) -> list[StatusRow]:
    """Every workspace of the repo and of the cluster: ready / not ready / stopped / missing / orphaned."""
    want = {w.name: w for w in desired}
    rows: list[StatusRow] = []
    state: StatusState
    for name in sorted(set(want) | set(deps)):
        w, d = want.get(name), deps.get(name)
        owner = w.owner if w else ""
        age = _age(d["metadata"].get("creationTimestamp"), now) if d else ""
        if w is None:
            state, reason = "orphaned", "in the cluster but not in the repo"
        elif d is None:
            state, reason = "missing", "in the repo but not in the cluster (run reconcile)"
        elif d["spec"].get("replicas", 1) == 0:
            state, reason = "stopped", "scaled to zero; data kept"
        elif deployment_ready(d):
            state, reason = "ready", ""
        else:
            state, reason = "not ready", reasons.get(name, "")
        rows.append(StatusRow(name=name, owner=owner, state=state, url=w.url if w else "",
                              credential_hint=w.credential_hint if w else "", age=age, reason=reason,
                              credential_hint_powershell=w.credential_hint_powershell if w else ""))
    return rows


def _age(ts: str | None, now: dt.datetime) -> str:
    if not ts:
        return ""
    secs = int((now - parse_time(ts)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{max(secs, 0)}s"


def deployment_ready(d: Json) -> bool:
    """True when the Deployment's controller saw its latest spec and every wanted replica is updated and available."""
    spec, status = d.get("spec") or {}, d.get("status") or {}
    want = spec.get("replicas", 1)
    if (status.get("observedGeneration") or 0) < (d["metadata"].get("generation") or 0):
        return False
    if want == 0:
        return True
    return bool((status.get("updatedReplicas") or 0) >= want and (status.get("availableReplicas") or 0) >= want
                and (status.get("replicas") or 0) == want)


def why_not_ready(dep: Json | None, pods: list[Json]) -> str:
    """Why a workspace is not ready, from its Deployment and its pods (the newest pod decides)."""
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
