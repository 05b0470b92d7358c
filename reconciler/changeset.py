"""The change set: what the plan decides per workspace and object, and what apply and status report. Pure data.

Every layer above speaks these types: the plan makes a `Plan`, impact annotates it, the cluster
module applies it and returns `WorkspaceResult`s, readiness makes `StatusRow`s, report renders all.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from reconciler.diff import FieldDiff
from reconciler.render import LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_PART_OF

# The order in which a workspace's objects are deleted: entry point first, data path last.
DELETE_ORDER = ("Ingress", "Service", "Deployment")


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


PLAN_LABELS = (LABEL_MANAGED_BY, LABEL_PART_OF, LABEL_INSTANCE)
"""The labels the plan sorts live objects by: whose they are, and which workspace they belong to."""


_Labels = tuple[str | None, ...]
CompactEntry = tuple[ObjectId, tuple[_Labels, bytes, tuple[str, ...]]]


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class CompactObjects(Mapping[ObjectId, dict[str, Any]]):
    """Live objects kept as compact JSON text and decoded when looked up: a fresh dict each time, which
    the plan drops once compared unless it changes. 15,000 Deployments, Services and Ingresses take
    26 MB this way instead of about 170 MB as dicts (bench/RUN_NOTES.md).

    Only `PLAN_LABELS` stay decoded. Each managedFields entry's `fieldsV1` (the bulk of an object)
    is kept apart as interned text: objects of the same shape (every workspace of an environment)
    record the same set, which is then kept once."""

    def __init__(self) -> None:
        self._kept: dict[ObjectId, tuple[_Labels, bytes, tuple[str, ...]]] = {}

    @staticmethod
    def entry(oid: ObjectId, obj: Mapping[str, Any]) -> CompactEntry:
        """What `put` keeps of `obj`: a LIST page holds these, not the decoded objects, until it is done."""
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        # Interned: a workspace's three objects, and every object's managed-by, share one string.
        kept_labels = tuple(sys.intern(v) if isinstance(v := labels.get(k), str) else None for k in PLAN_LABELS)
        managed = meta.get("managedFields") or []
        fields = tuple(sys.intern(_json(m.get("fieldsV1"))) for m in managed)
        if managed:
            obj = {**obj, "metadata": {**meta, "managedFields": [
                {k: v for k, v in m.items() if k != "fieldsV1"} for m in managed]}}
        return oid, (kept_labels, _json(obj).encode(), fields)

    def put(self, entry: CompactEntry) -> None:
        self._kept[entry[0]] = entry[1]

    def add(self, oid: ObjectId, obj: Mapping[str, Any]) -> None:
        self.put(self.entry(oid, obj))

    def labels(self, oid: ObjectId) -> dict[str, str]:
        """The object's `PLAN_LABELS` it has (without decoding it)."""
        return {k: v for k, v in zip(PLAN_LABELS, self._kept[oid][0], strict=True) if v is not None}

    def __getitem__(self, oid: ObjectId) -> dict[str, Any]:
        _, text, fields = self._kept[oid]
        decoded: dict[str, Any] = json.loads(text)
        for m, f in zip((decoded.get("metadata") or {}).get("managedFields") or (), fields, strict=True):
            if (value := json.loads(f)) is not None:
                m["fieldsV1"] = value
        return decoded

    def __iter__(self) -> Iterator[ObjectId]:
        return iter(self._kept)

    def __len__(self) -> int:
        return len(self._kept)


@dataclass
class LiveState:
    """Everything the plan reads from the cluster, fetched before planning."""

    # Every Deployment/Service/Ingress of ours in the namespace, and others' the plan needs (a plain
    # dict, or `CompactObjects` as the cluster module reads them).
    objects: Mapping[ObjectId, dict[str, Any]]
    pvcs: dict[str, str] | None  # claim name -> phase; None = could not list
    node_gpus: list[int] | None  # allocatable nvidia.com/gpu per node; None = could not list
    node_labels: list[dict[str, str]] | None = None  # labels per node, in node_gpus' order; None = unknown

    def labels(self, oid: ObjectId) -> Mapping[str, Any]:
        """The labels of live object `oid` (for `CompactObjects`, only `PLAN_LABELS`, without decoding it)."""
        if isinstance(self.objects, CompactObjects):
            return self.objects.labels(oid)
        return (self.objects[oid].get("metadata") or {}).get("labels") or {}


@dataclass(frozen=True)
class Scope:
    """Which workspaces a run plans (`reconcile --since REV`): those whose files changed since REV.

    ``names`` None: every workspace (``reason`` says why, e.g. a block changed). Otherwise only
    ``names`` are rendered, read and planned (a deleted file's name too); ``outside`` workspaces of
    the repo are neither read nor planned (the drift check compares them all).
    """

    since: str
    names: frozenset[str] | None
    outside: int = 0
    reason: str = ""


@dataclass
class PlanOptions:
    """The plan's options, passed whole (the CLI's --adopt, --allow-mass-delete, --max-deletes)."""

    adopt: bool = False  # bare --adopt: take over every workspace's foreign objects
    allow_mass_delete: bool = False
    max_deletes: int = 5
    adopt_workspaces: frozenset[str] = frozenset()  # --adopt WORKSPACE: only these workspaces' objects


Body = dict[str, Any] | bytes | None
"""An object's body as a change keeps it: a dict, its compact JSON (`compact`), or none."""


def compact(obj: Mapping[str, Any] | None) -> bytes | None:
    """`obj` as compact JSON: about a fifth of the memory of the dict (`ObjectChange` decodes it when read)."""
    return None if obj is None else _json(obj).encode()


def _decoded(body: Body) -> dict[str, Any] | None:
    if isinstance(body, bytes):
        decoded: dict[str, Any] = json.loads(body)
        return decoded
    return body


class ObjectChange:
    """What the plan does to one object.

    ``desired`` is exactly what apply sends and ``live`` what was read, so neither is masked:
    never print them; reports use ``diff``, whose secret-looking values are masked. Either may be
    kept as compact JSON (`compact`) and is then decoded, afresh, each time it is read.
    """

    __slots__ = ("id", "action", "diff", "_desired", "_live")

    def __init__(self, id: ObjectId, action: Action, diff: list[FieldDiff], desired: Body, live: Body) -> None:
        self.id = id
        self.action = action
        self.diff = diff
        self._desired = desired
        self._live = live

    @property
    def desired(self) -> dict[str, Any] | None:
        return _decoded(self._desired)

    @property
    def live(self) -> dict[str, Any] | None:
        return _decoded(self._live)

    def _key(self) -> tuple[Any, ...]:
        return self.id, self.action, self.diff, self.desired, self.live

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectChange) and self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaces

    def __repr__(self) -> str:
        return f"ObjectChange({self.id}, {self.action.value}, {len(self.diff)} field diff(s))"


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
    credential_hint_powershell: str = ""  # credential_hint for Windows PowerShell

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
    scope: Scope | None = None  # --since: which workspaces were planned (None: every one, no --since)

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
    credential_hint_powershell: str = ""
    last_active: str = ""  # ISO 8601 UTC, from the IDE; "" when unknown or not running
