"""Where and with what a workspace pod runs: scheduler, node pool, GPU fraction, /dev/shm. Pure.

A compute block asks, project.yaml says how the cluster provides: `scheduler: runai` gives pods
`schedulerName: runai-scheduler` and lets a compute block ask for a fraction of a GPU, rendered as
the Run:ai documentation says third-party workloads request one (the `gpu-fraction` pod annotation,
no `nvidia.com/gpu` limit); `nodePools` name node selectors and tolerations that a compute block
picks with `nodePool`; `shm` sizes a memory-backed /dev/shm.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from reconciler.fields import parse_quantity
from reconciler.models import ComputeResource, Project

RUNAI_SCHEDULER = "runai-scheduler"
GPU_FRACTION_ANNOTATION = "gpu-fraction"
SHM_VOLUME = "dshm"
SHM_PATH = "/dev/shm"


def is_fraction(gpu: int | float) -> bool:
    """True for a fraction of one GPU (0 < gpu < 1)."""
    return 0 < gpu < 1


def whole_gpus(gpu: int | float) -> int:
    """The GPUs a node must have for the request: a fraction still needs one whole GPU on the node."""
    return math.ceil(gpu)


def gpu_text(gpu: int | float | Decimal) -> str:
    """`0.5` -> "0.5", `2` -> "2": the annotation's value and what messages print."""
    return format(Decimal(str(gpu)).normalize(), "f")


def memory_with_shm(compute: ComputeResource) -> Decimal:
    """The memory a workspace counts against the quota: its container's memory plus /dev/shm."""
    memory = parse_quantity(compute.spec.memory)
    return memory + (parse_quantity(compute.spec.shm) if compute.spec.shm else Decimal(0))


def pod_annotations(project: Project, compute: ComputeResource) -> dict[str, str]:
    """The pod template's annotations: the GPU fraction on a Run:ai cluster."""
    if project.spec.scheduler == "runai" and is_fraction(compute.spec.gpu):
        return {GPU_FRACTION_ANNOTATION: gpu_text(compute.spec.gpu)}
    return {}


def place(pod: dict[str, Any], container: dict[str, Any], project: Project, compute: ComputeResource) -> None:
    """Add scheduler, node pool and /dev/shm to a rendered pod spec and its workspace container."""
    if project.spec.scheduler == "runai":
        pod["schedulerName"] = RUNAI_SCHEDULER
    pool = project.spec.node_pools.get(compute.spec.node_pool or "")
    if pool is not None:
        if pool.node_selector:
            pod["nodeSelector"] = dict(sorted(pool.node_selector.items()))
        if pool.tolerations:
            pod["tolerations"] = [t.model_dump(exclude_none=True) for t in pool.tolerations]
    if compute.spec.shm:
        container.setdefault("volumeMounts", []).append({"name": SHM_VOLUME, "mountPath": SHM_PATH})
        pod.setdefault("volumes", []).append(
            {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": compute.spec.shm}}
        )
