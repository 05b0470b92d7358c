"""The plan: desired workspaces against live objects, compared on the fields we own. Pure.

Live objects are plain Kubernetes API JSON dicts (camelCase keys, as a LIST returns them).
Per object, the desired dict is compared with the *owned view* of the live one: every field the
desired object sets, plus every field that our field manager owns according to the live
object's ``managedFields`` (``fieldsV1``). So a field we set last time and no longer want shows
as removed, drift by another manager shows as changed, and server-filled defaults that nobody
asked for are ignored.

Diff paths are dotted, with list items named by their merge key:
``spec.template.spec.containers[name=workspace].env[name=TOKEN].value``,
``...ports[containerPort=8080]``, ``...volumeMounts[mountPath=/data]``; lists without a key
(``args``, ``command``, Ingress ``rules``) are compared whole or by index (``rules[0].host``).

Masking: an ``env`` (or any name/value) item whose name contains TOKEN, PASSWORD, SECRET or KEY
has its ``value`` shown as ``"***"``; so has ``--flag=value`` in ``args``/``command`` when the
flag's name contains one of those words, and the argument after such a bare ``--flag``. A
masked change is still reported: its ``FieldDiff.masked`` is true (JSON: ``"masked": true``),
and when only such a value changed both sides read ``"***"``. ``ObjectChange.desired``/``live``
stay unmasked (apply sends ``desired`` as is); reports never print them, and
``redacted_desired``/``redacted_live`` give masked copies.

Blast radius: a block counts as changed when every existing workspace using it has diffs under
the fields it controls (compute: container resources; environment: image, args, command, env,
ports, probes, workingDir, the init container's image; data source: its volume and mounts), so
one workspace switching blocks is not reported as a block change.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from functools import lru_cache
from typing import Any, Literal

from reconciler import models
from reconciler.errors import PlanRefused
from reconciler.render import (
    ANNOTATION_COMMIT,
    ANNOTATION_SOURCE,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_PART_OF,
    MANAGED_BY,
    DesiredWorkspace,
)

MASK = "***"
_SENSITIVE = re.compile("TOKEN|PASSWORD|SECRET|KEY", re.IGNORECASE)
_SENSITIVE_ARG = re.compile(
    r"^(-{1,2}[^=]*(?:token|password|secret|key)[^=]*=).+$", re.IGNORECASE | re.DOTALL
)
# A bare flag (`--token`) whose value is the next argument.
_SENSITIVE_FLAG = re.compile(r"^-{1,2}[^=]*(?:token|password|secret|key)[^=]*$", re.IGNORECASE | re.DOTALL)
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

# The order in which a workspace's objects are deleted: entry point first, data path last.
_DELETE_ORDER = {"Ingress": 0, "Service": 1, "Deployment": 2}


class Action(StrEnum):
    """What the plan does to an object or a workspace (the JSON contract's spelling)."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    UNCHANGED = "unchanged"
    CONFLICT = "conflict"


@dataclass(frozen=True, order=True)
class ObjectId:
    """The identity of a Kubernetes object; printed as ``Kind/namespace/name``."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


@dataclass
class LiveState:
    """Everything the plan reads from the cluster, fetched before planning."""

    objects: dict[ObjectId, dict[str, Any]]  # every Deployment/Service/Ingress in the namespace
    pvcs: dict[str, str] | None  # claim name -> phase; None = could not list
    node_gpus: list[int] | None  # allocatable nvidia.com/gpu per node; None = could not list


@dataclass
class PlanOptions:
    """The plan's options, passed whole (the CLI's --adopt, --allow-mass-delete, --max-deletes)."""

    adopt: bool = False
    allow_mass_delete: bool = False
    max_deletes: int = 5


@dataclass(frozen=True)
class FieldDiff:
    """One differing field: ``live`` is None when added, ``desired`` is None when removed."""

    path: str
    live: Any
    desired: Any
    masked: bool = False  # a secret-looking value was replaced by "***" on either side


@dataclass
class ObjectChange:
    """What the plan does to one object.

    ``desired`` is exactly what apply sends and ``live`` what was read, so neither is masked:
    never print them; reports use ``diff`` (masked) or ``redacted_desired``/``redacted_live``.
    """

    id: ObjectId
    action: Action
    diff: list[FieldDiff]
    desired: dict[str, Any] | None
    live: dict[str, Any] | None

    @property
    def redacted_desired(self) -> dict[str, Any] | None:
        """``desired`` with secret-looking values replaced by ``"***"``."""
        return None if self.desired is None else _mask_object(self.desired)

    @property
    def redacted_live(self) -> dict[str, Any] | None:
        """``live`` with secret-looking values replaced by ``"***"``."""
        return None if self.live is None else _mask_object(self.live)


@dataclass
class WorkspacePlan:
    """What the plan does to one workspace and its objects."""

    name: str
    owner: str
    action: Action
    url: str
    credential_hint: str
    objects: list[ObjectChange]
    environment: str
    compute: str
    data_sources: list[str]
    restarts: bool  # the pod template changes on a running workspace: its pod restarts
    kept_pvcs: list[str]  # for a delete: the claims its Deployment mounted, which are kept
    source: str
    state: str = ""  # "running" | "stopped"; "" for a delete
    notes: list[str] = field(default_factory=list)

    @property
    def diff_count(self) -> int:
        """The number of field diffs over all its objects."""
        return sum(len(o.diff) for o in self.objects)


BlockKind = Literal["environment", "compute", "data source"]


@dataclass(frozen=True)
class BlockImpact:
    """A block whose change restarts the pods of the workspaces that use it."""

    kind: BlockKind
    name: str
    workspaces: list[str]


@dataclass
class Plan:
    """The whole change set for a project: per workspace, per object."""

    project: str
    namespace: str
    workspaces: list[WorkspacePlan]
    warnings: list[str] = field(default_factory=list)
    blast_radius: list[BlockImpact] = field(default_factory=list)
    managed_workspaces: int = 0  # distinct workspaces of ours that exist live

    def summary(self) -> dict[str, int]:
        """Workspace counts per action, every action present (the JSON ``summary``)."""
        counts = {a.value: 0 for a in Action}
        for w in self.workspaces:
            counts[w.action.value] += 1
        return counts

    @property
    def has_changes(self) -> bool:
        """True when applying the plan would write something."""
        return any(w.action in (Action.CREATE, Action.UPDATE, Action.DELETE) for w in self.workspaces)

    @property
    def deletes(self) -> list[WorkspacePlan]:
        """The workspaces the plan deletes."""
        return [w for w in self.workspaces if w.action is Action.DELETE]

    @property
    def conflicts(self) -> list[ObjectChange]:
        """The objects that exist but are not ours."""
        return [o for w in self.workspaces for o in w.objects if o.action is Action.CONFLICT]


@dataclass
class WorkspaceResult:
    """The outcome of applying one workspace (produced by the cluster module)."""

    ready: bool | None  # None: not waited for
    reason: str = ""
    errors: list[str] = field(default_factory=list)


StatusState = Literal["ready", "not ready", "missing", "orphaned", "stopped"]


@dataclass(frozen=True)
class StatusRow:
    """One workspace in ``reconcile status``."""

    name: str
    owner: str
    state: StatusState
    url: str
    credential_hint: str
    age: str
    reason: str


# --------------------------------------------------------------------------------------------
# Normalisation


@lru_cache(maxsize=8192)
def parse_quantity(value: str | int | float) -> Fraction | None:
    """A Kubernetes quantity as an exact number (``"1000m"`` -> 1, ``"16Gi"`` -> 2**34); None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(str(value))
    try:
        return Fraction(models.parse_quantity(value.strip()))
    except ValueError:
        return None


def _scalar_equal(desired: Any, live: Any, quantity: bool) -> bool:
    if desired == live:
        return True
    if isinstance(desired, bool) or isinstance(live, bool):
        return False
    if quantity and isinstance(desired, str | int | float) and isinstance(live, str | int | float):
        d, lv = parse_quantity(desired), parse_quantity(live)
        return d is not None and d == lv
    # intOrString (targetPort, probe port): the server returns what it was given.
    if isinstance(desired, int) and isinstance(live, str):
        return live == str(desired)
    if isinstance(desired, str) and isinstance(live, int):
        return desired == str(live)
    return False


def _is_empty(value: Any) -> bool:
    # The API server omits empty strings, lists, maps and false booleans (omitempty).
    return value is None or value is False or (isinstance(value, str | list | dict) and not value)


# --------------------------------------------------------------------------------------------
# Masking


def _sensitive_item(item: Mapping[str, Any]) -> bool:
    name = item.get("name")
    return isinstance(name, str) and "value" in item and _SENSITIVE.search(name) is not None


def _mask_arg(arg: Any) -> Any:
    if isinstance(arg, str):
        m = _SENSITIVE_ARG.match(arg)
        if m is not None:
            return m.group(1) + MASK
    return arg


def mask(value: Any, key: str = "") -> Any:
    """``value`` with secret-looking env values and ``--token=x`` / ``--token x`` args replaced by ``"***"``.

    Returns the very same object when there is nothing to mask (no copy).
    """
    if isinstance(value, dict):
        sensitive = _sensitive_item(value)
        new: dict[str, Any] | None = None
        for k, v in value.items():
            if k == "managedFields":
                continue
            m = (MASK if v is not None else v) if sensitive and k == "value" else mask(v, k)
            if m is not v:
                if new is None:
                    new = dict(value)
                new[k] = m
        return value if new is None else new
    if isinstance(value, list):
        args = key in ("args", "command")
        out: list[Any] | None = None
        for i, v in enumerate(value):
            if args:
                after_flag = i > 0 and isinstance(value[i - 1], str) and _SENSITIVE_FLAG.match(value[i - 1])
                m = (MASK if v is not None else v) if after_flag else _mask_arg(v)
            else:
                m = mask(v)
            if m is not v:
                if out is None:
                    out = list(value)
                out[i] = m
        return value if out is None else out
    if key in ("args", "command"):
        return _mask_arg(value)
    return value


def _mask_object(obj: dict[str, Any]) -> dict[str, Any]:
    masked: dict[str, Any] = mask(obj)
    annotations = (masked.get("metadata") or {}).get("annotations") or {}
    if _LAST_APPLIED in annotations:
        # kubectl's record holds the whole object, env values included.
        masked = {
            **masked,
            "metadata": {**masked["metadata"], "annotations": {**annotations, _LAST_APPLIED: MASK}},
        }
    return masked


# --------------------------------------------------------------------------------------------
# The owned view (managedFields fieldsV1)


@lru_cache(maxsize=8192)
def _parse_key(text: str) -> dict[str, Any]:
    parsed = json.loads(text)
    return parsed if isinstance(parsed, dict) else {}


def _subset(key: Mapping[str, Any], item: Mapping[str, Any]) -> bool:
    return all(k in item and _scalar_equal(v, item[k], False) for k, v in key.items())


def _merge_fields(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge_fields(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def owned_fields(live: Mapping[str, Any], manager: str = MANAGED_BY) -> dict[str, Any] | None:
    """The ``fieldsV1`` set that ``manager`` owns by Apply on ``live``; None when it owns nothing."""
    owned: dict[str, Any] | None = None
    for entry in (live.get("metadata") or {}).get("managedFields") or ():
        if entry.get("manager") != manager or entry.get("operation") != "Apply" or entry.get("subresource"):
            continue
        fields = entry.get("fieldsV1")
        if isinstance(fields, dict):
            owned = fields if owned is None else _merge_fields(owned, fields)
    return owned


def _project(value: Any, owned: Any) -> Any:
    """The part of a live value that the fieldsV1 subtree ``owned`` covers ({} = all of it)."""
    if not isinstance(owned, dict) or not owned:
        return value
    if isinstance(value, dict):
        keys = [k[2:] for k in owned if k.startswith("f:")]
        if not keys:
            return value
        return {k: _project(value[k], owned["f:" + k]) for k in keys if k in value}
    if isinstance(value, list):
        items: list[Any] = []
        for k, sub in owned.items():
            if k.startswith("k:"):
                key = _parse_key(k[2:])
                items.extend(_project(i, sub) for i in value if isinstance(i, dict) and _subset(key, i))
            elif k.startswith("i:") and k[2:].isdigit() and int(k[2:]) < len(value):
                items.append(_project(value[int(k[2:])], sub))
            elif k.startswith("v:"):
                v = json.loads(k[2:])
                items.extend(i for i in value if i == v)
        return items if items else value
    return value


# --------------------------------------------------------------------------------------------
# The comparison


_KEYED_LISTS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
}
_SKIP_TOP = frozenset({"apiVersion", "kind", "status"})


def _list_key(key: str, desired: Sequence[Any], live: Sequence[Any]) -> str | None:
    if key == "ports":
        sample = next((i for i in (*desired, *live) if isinstance(i, dict)), None)
        if sample is None:
            return None
        kf = "containerPort" if "containerPort" in sample else "port" if "port" in sample else None
    else:
        kf = _KEYED_LISTS.get(key)
    if kf is None or not all(isinstance(i, dict) and kf in i for i in desired):
        return None
    return kf


def _added(out: list[FieldDiff], path: str, key: str, desired: Any, secret: bool) -> None:
    if secret:
        out.append(FieldDiff(path, None, MASK, True))
        return
    m = mask(desired, key)
    out.append(FieldDiff(path, None, m, m is not desired))


def _removed(out: list[FieldDiff], path: str, key: str, live: Any, secret: bool) -> None:
    if secret:
        out.append(FieldDiff(path, MASK, None, True))
        return
    m = mask(live, key)
    out.append(FieldDiff(path, m, None, m is not live))


def _changed(out: list[FieldDiff], path: str, key: str, live: Any, desired: Any, secret: bool) -> None:
    if secret:
        out.append(FieldDiff(path, MASK, MASK, True))
        return
    ml, md = mask(live, key), mask(desired, key)
    out.append(FieldDiff(path, ml, md, ml is not live or md is not desired))


def _diff_map(
    desired: Mapping[str, Any],
    live: Mapping[str, Any],
    owned: Mapping[str, Any] | None,
    path: str,
    out: list[FieldDiff],
    quantity: bool,
    secret_item: bool,
) -> None:
    prefix = path + "." if path else ""
    for key, dv in desired.items():
        if dv is None or key == ANNOTATION_COMMIT or (not path and key in _SKIP_TOP):
            continue
        sub = owned.get("f:" + key) if owned else None
        child_quantity = quantity or (
            key in ("limits", "requests") and (path == "resources" or path.endswith(".resources"))
        )
        _diff_value(
            key, dv, live.get(key), sub, prefix + key, out, child_quantity, secret_item and key == "value"
        )
    if owned:
        for okey, sub in owned.items():
            if not okey.startswith("f:"):
                continue
            key = okey[2:]
            if desired.get(key) is not None or key == ANNOTATION_COMMIT or (not path and key in _SKIP_TOP):
                continue
            lv = live.get(key)
            if lv is not None:
                _removed(out, prefix + key, key, _project(lv, sub), secret_item and key == "value")


def _diff_value(
    key: str,
    dv: Any,
    lv: Any,
    owned: Any,
    path: str,
    out: list[FieldDiff],
    quantity: bool,
    secret: bool,
) -> None:
    if dv == lv:
        # Exactly equal (compared in C): nothing differs and nothing owned can be missing below.
        return
    if isinstance(dv, dict):
        if isinstance(lv, dict):
            _diff_map(
                dv, lv, owned if isinstance(owned, dict) else None, path, out, quantity, _sensitive_item(dv)
            )
        elif not (lv is None and not dv):
            _changed(out, path, key, lv, dv, secret) if lv is not None else _added(out, path, key, dv, secret)
    elif isinstance(dv, list):
        if isinstance(lv, list):
            _diff_list(key, dv, lv, owned if isinstance(owned, dict) else None, path, out, quantity)
        elif not (lv is None and not dv):
            _changed(out, path, key, lv, dv, secret) if lv is not None else _added(out, path, key, dv, secret)
    elif lv is None:
        if not _is_empty(dv):
            _added(out, path, key, dv, secret)
    elif not _scalar_equal(dv, lv, quantity):
        _changed(out, path, key, lv, dv, secret)


def _diff_list(
    key: str,
    desired: list[Any],
    live: list[Any],
    owned: Mapping[str, Any] | None,
    path: str,
    out: list[FieldDiff],
    quantity: bool,
) -> None:
    kf = _list_key(key, desired, live)
    if kf is None:
        # Atomic list: by index when it holds objects of the same length, else whole.
        if len(desired) == len(live) and all(
            isinstance(d, dict) and isinstance(v, dict) for d, v in zip(desired, live, strict=True)
        ):
            for i, (d, v) in enumerate(zip(desired, live, strict=True)):
                _diff_map(d, v, None, f"{path}[{i}]", out, quantity, _sensitive_item(d))
        elif len(desired) != len(live) or not all(
            _scalar_equal(d, v, quantity) for d, v in zip(desired, live, strict=True)
        ):
            _changed(out, path, key, live, desired, False)
        return

    live_by_key: dict[Any, dict[str, Any]] = {}
    for item in live:
        if isinstance(item, dict) and kf in item:
            live_by_key.setdefault(item[kf], item)
    owned_items = (
        [(_parse_key(k[2:]), sub) for k, sub in owned.items() if k.startswith("k:")] if owned else []
    )
    used: set[int] = set()
    desired_keys: list[Any] = []
    for item in desired:
        k = item[kf]
        desired_keys.append(k)
        li = live_by_key.get(k)
        if li is None and isinstance(k, int):
            li = live_by_key.get(str(k))
        item_path = f"{path}[{kf}={k}]"
        secret = _sensitive_item(item)
        if li is None:
            _added(out, item_path, key, item, False)
            continue
        sub: Any = None
        for idx, (okey, osub) in enumerate(owned_items):
            if idx not in used and _subset(okey, li):
                sub = osub
                used.add(idx)
                break
        _diff_map(item, li, sub if isinstance(sub, dict) else None, item_path, out, quantity, secret)
    if len(used) == len(owned_items):
        return
    for idx, (okey, osub) in enumerate(owned_items):
        if idx in used:
            continue
        for li in live:
            if (
                isinstance(li, dict)
                and _subset(okey, li)
                and not any(_scalar_equal(dk, li.get(kf), False) for dk in desired_keys)
            ):
                _removed(out, f"{path}[{kf}={li.get(kf)}]", key, _project(li, osub), False)
                break


def diff_object(
    desired: Mapping[str, Any], live: Mapping[str, Any], owned: Mapping[str, Any] | None
) -> list[FieldDiff]:
    """Where ``live`` differs from ``desired`` on the desired fields plus the ``owned`` fieldsV1 set."""
    out: list[FieldDiff] = []
    _diff_map(desired, live, owned, "", out, False, False)
    return out


# --------------------------------------------------------------------------------------------
# The plan


def _labels(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return (obj.get("metadata") or {}).get("labels") or {}


def is_ours(obj: Mapping[str, Any], project: str) -> bool:
    """True when the object carries our managed-by label and this project's part-of label."""
    labels = _labels(obj)
    return labels.get(LABEL_MANAGED_BY) == MANAGED_BY and labels.get(LABEL_PART_OF) == project


def _object_id(obj: Mapping[str, Any], namespace: str) -> ObjectId:
    meta = obj.get("metadata") or {}
    return ObjectId(
        str(obj.get("kind", "")), str(meta.get("namespace") or namespace), str(meta.get("name", ""))
    )


def _compare(
    oid: ObjectId, desired: dict[str, Any], live: dict[str, Any] | None, project: str, opts: PlanOptions
) -> ObjectChange:
    if live is None:
        return ObjectChange(oid, Action.CREATE, [], desired, None)
    ours = is_ours(live, project)
    if not ours and not opts.adopt:
        return ObjectChange(oid, Action.CONFLICT, [], desired, live)
    diff = diff_object(desired, live, owned_fields(live))
    action = Action.UPDATE if diff or not ours else Action.UNCHANGED
    return ObjectChange(oid, action, diff, desired, live)


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


def _pod_spec(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return ((obj or {}).get("spec") or {}).get("template", {}).get("spec") or {}


def _claims(deployment: Mapping[str, Any] | None) -> list[str]:
    claims: list[str] = []
    for vol in _pod_spec(deployment).get("volumes") or ():
        claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
        if claim and claim not in claims:
            claims.append(claim)
    return claims


def _delete_key(change: ObjectChange) -> tuple[int, ObjectId]:
    return (_DELETE_ORDER.get(change.id.kind, len(_DELETE_ORDER)), change.id)


def _deleted_workspace(name: str, changes: list[ObjectChange], live: LiveState) -> WorkspacePlan:
    changes.sort(key=_delete_key)
    objs = {c.id.kind: live.objects[c.id] for c in changes}
    url = ""
    rules = ((objs.get("Ingress") or {}).get("spec") or {}).get("rules") or []
    if rules and rules[0].get("host"):
        url = f"https://{rules[0]['host']}"
    source = ""
    for obj in objs.values():
        source = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_SOURCE) or source
    kept = _claims(objs.get("Deployment"))
    notes = (
        [f"data is kept: PVC {', '.join(kept)} {'is' if len(kept) == 1 else 'are'} not deleted"]
        if kept
        else ["no PVC is mounted: whatever the pod wrote outside a PVC is lost"]
    )
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
    if dep is not None and dep.action is Action.UPDATE and dep.live is not None:
        before, after = _replicas(dep.live), _replicas(dep.desired)
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
    )


def compute_plan(
    desired: list[DesiredWorkspace],
    live: LiveState,
    project: str,
    namespace: str,
    opts: PlanOptions,
) -> Plan:
    """Every desired workspace against the live objects, plus deletes of ours no longer desired."""
    desired_ids: set[ObjectId] = set()
    planned: list[tuple[DesiredWorkspace, list[ObjectChange]]] = []
    for w in desired:
        changes: list[ObjectChange] = []
        for obj in w.objects:
            oid = _object_id(obj, namespace)
            desired_ids.add(oid)
            changes.append(_compare(oid, obj, live.objects.get(oid), project, opts))
        planned.append((w, changes))

    # Objects of ours that nothing desires any more, by the workspace they belong to.
    strays: dict[str, list[ObjectChange]] = {}
    managed: set[str] = set()
    for oid, obj in live.objects.items():
        if not is_ours(obj, project):
            continue
        instance = str(_labels(obj).get(LABEL_INSTANCE) or oid.name)
        managed.add(instance)
        if oid not in desired_ids:
            strays.setdefault(instance, []).append(ObjectChange(oid, Action.DELETE, [], None, obj))

    workspaces: list[WorkspacePlan] = []
    for w, changes in planned:
        extra = strays.pop(w.name, None)
        if extra:
            changes.extend(sorted(extra, key=_delete_key))
        workspaces.append(_workspace_plan(w, changes))
    workspaces.extend(_deleted_workspace(name, changes, live) for name, changes in strays.items())
    workspaces.sort(key=lambda wp: wp.name)

    return Plan(
        project=project,
        namespace=namespace,
        workspaces=workspaces,
        warnings=capacity_warnings(desired, live, namespace),
        blast_radius=blast_radius(desired, workspaces),
        managed_workspaces=len(managed),
    )


# --------------------------------------------------------------------------------------------
# Blast radius


_CONTAINER_FIELD = re.compile(
    r"^spec\.template\.spec\.(containers|initContainers)\[name=[^\]]*\](?:\.(\w+))?"
)
_VOLUME = re.compile(r"^spec\.template\.spec\.volumes\[name=([^\]]*)\]")
_MOUNT = re.compile(
    r"^spec\.template\.spec\.(?:containers|initContainers)\[name=[^\]]*\]\.volumeMounts\[mountPath=([^\]]*)\]"
)
_ENVIRONMENT_FIELDS = frozenset(
    {
        "image",
        "args",
        "command",
        "env",
        "envFrom",
        "ports",
        "readinessProbe",
        "livenessProbe",
        "startupProbe",
        "workingDir",
    }
)


def _data_source_maps(w: DesiredWorkspace, change: ObjectChange) -> tuple[dict[str, str], dict[str, str]]:
    """Volume name -> data source, and mountPath -> data source, from the desired and live Deployment."""
    by_claim = dict(zip(w.pvcs, w.data_sources, strict=True)) if len(w.pvcs) == len(w.data_sources) else {}
    volumes: dict[str, str] = {}
    mounts: dict[str, str] = {}
    for obj in (change.desired, change.live):
        pod = _pod_spec(obj)
        for vol in pod.get("volumes") or ():
            claim = str((vol.get("persistentVolumeClaim") or {}).get("claimName"))
            ds = by_claim.get(claim) or (vol.get("name") if vol.get("name") in w.data_sources else None)
            if ds:
                volumes.setdefault(vol["name"], ds)
        for container in (*(pod.get("containers") or ()), *(pod.get("initContainers") or ())):
            for vm in container.get("volumeMounts") or ():
                ds = volumes.get(vm.get("name", ""))
                if ds:
                    mounts.setdefault(vm.get("mountPath", ""), ds)
    return volumes, mounts


def _touched_blocks(w: DesiredWorkspace, change: ObjectChange) -> set[tuple[BlockKind, str]]:
    touched: set[tuple[BlockKind, str]] = set()
    volumes: dict[str, str] | None = None
    mounts: dict[str, str] = {}
    for d in change.diff:
        vm = _MOUNT.match(d.path) or _VOLUME.match(d.path)
        if vm is not None:
            if volumes is None:
                volumes, mounts = _data_source_maps(w, change)
            ds = (mounts if "volumeMounts" in d.path else volumes).get(vm.group(1))
            if ds:
                touched.add(("data source", ds))
            continue
        cm = _CONTAINER_FIELD.match(d.path)
        if cm is None:
            continue
        kind, fld = cm.group(1), cm.group(2) or ""
        if kind == "containers" and fld == "resources":
            touched.add(("compute", w.compute))
        elif (kind == "containers" and (fld in _ENVIRONMENT_FIELDS or not fld)) or (
            kind == "initContainers" and fld == "image"
        ):
            touched.add(("environment", w.environment))
    return touched


def blast_radius(
    desired: Sequence[DesiredWorkspace], workspaces: Sequence[WorkspacePlan]
) -> list[BlockImpact]:
    """Blocks that changed, each with the running workspaces whose pods restart because of it.

    A block counts as changed when every existing workspace that uses it has diffs under the
    fields it controls: one workspace switching to another block is its own change, not the block's.
    """
    by_name = {wp.name: wp for wp in workspaces}
    users: dict[tuple[BlockKind, str], list[str]] = {}
    touched_by: dict[str, set[tuple[BlockKind, str]]] = {}
    for w in desired:
        wp = by_name.get(w.name)
        if wp is None or wp.action not in (Action.UPDATE, Action.UNCHANGED):
            continue
        blocks: list[tuple[BlockKind, str]] = [
            ("environment", w.environment),
            ("compute", w.compute),
            *(("data source", d) for d in w.data_sources),
        ]
        for block in blocks:
            users.setdefault(block, []).append(w.name)
        dep = next((c for c in wp.objects if c.id.kind == "Deployment" and c.action is Action.UPDATE), None)
        touched_by[w.name] = _touched_blocks(w, dep) if dep is not None else set()

    order: dict[BlockKind, int] = {"environment": 0, "compute": 1, "data source": 2}
    impacts: list[BlockImpact] = []
    for (kind, name), names in sorted(users.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
        if all((kind, name) in touched_by[n] for n in names):
            restarting = sorted(n for n in names if by_name[n].restarts)
            impacts.append(BlockImpact(kind, name, restarting))
    return impacts


# --------------------------------------------------------------------------------------------
# Capacity


def capacity_warnings(desired: Sequence[DesiredWorkspace], live: LiveState, namespace: str) -> list[str]:
    """Why a running workspace could not be scheduled: a missing or unbound PVC, too few GPUs on any node."""
    running = sorted((w for w in desired if w.state == "running"), key=lambda w: w.name)
    notes: list[str] = []
    per_workspace: list[str] = []
    if live.pvcs is None:
        if any(w.pvcs for w in running):
            notes.append("PVCs could not be listed (no permission?): PVC existence and binding not checked")
    else:
        for w in running:
            for claim in w.pvcs:
                phase = live.pvcs.get(claim)
                if phase is None:
                    per_workspace.append(
                        f"{w.name}: PVC {claim} does not exist in namespace {namespace}; "
                        "the pod cannot start until it is created (the reconciler never creates PVCs)"
                    )
                elif phase != "Bound":
                    per_workspace.append(
                        f"{w.name}: PVC {claim} is {phase}, not Bound; the pod stays Pending until it binds "
                        "(a claim whose storage class waits for its first consumer binds "
                        "when the pod is scheduled)"
                    )
    gpu_users = [w for w in running if w.gpu > 0]
    if gpu_users:
        if live.node_gpus is None:
            notes.append("nodes could not be listed (no permission?): GPU capacity not checked")
        else:
            largest = max(live.node_gpus, default=0)
            for w in gpu_users:
                if w.gpu > largest:
                    per_workspace.append(
                        f"{w.name}: requests {w.gpu} GPU(s) but no node has that many allocatable "
                        f"nvidia.com/gpu (largest: {largest}); the pod would stay Pending"
                    )
    return notes + sorted(per_workspace)


# --------------------------------------------------------------------------------------------
# Safety


def check(plan: Plan, opts: PlanOptions) -> None:
    """Refuse conflicts without --adopt and mass deletes without --allow-mass-delete (PlanRefused)."""
    conflicts = plan.conflicts
    if conflicts and not opts.adopt:
        raise PlanRefused(
            "; ".join(f"{c.id} exists and is not managed by {MANAGED_BY}" for c in conflicts)
            + "; rerun with --adopt to take "
            + ("it" if len(conflicts) == 1 else "them")
            + " over"
        )
    if opts.allow_mass_delete:
        return
    deletes = len(plan.deletes)
    if deletes > opts.max_deletes:
        raise PlanRefused(
            f"the plan deletes {deletes} workspaces, more than --max-deletes {opts.max_deletes}; "
            "rerun with --allow-mass-delete if that is intended"
        )
    if deletes >= 2 and deletes >= plan.managed_workspaces:
        raise PlanRefused(
            f"the plan deletes every managed workspace ({deletes} of {plan.managed_workspaces}); "
            "rerun with --allow-mass-delete if that is intended"
        )
