"""The plan: desired workspaces against live objects, an action per workspace and per object. Pure.

Each desired object is compared with the live object of the same identity (`diff.diff_object`,
on the fields we own); an object that exists but is not ours is a `conflict` unless adopted
(`PlanOptions.adopt` for all, `PlanOptions.adopt_workspaces` for some); objects of ours that no
workspace desires any more are deleted, grouped by the workspace they belonged to. The plan then
carries its impact (`impact`: capacity warnings, blast radius); `impact.check` guards it.

The change-set types are defined in `changeset` and re-exported here, the plan's public face.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.changeset import (
    DELETE_ORDER,
    Action,
    BlockImpact,
    BlockKind,
    LiveState,
    ObjectChange,
    ObjectId,
    Plan,
    PlanOptions,
    Scope,
    StatusRow,
    StatusState,
    WorkspacePlan,
    WorkspaceResult,
    compact,
)
from reconciler.diff import MASK, FieldDiff, diff_object, mask, owned_fields
from reconciler.impact import (
    blast_radius,
    capacity_warnings,
    check,
    conflict_refusals,
    ingress_warnings,
    pod_spec,
)
from reconciler.render import (
    ANNOTATION_SOURCE,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_PART_OF,
    MANAGED_BY,
    DesiredWorkspace,
    object_id,
    object_ids,
)

__all__ = [
    "MASK",
    "Action",
    "BlockImpact",
    "BlockKind",
    "FieldDiff",
    "LiveState",
    "ObjectChange",
    "ObjectId",
    "Plan",
    "PlanOptions",
    "Scope",
    "StatusRow",
    "StatusState",
    "WorkspacePlan",
    "WorkspaceResult",
    "check",
    "compute_plan",
    "conflict_refusals",
    "diff_object",
    "is_ours",
    "mask",
    "owned_fields",
    "workspace_object_ids",
]


def _labels(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return (obj.get("metadata") or {}).get("labels") or {}


def is_ours(obj: Mapping[str, Any], project: str) -> bool:
    """True when the object carries our managed-by label and this project's part-of label."""
    return _ours(_labels(obj), project)


def _ours(labels: Mapping[str, Any], project: str) -> bool:
    return labels.get(LABEL_MANAGED_BY) == MANAGED_BY and labels.get(LABEL_PART_OF) == project


def _object_id(obj: Mapping[str, Any], namespace: str) -> ObjectId:
    kind, ns, name = object_id(obj)
    return ObjectId(kind, ns or namespace, name)


def workspace_object_ids(w: DesiredWorkspace, namespace: str) -> set[ObjectId]:
    """The ids of `w`'s objects (in `namespace` when an object does not say), without rendering them."""
    return {ObjectId(kind, ns or namespace, name) for kind, ns, name in object_ids(w)}


def _compare(
    oid: ObjectId, desired: dict[str, Any], live: dict[str, Any] | None, project: str, opts: PlanOptions,
    lean: bool = False,
) -> ObjectChange:
    keep = compact if lean else _same
    if live is None:
        return ObjectChange(oid, Action.CREATE, [], keep(desired), None)
    ours = is_ours(live, project)
    if not ours and not opts.adopt:
        return ObjectChange(oid, Action.CONFLICT, [], keep(desired), keep(live))
    diff = diff_object(desired, live, owned_fields(live))
    action = Action.UPDATE if diff or not ours else Action.UNCHANGED
    if action is Action.UNCHANGED and lean:
        return ObjectChange(oid, action, [], None, None)
    return ObjectChange(oid, action, diff, keep(desired), keep(live))


def _same(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    return obj


def _workspace_action(changes: Sequence[ObjectChange]) -> Action:
    actions = {c.action for c in changes}
    if Action.CONFLICT in actions:
        return Action.CONFLICT
    if actions == {Action.CREATE}:
        return Action.CREATE
    if actions == {Action.DELETE}:
        return Action.DELETE
    if actions & {Action.CREATE, Action.UPDATE, Action.DELETE}:
        return Action.UPDATE
    return Action.UNCHANGED


def _replicas(obj: Mapping[str, Any] | None) -> int:
    value = (obj or {}).get("spec", {}).get("replicas", 1)
    return value if isinstance(value, int) else 1


def _claims(deployment: Mapping[str, Any] | None) -> list[str]:
    claims: list[str] = []
    for vol in pod_spec(deployment).get("volumes") or ():
        claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
        if claim and claim not in claims:
            claims.append(claim)
    return claims


def data_kept_note(claims: list[str], folder: str | None = None) -> str:
    """What deleting a workspace keeps: its PVCs (never deleted) and, when known, the owner's folder on them."""
    if not claims:
        return "no PVC is mounted: whatever the pod wrote outside a PVC is lost"
    note = f"data is kept: PVC {', '.join(claims)} {'is' if len(claims) == 1 else 'are'} not deleted"
    return note + (f"; the owner's files stay in {folder} (in any workspace that mounts it)" if folder else "")


def _delete_key(change: ObjectChange) -> tuple[int, ObjectId]:
    kind = change.id.kind
    return (DELETE_ORDER.index(kind) if kind in DELETE_ORDER else len(DELETE_ORDER), change.id)


def _deleted_workspace(name: str, changes: list[ObjectChange]) -> WorkspacePlan:
    changes.sort(key=_delete_key)
    objs = {c.id.kind: c.live or {} for c in changes}
    url = ""
    rules = ((objs.get("Ingress") or {}).get("spec") or {}).get("rules") or []
    if rules and rules[0].get("host"):
        url = f"https://{rules[0]['host']}"
    source = ""
    for obj in objs.values():
        source = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_SOURCE) or source
    kept = _claims(objs.get("Deployment"))
    containers = pod_spec(objs.get("Deployment")).get("containers") or [{}]
    notes = [data_kept_note(kept, containers[0].get("workingDir"))]
    return WorkspacePlan(
        name=name,
        owner="",
        action=Action.DELETE,
        url=url,
        credential_hint="",
        objects=changes,
        environment="",
        compute="",
        data_sources=[],
        restarts=False,
        kept_pvcs=kept,
        source=source,
        notes=notes,
    )


def _workspace_plan(w: DesiredWorkspace, changes: list[ObjectChange]) -> WorkspacePlan:
    action = _workspace_action(changes)
    restarts = False
    notes: list[str] = []
    dep = next((c for c in changes if c.id.kind == "Deployment"), None)
    live = dep.live if dep is not None and dep.action is Action.UPDATE else None  # each read decodes
    if dep is not None and live is not None:
        before, after = _replicas(live), _replicas(dep.desired)
        template = any(d.path.startswith("spec.template.") for d in dep.diff)
        restarts = template and before > 0 and after > 0
        if before > 0 and after == 0:
            notes.append("the pod stops (state: stopped): unsaved work is lost; data on PVCs is kept")
        elif before == 0 and after > 0:
            notes.append("the pod starts (state: running)")
        elif restarts:
            notes.append("the pod restarts: unsaved notebook work is lost")
    return WorkspacePlan(
        name=w.name,
        owner=w.owner,
        action=action,
        url=w.url,
        credential_hint=w.credential_hint,
        objects=changes,
        environment=w.environment,
        compute=w.compute,
        data_sources=list(w.data_sources),
        restarts=restarts,
        kept_pvcs=[],
        source=w.source,
        state=w.state,
        notes=notes,
        credential_hint_powershell=w.credential_hint_powershell,
    )


def compute_plan(
    desired: list[DesiredWorkspace],
    live: LiveState,
    project: str,
    namespace: str,
    opts: PlanOptions,
    scope: Scope | None = None,
    *,
    lean: bool = False,
) -> Plan:
    """Every desired workspace against the live objects, plus deletes of ours no longer desired.

    With a `scope` of names, `desired` is that scope's and only its live objects count: ours of
    other workspaces are neither deleted nor counted (they were not planned), and the managed
    count adds the repo's workspaces outside the scope, so the mass-delete guard still sees them.

    Each workspace's objects are read once (`render` can render them as they are read) and compared.
    `lean`: an unchanged object's change keeps neither body (nothing but a Run:ai annotation reads
    them) and a changed one keeps them as compact JSON, so a plan of 5,000 workspaces holds no
    rendered or live object as a dict (the reconciler's peak memory: bench/RUN_NOTES.md)."""
    names = scope.names if scope is not None else None
    desired_ids: set[ObjectId] = set()
    planned: list[tuple[DesiredWorkspace, list[ObjectChange]]] = []
    for w in desired:
        changes: list[ObjectChange] = []
        for obj in w.objects:
            oid = _object_id(obj, namespace)
            desired_ids.add(oid)
            changes.append(_compare(oid, obj, live.objects.get(oid), project, opts, lean))
        planned.append((w, changes))

    # Objects of ours that nothing desires any more, by the workspace they belong to.
    strays: dict[str, list[ObjectChange]] = {}
    managed: set[str] = set()
    for oid in live.objects:
        labels = live.labels(oid)
        if not _ours(labels, project):
            continue
        instance = str(labels.get(LABEL_INSTANCE) or oid.name)
        if names is not None and instance not in names:
            continue
        managed.add(instance)
        if oid not in desired_ids:
            body = live.objects[oid]
            strays.setdefault(instance, []).append(ObjectChange(oid, Action.DELETE, [], None,
                                                                compact(body) if lean else body))

    workspaces: list[WorkspacePlan] = []
    for w, changes in planned:
        extra = strays.pop(w.name, None)
        if extra:
            changes.extend(sorted(extra, key=_delete_key))
        workspaces.append(_workspace_plan(w, changes))
    workspaces.extend(_deleted_workspace(name, changes) for name, changes in strays.items())
    workspaces.sort(key=lambda wp: wp.name)

    plan = Plan(
        project=project,
        namespace=namespace,
        workspaces=workspaces,
        warnings=capacity_warnings(desired, live, namespace) + ingress_warnings(desired),
        blast_radius=blast_radius(desired, workspaces),
        managed_workspaces=len(managed) + (scope.outside if scope is not None else 0),
        scope=scope,
    )
    return _adopt_workspaces(plan, desired, live, opts)


def _theirs(labels: Mapping[str, Any], project: str, workspace: str) -> bool:
    return _ours(labels, project) and labels.get(LABEL_INSTANCE) == workspace


def _adopt_workspaces(plan: Plan, desired: list[DesiredWorkspace], live: LiveState, opts: PlanOptions) -> Plan:
    """`plan` with `opts.adopt_workspaces` planned as adopted (`--adopt WORKSPACE`): only theirs."""
    names = opts.adopt_workspaces
    if not names or opts.adopt:
        return plan
    adopted: dict[str, WorkspacePlan] = {}
    for w in desired:
        if w.name not in names:
            continue
        ids = workspace_object_ids(w, plan.namespace)
        own = {oid: live.objects[oid] for oid in live.objects
               if oid in ids or _theirs(live.labels(oid), plan.project, w.name)}
        one = compute_plan([w], LiveState(own, live.pvcs, live.node_gpus), plan.project, plan.namespace,
                           dataclasses.replace(opts, adopt=True))
        adopted[w.name] = one.workspaces[0]
    return dataclasses.replace(plan, workspaces=[adopted.get(w.name, w) for w in plan.workspaces])
