"""What a workspace is on Run:ai (pure): the Run:ai workspace object `render_runai` makes of each workspace,
and the object the plan compares that a listed workload (and its GET) becomes (`live_object`).

Per workspace one object of kind `RunaiWorkspace`, whose ``spec`` is the body of
``POST /api/v1/workloads/workspaces`` (minus name and ids), built from the Kubernetes Deployment `render`
makes, so args, env, working directory and mounts mean the same; its ``desiredPhase`` is the file's state;
its annotations carry ``workspace-gitops/spec-hash``, a hash of the spec."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
from collections.abc import Collection
from typing import Any

from reconciler.fields import parse_quantity
from reconciler.models import Repo
from reconciler.placement import is_fraction
from reconciler.render import (
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_PART_OF,
    MANAGED_BY,
    DesiredWorkspace,
    render,
)

KIND = "RunaiWorkspace"
API_VERSION = "run.ai/v1"
ANNOTATION_MANAGED_BY = "workspace-gitops/managed-by"
ANNOTATION_SPEC_HASH = "workspace-gitops/spec-hash"
ANNOTATION_SOURCE = "workspace-gitops/source"
TOOLS = {"jupyterlab": ("jupyter-notebook", "Jupyter"), "vscode": ("visual-studio-code", "VS Code")}
"""Run:ai's tool type and the CONNECT button's label, per environment tool."""
STOPPED_PHASES = frozenset({"Stopped", "Stopping"})


# --------------------------------------------------------------------------------------------
# render (pure)


def render_runai(repo: Repo, only: Collection[str] | None = None) -> list[DesiredWorkspace]:
    """Every workspace of a validated repo (or those named in `only`) as one Run:ai workspace object, sorted by name."""
    return [_runai_workspace(repo, w) for w in render(repo, only)]


def _runai_workspace(repo: Repo, w: DesiredWorkspace) -> DesiredWorkspace:
    project = repo.project
    assert project.spec.runai is not None, "validate: backend runai needs spec.runai"
    runai_project = project.spec.runai.project
    deployment = w.objects[0]
    compute = repo.compute[w.compute].spec
    spec = workspace_spec(deployment, w.tool, float(compute.gpu) if is_fraction(compute.gpu) else None,
                          compute.node_pool or "")
    digest = spec_hash(spec)
    spec["annotations"] = [
        {"name": ANNOTATION_MANAGED_BY, "value": MANAGED_BY},
        {"name": ANNOTATION_SPEC_HASH, "value": digest},
        {"name": ANNOTATION_SOURCE, "value": w.source},
    ]
    obj = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": w.name,
            "namespace": runai_project,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_PART_OF: project.name, LABEL_INSTANCE: w.name},
            "annotations": {ANNOTATION_SPEC_HASH: digest, ANNOTATION_SOURCE: w.source},
        },
        "spec": spec,
        "desiredPhase": "Running" if w.state == "running" else "Stopped",
    }
    credentials = repo.environments[w.environment].spec.credentials
    hint = credential_hint(runai_project, w.name, credentials.file, credentials.log_pattern)
    return dataclasses.replace(w, url="", credential_hint=hint, objects=(obj,))


def workspace_spec(deployment: dict[str, Any], tool: str, gpu_portion: float | None = None,
                   node_pool: str = "") -> dict[str, Any]:
    """The Run:ai workspace spec (WorkspaceSpecSpec, camelCase) of a rendered Deployment."""
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    limits = container["resources"]["limits"]
    compute: dict[str, Any] = {
        "cpuCoreRequest": float(parse_quantity(str(limits["cpu"]))),
        "cpuCoreLimit": float(parse_quantity(str(limits["cpu"]))),
        "cpuMemoryRequest": str(limits["memory"]),
        "cpuMemoryLimit": str(limits["memory"]),
    }
    gpus = int(limits.get("nvidia.com/gpu", 0))
    if gpus:
        compute["gpuDevicesRequest"] = gpus
    elif gpu_portion is not None:  # a GPU fraction: one device, that portion of it
        compute.update(gpuDevicesRequest=1, gpuRequestType="portion", gpuPortionRequest=gpu_portion)
    port = container["ports"][0]["containerPort"]
    tool_type, tool_name = TOOLS[tool]
    spec: dict[str, Any] = {"image": container["image"], "compute": compute}
    if container.get("args"):
        # A list here, so the diff compares and masks it item by item as for Kubernetes;
        # `api_spec` joins it into the one string Run:ai takes.
        spec["args"] = list(container["args"])
    if container.get("env"):
        spec["environmentVariables"] = [{"name": e["name"], "value": e["value"]} for e in container["env"]]
    if container.get("workingDir"):
        spec["workingDir"] = container["workingDir"]
    volumes = pod.get("volumes") or ()
    if any((v.get("emptyDir") or {}).get("medium") == "Memory" for v in volumes):
        compute["largeShmRequest"] = True  # a compute block's shm: Run:ai sizes /dev/shm itself
    claims = {v["name"]: v["persistentVolumeClaim"] for v in volumes if "persistentVolumeClaim" in v}
    pvcs = [
        {
            "name": m["name"],
            "claimName": claims[m["name"]]["claimName"],
            "path": m["mountPath"],
            "existingPvc": True,
            "readOnly": bool(m.get("readOnly", False)),
        }
        for m in container.get("volumeMounts") or ()
        # Run:ai mounts a claim whole: the home kept in a sub-folder is not carried over.
        if m["name"] in claims and not m.get("subPath")
    ]
    if pvcs:
        spec["storage"] = {"pvc": pvcs}
    if node_pool:
        spec["nodePools"] = [node_pool]  # a Run:ai node pool of that name
    spec["exposedUrls"] = [{"container": port, "toolType": tool_type, "toolName": tool_name}]
    return spec


def api_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as Run:ai takes it: `args` as one shell-quoted string."""
    if isinstance(spec.get("args"), list):
        return {**spec, "args": shlex.join(spec["args"])}
    return spec


def _split_args(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as the plan compares it: Run:ai's `args` string as a list."""
    args = spec.get("args")
    if not isinstance(args, str):
        return spec
    try:
        return {**spec, "args": shlex.split(args)}
    except ValueError:  # unbalanced quotes: not ours; compared whole
        return {**spec, "args": [args]}


def spec_hash(spec: dict[str, Any]) -> str:
    """A short hash of a spec without its annotations: equal hashes, nothing to recreate."""
    body = {k: v for k, v in spec.items() if k != "annotations"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def credential_hint(runai_project: str, name: str, file: str | None, log_pattern: str | None) -> str:
    """The seed's `runai workspace exec|logs` command that prints the password or token (never the secret)."""
    if file is not None:
        return f"runai workspace exec {name} -p {runai_project} -- cat {file}"
    return f'runai workspace logs {name} -p {runai_project} | grep "{log_pattern}"'


def powershell_hint(hint: str) -> str:
    """The same command for PowerShell (`Select-String` for grep)."""
    if " | grep " in hint:
        command, pattern = hint.rsplit(" | grep ", 1)
        return f"{command} | Select-String -SimpleMatch {pattern}"  # the pattern keeps its quotes
    return hint


# --------------------------------------------------------------------------------------------
# the live objects, as the plan reads them (pure)


def live_object(workload: dict[str, Any], workspace: dict[str, Any] | None, project: str,
                runai_project: str) -> dict[str, Any]:
    """A listed workload (and, for a workspace, its GET) in the shape the plan compares."""
    spec = _split_args((workspace or {}).get("spec") or {})
    annotations = {a.get("name"): a.get("value") for a in spec.get("annotations") or () if isinstance(a, dict)}
    name = str(workload.get("name", ""))
    labels = (
        {LABEL_MANAGED_BY: MANAGED_BY, LABEL_PART_OF: project, LABEL_INSTANCE: name}
        if annotations.get(ANNOTATION_MANAGED_BY) == MANAGED_BY
        else {}
    )
    kept = {k: str(annotations[k]) for k in (ANNOTATION_SPEC_HASH, ANNOTATION_SOURCE) if annotations.get(k)}
    desired_phase = (workspace or {}).get("desiredPhase") or (
        "Stopped" if workload.get("phase") in STOPPED_PHASES else "Running"
    )
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": runai_project, "uid": str(workload.get("id", "")),
                     "labels": labels, "annotations": kept},
        "spec": spec,
        "desiredPhase": desired_phase,
        "status": {"phase": workload.get("phase", ""), "type": workload.get("type", ""),
                   "urls": list(workload.get("urls") or ()), "phaseMessage": workload.get("phaseMessage") or ""},
    }
