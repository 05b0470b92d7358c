"""What a plan means beyond its objects: blast radius, capacity, and the safety guards. Pure.

Blast radius: a block counts as changed when every existing workspace using it has diffs under
the fields it controls (compute: container resources; environment: image, args, command, env,
ports, probes, workingDir, the init container's image; data source: its volume and mounts), so
one workspace switching blocks is not reported as a block change.

Capacity: a running workspace whose PVC is missing or unbound, or that asks for more GPUs than
any node has, gets a warning. Safety: conflicts and mass deletes are refused (`check`), and a
workspace with a conflict is left alone with the reason (`conflict_refusals`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.changeset import (
    Action,
    BlockImpact,
    BlockKind,
    LiveState,
    ObjectChange,
    Plan,
    PlanOptions,
    WorkspacePlan,
)
from reconciler.errors import PlanRefused
from reconciler.extensions import CONTAINER_NAME as EXTENSIONS_CONTAINER
from reconciler.placement import SHM_PATH, SHM_VOLUME, gpu_text, whole_gpus
from reconciler.render import MANAGED_BY, DesiredWorkspace


def pod_spec(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The pod template's spec of a Deployment dict ({} when it has none)."""
    return ((obj or {}).get("spec") or {}).get("template", {}).get("spec") or {}


# --------------------------------------------------------------------------------------------
# Blast radius


_CONTAINER_FIELD = re.compile(
    r"^spec\.template\.spec\.(containers|initContainers)\[name=[^\]]*\](?:\.(\w+))?"
)
_VOLUME = re.compile(r"^spec\.template\.spec\.volumes\[name=([^\]]*)\]")
_MOUNT = re.compile(
    r"^spec\.template\.spec\.(?:containers|initContainers)\[name=[^\]]*\]\.volumeMounts\[mountPath=([^\]]*)\]"
)
# Pod-level fields a compute block controls: its node pool, the GPU fraction annotation, /dev/shm.
# (schedulerName is project.yaml's: a new scheduler is no compute block's change.)
_COMPUTE_POD_FIELD = re.compile(
    r"^spec\.template\.(?:spec\.(?:nodeSelector|tolerations)|metadata\.annotations)"
    rf"|^spec\.template\.spec\.volumes\[name={SHM_VOLUME}\]"
    rf"|^spec\.template\.spec\.containers\[name=[^\]]*\]\.volumeMounts\[mountPath={re.escape(SHM_PATH)}\]"
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
        pod = pod_spec(obj)
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
        if _COMPUTE_POD_FIELD.match(d.path):
            touched.add(("compute", w.compute))
            continue
        if d.path.startswith(f"spec.template.spec.initContainers[name={EXTENSIONS_CONTAINER}]"):
            touched.add(("environment", w.environment))  # the extensions list, or the image that installs them
            continue
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
    pooled = [w for w in running if w.node_pool]
    if gpu_users or pooled:
        if live.node_gpus is None:
            checked = "GPU capacity and node pools" if pooled else "GPU capacity"
            notes.append(f"nodes could not be listed (no permission?): {checked} not checked")
        else:
            per_workspace += _node_warnings(running, live)
    return notes + sorted(per_workspace)


def _node_warnings(running: Sequence[DesiredWorkspace], live: LiveState) -> list[str]:
    """A node pool that selects no node; a GPU request no node (of its pool) can fit."""
    gpus = live.node_gpus or []
    labels = live.node_labels if live.node_labels is not None and len(live.node_labels) == len(gpus) else None
    out: list[str] = []
    for w in running:
        selector = dict(w.node_selector)
        candidates = gpus
        where = "no node"
        if w.node_pool and labels is not None:
            candidates = [g for g, lab in zip(gpus, labels, strict=True)
                          if all(lab.get(k) == v for k, v in selector.items())]
            where = f"no node of node pool {w.node_pool}"
            if not candidates:
                out.append(f"{w.name}: no node matches node pool {w.node_pool} (nodeSelector "
                           f"{', '.join(f'{k}={v}' for k, v in sorted(selector.items()))}); "
                           "the pod would stay Pending")
                continue
        need = whole_gpus(w.gpu)
        if need > 0 and need > max(candidates, default=0):
            out.append(
                f"{w.name}: requests {gpu_text(w.gpu)} GPU(s) but {where} has that many allocatable "
                f"nvidia.com/gpu (largest: {max(candidates, default=0)}); the pod would stay Pending"
            )
    return out


def ingress_warnings(desired: Sequence[DesiredWorkspace]) -> list[str]:
    """The URLs say https: without a TLS secret the ingress serves its default certificate (browsers warn)."""
    if any(w.default_certificate for w in desired):
        return [
            "project.yaml sets no ingress.tlsSecret: the workspace URLs say https, but the ingress controller "
            "serves them with its default certificate, which browsers refuse unless it covers the domain"
        ]
    return []


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



def conflict_refusals(plan: Plan) -> dict[str, str]:
    """Why each workspace with a conflict (an object that is not ours) is left alone, by name."""
    return {
        w.name: f"{w.name} was left alone: "
        + "; ".join(f"{c.id} exists and is not managed by {MANAGED_BY}" for c in w.objects
                    if c.action is Action.CONFLICT)
        + f"; rerun with --adopt {w.name} to take it over"
        for w in plan.workspaces
        if w.action is Action.CONFLICT
    }
