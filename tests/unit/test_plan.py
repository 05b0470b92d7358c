"""The pure plan: desired workspaces against live objects recorded from a real API server (tests/data/plan/live/)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from reconciler.diff import comparable_quantity as parse_quantity
from reconciler.errors import PlanRefused
from reconciler.plan import (
    Action,
    BlockImpact,
    FieldDiff,
    LiveState,
    ObjectId,
    Plan,
    PlanOptions,
    check,
    compute_plan,
    conflict_refusals,
    diff_object,
    mask,
    owned_fields,
)
from reconciler.render import (
    ANNOTATION_COMMIT,
    ANNOTATION_SOURCE,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_PART_OF,
    MANAGED_BY,
    DesiredWorkspace,
)
from reconciler.report import plan_json, plan_text

PROJECT = "sample-project"
NS = "sample-project"
DOMAIN = "runai.aisingapore.net"
SECRET_VALUE = "hf_s3cr3t_d0_n0t_l34k"
CONTAINER = "spec.template.spec.containers[name=workspace]"
CONFIG_FILE = "/home/coder/.config/code-server/config.yaml"


# ---------------------------------------------------------------------------------------------
# Desired objects, shaped like render.py's output


@dataclass(frozen=True)
class Ds:
    """A data source block as the tests need it."""

    name: str
    pvc: str
    mount: str
    read_only: bool = False


PVC_DS = Ds("sample-project-pvc", "sample-project-pvc", "/sample-project-pvc")
SCRATCH_DS = Ds("scratch", "scratch-pvc", "/scratch")


def workspace(
    name: str = "jane-doe-vscode",
    owner: str = "jane-doe",
    *,
    environment: str = "aisg-vscode-server-v4-16-1",
    image: str = "registry.example.org/mlops/vscode-server:4.16.1",
    compute: str = "cpu-mid",
    cpu: str = "4",
    memory: str = "16Gi",
    gpu: int = 0,
    env: dict[str, str] | None = None,
    data_sources: tuple[Ds, ...] = (PVC_DS,),
    state: str = "running",
    commit: str | None = "1111111111111111111111111111111111111111",
    tool: str = "vscode",
    port: int = 8080,
) -> DesiredWorkspace:
    """A DesiredWorkspace with its Deployment, Service and Ingress."""
    labels = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PART_OF: PROJECT,
        LABEL_INSTANCE: name,
        LABEL_NAME: tool,
    }
    annotations = {ANNOTATION_SOURCE: f"workspaces/{name}.yaml"}
    if commit:
        annotations[ANNOTATION_COMMIT] = commit

    def meta() -> dict[str, Any]:
        return {"name": name, "namespace": NS, "labels": dict(labels), "annotations": dict(annotations)}

    limits: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpu:
        limits["nvidia.com/gpu"] = str(gpu)
    workdir = f"{data_sources[0].mount}/workspaces/{owner}" if data_sources else None
    mounts = [{"name": d.name, "mountPath": d.mount, "readOnly": d.read_only} for d in data_sources]
    security = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container: dict[str, Any] = {
        "name": "workspace",
        "image": image,
        "args": ["--bind-addr", f"0.0.0.0:{port}", "--auth", "password"],
    }
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    if workdir:
        container["workingDir"] = workdir
    container["ports"] = [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    container["resources"] = {"requests": dict(limits), "limits": dict(limits)}
    if mounts:
        container["volumeMounts"] = mounts
    container["readinessProbe"] = {"tcpSocket": {"port": port}, "periodSeconds": 5}
    container["securityContext"] = security
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "fsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if workdir:
        pod_spec["initContainers"] = [
            {
                "name": "init-workdir",
                "image": image,
                "command": ["mkdir", "-p", workdir],
                "resources": {
                    "requests": {"cpu": "100m", "memory": "64Mi"},
                    "limits": {"cpu": "100m", "memory": "64Mi"},
                },
                "volumeMounts": [dict(m) for m in mounts],
                "securityContext": dict(security),
            }
        ]
    pod_spec["containers"] = [container]
    if data_sources:
        pod_spec["volumes"] = [
            {"name": d.name, "persistentVolumeClaim": {"claimName": d.pvc, "readOnly": d.read_only}}
            for d in data_sources
        ]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(),
        "spec": {
            "replicas": 1 if state == "running" else 0,
            "strategy": {"type": "Recreate"},
            "selector": {
                "matchLabels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_PART_OF: PROJECT, LABEL_INSTANCE: name}
            },
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(),
        "spec": {
            "type": "ClusterIP",
            "selector": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_PART_OF: PROJECT, LABEL_INSTANCE: name},
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    host = f"{PROJECT}-{name}.{DOMAIN}"
    ingress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta(),
        "spec": {
            "rules": [
                {
                    "host": host,
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": name, "port": {"number": port}}},
                            }
                        ]
                    },
                }
            ]
        },
    }
    return DesiredWorkspace(
        name=name,
        owner=owner,
        environment=environment,
        compute=compute,
        data_sources=tuple(d.name for d in data_sources),
        pvcs=tuple(d.pvc for d in data_sources),
        gpu=gpu,
        tool=tool,
        state=state,
        url=f"https://{host}" + ("/lab" if tool == "jupyterlab" else ""),
        credential_hint=f"kubectl -n {NS} exec deploy/{name} -- cat {CONFIG_FILE}",
        source=f"workspaces/{name}.yaml",
        objects=(deployment, service, ingress),
    )


# ---------------------------------------------------------------------------------------------
# Live objects, shaped like what the API server returns after our server-side apply

# What the API server records for workspace() rendered with env {"A": "1"}: written by hand,
# following the real fieldsV1 format (k:{...} keys carry the whole merge key, protocol included).
HANDWRITTEN_DEPLOYMENT_FIELDS = json.loads(
    r"""
{"f:metadata": {
   "f:annotations": {"f:workspace-gitops.io/commit": {}, "f:workspace-gitops.io/source": {}},
   "f:labels": {"f:app.kubernetes.io/instance": {}, "f:app.kubernetes.io/managed-by": {},
                "f:app.kubernetes.io/name": {}, "f:app.kubernetes.io/part-of": {}}},
 "f:spec": {
   "f:replicas": {},
   "f:selector": {},
   "f:strategy": {"f:type": {}},
   "f:template": {
     "f:metadata": {"f:labels": {"f:app.kubernetes.io/instance": {}, "f:app.kubernetes.io/managed-by": {},
                                 "f:app.kubernetes.io/name": {}, "f:app.kubernetes.io/part-of": {}}},
     "f:spec": {
       "f:automountServiceAccountToken": {},
       "f:containers": {
         "k:{\"name\":\"workspace\"}": {
           ".": {},
           "f:args": {},
           "f:env": {"k:{\"name\":\"A\"}": {".": {}, "f:name": {}, "f:value": {}}},
           "f:image": {},
           "f:name": {},
           "f:ports": {"k:{\"containerPort\":8080,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {},
                                                                            "f:name": {}, "f:protocol": {}}},
           "f:readinessProbe": {"f:periodSeconds": {}, "f:tcpSocket": {"f:port": {}}},
           "f:resources": {"f:limits": {"f:cpu": {}, "f:memory": {}},
                           "f:requests": {"f:cpu": {}, "f:memory": {}}},
           "f:securityContext": {"f:allowPrivilegeEscalation": {}, "f:capabilities": {"f:drop": {}},
                                 "f:runAsNonRoot": {}, "f:seccompProfile": {"f:type": {}}},
           "f:volumeMounts": {"k:{\"mountPath\":\"/sample-project-pvc\"}": {".": {}, "f:mountPath": {},
                                                                            "f:name": {}, "f:readOnly": {}}},
           "f:workingDir": {}}},
       "f:enableServiceLinks": {},
       "f:initContainers": {
         "k:{\"name\":\"init-workdir\"}": {
           ".": {},
           "f:command": {},
           "f:image": {},
           "f:name": {},
           "f:resources": {"f:limits": {"f:cpu": {}, "f:memory": {}},
                           "f:requests": {"f:cpu": {}, "f:memory": {}}},
           "f:securityContext": {"f:allowPrivilegeEscalation": {}, "f:capabilities": {"f:drop": {}},
                                 "f:runAsNonRoot": {}, "f:seccompProfile": {"f:type": {}}},
           "f:volumeMounts": {"k:{\"mountPath\":\"/sample-project-pvc\"}": {
             ".": {}, "f:mountPath": {}, "f:name": {}, "f:readOnly": {}}}}},
       "f:securityContext": {"f:fsGroup": {}, "f:runAsNonRoot": {}, "f:runAsUser": {},
                             "f:seccompProfile": {"f:type": {}}},
       "f:volumes": {"k:{\"name\":\"sample-project-pvc\"}": {
         ".": {}, "f:name": {}, "f:persistentVolumeClaim": {"f:claimName": {}, "f:readOnly": {}}}}}}}}
"""
)

_LIST_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}
_ATOMIC = {"selector", "args", "command", "drop", "rules"}


def fields_v1(value: dict[str, Any], key: str = "") -> dict[str, Any]:
    """The fieldsV1 set the API server records for an applied object (the subset of the format we use)."""
    out: dict[str, Any] = {}
    for k, v in value.items():
        if (not key and k in ("apiVersion", "kind")) or (key == "metadata" and k in ("name", "namespace")):
            continue
        if k in _ATOMIC or not isinstance(v, dict | list):
            out[f"f:{k}"] = {}
        elif isinstance(v, dict):
            out[f"f:{k}"] = fields_v1(v, k)
        else:
            items: dict[str, Any] = {}
            for item in v:
                if k == "ports":
                    ik = (
                        {"containerPort": item["containerPort"], "protocol": item.get("protocol", "TCP")}
                        if "containerPort" in item
                        else {"port": item["port"], "protocol": item.get("protocol", "TCP")}
                    )
                else:
                    ik = {_LIST_KEYS[k]: item[_LIST_KEYS[k]]}
                items["k:" + json.dumps(ik, separators=(",", ":"))] = {".": {}, **fields_v1(item, k)}
            out[f"f:{k}"] = items
    return out


LIVE_DIR = Path(__file__).resolve().parents[1] / "data" / "plan" / "live"
# Set by tests/e2e/test_reconcile.py's re-recording test: {"kubeconfig", "namespace", "out"}.
_RECORDING = json.loads(os.environ.get("PLAN_LIVE_RECORD") or "null")


def recorded(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` as a real API server returned it after our server-side apply (tests/data/plan/live/)."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    name = f"{obj['kind']}-{digest[:16]}.json"
    if _RECORDING is not None:
        from tests.e2e.helpers import record_applied

        live = record_applied(Path(_RECORDING["kubeconfig"]), _RECORDING["namespace"], obj)
        (Path(_RECORDING["out"]) / name).write_text(json.dumps(live, indent=1, sort_keys=True) + "\n")
        return live
    path = LIVE_DIR / name
    if not path.exists():
        pytest.fail(f"no recorded live object {name} for this {obj['kind']}: record it with "
                    "RECORD_LIVE=1 pytest tests/e2e/test_reconcile.py -k recorded_live_objects")
    live: dict[str, Any] = json.loads(path.read_text())
    return live


def applied(obj: dict[str, Any], *, quantities: dict[str, str] | None = None) -> dict[str, Any]:
    """``obj`` as the API server returns it after our server-side apply (recorded), plus what controllers add."""
    live = copy.deepcopy(recorded(obj))
    meta = live["metadata"]
    if live["kind"] == "Deployment":
        # The Deployment controller's doing (not recorded: a dry run runs no controller).
        meta["annotations"]["deployment.kubernetes.io/revision"] = "1"
        meta["managedFields"].append(
            {
                "manager": "kube-controller-manager",
                "operation": "Update",
                "subresource": "status",
                "apiVersion": "apps/v1",
                "time": "2024-05-01T08:00:05Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:status": {"f:replicas": {}}, "f:metadata": {"f:annotations": {".": {}}}},
            }
        )
        if quantities:
            for c in live["spec"]["template"]["spec"]["containers"]:
                for section in ("requests", "limits"):
                    c["resources"][section].update(quantities)
        live["status"] = {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "observedGeneration": 1}
    else:
        live["status"] = {"loadBalancer": {}}
    return live


def live_of(*workspaces: DesiredWorkspace, pvcs: dict[str, str] | None = None) -> LiveState:
    """The live state right after applying these workspaces (all PVCs Bound, one 8-GPU node)."""
    objects = {oid(o): applied(o) for w in workspaces for o in w.objects}
    claims = {c: "Bound" for w in workspaces for c in w.pvcs}
    return LiveState(objects=objects, pvcs=claims if pvcs is None else pvcs, node_gpus=[0, 8])


def oid(obj: dict[str, Any]) -> ObjectId:
    """The identity of a desired object."""
    return ObjectId(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])


def plan_of(desired: list[DesiredWorkspace], live: LiveState, **opts: Any) -> Plan:
    """compute_plan for the test project."""
    return compute_plan(desired, live, PROJECT, NS, PlanOptions(**opts))


def deployment_change(plan: Plan, name: str) -> Any:
    """The Deployment's ObjectChange of workspace ``name``."""
    wp = next(w for w in plan.workspaces if w.name == name)
    return next(o for o in wp.objects if o.id.kind == "Deployment")


def paths(diff: list[FieldDiff]) -> list[str]:
    """The paths of a diff, in order."""
    return [d.path for d in diff]


# ---------------------------------------------------------------------------------------------
# Identity, options, quantities


def test_an_object_id_prints_as_kind_namespace_name() -> None:
    assert str(ObjectId("Service", "sample-project", "x")) == "Service/sample-project/x"
    assert sorted([ObjectId("Service", "a", "b"), ObjectId("Deployment", "a", "c")])[0].kind == "Deployment"


def test_actions_render_as_their_contract_spelling() -> None:
    assert [str(a) for a in Action] == ["create", "update", "delete", "unchanged", "conflict"]
    assert json.dumps({"a": Action.CONFLICT}) == '{"a": "conflict"}'


def test_plan_options_default_to_the_documented_safety_limits() -> None:
    assert PlanOptions() == PlanOptions(adopt=False, allow_mass_delete=False, max_deletes=5)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("1000m", "1"),
        ("1", 1),
        ("0.5", "500m"),
        ("16Gi", "17179869184"),
        ("1Ki", 1024),
        ("1e3", "1k"),
        ("2", 2.0),
    ],
)
def test_quantities_spelled_differently_are_the_same_number(a: str | int, b: str | int) -> None:
    assert parse_quantity(a) == parse_quantity(b)


def test_quantities_are_parsed_exactly_and_garbage_is_not_a_quantity() -> None:
    assert parse_quantity("100m") == Fraction(1, 10)
    assert parse_quantity("16Gi") == 16 * 2**30
    assert parse_quantity("lots") is None


# ---------------------------------------------------------------------------------------------
# The fixtures follow the real format


def test_the_fixture_managed_fields_match_the_handwritten_api_server_record() -> None:
    deployment = workspace(env={"A": "1"}).objects[0]
    assert fields_v1(deployment) == HANDWRITTEN_DEPLOYMENT_FIELDS


def test_only_our_apply_entries_count_as_owned_fields() -> None:
    live = applied(workspace().objects[0])
    assert owned_fields(live) == fields_v1(workspace().objects[0])
    live["metadata"]["managedFields"][0]["operation"] = "Update"
    assert owned_fields(live) is None


# ---------------------------------------------------------------------------------------------
# create / unchanged


def test_a_workspace_that_does_not_exist_is_created_with_its_three_objects() -> None:
    plan = plan_of([workspace()], LiveState({}, {"sample-project-pvc": "Bound"}, [0]))
    [wp] = plan.workspaces
    assert wp.action is Action.CREATE
    assert [(str(o.id), o.action, o.diff) for o in wp.objects] == [
        ("Deployment/sample-project/jane-doe-vscode", Action.CREATE, []),
        ("Service/sample-project/jane-doe-vscode", Action.CREATE, []),
        ("Ingress/sample-project/jane-doe-vscode", Action.CREATE, []),
    ]
    assert plan.summary() == {"create": 1, "update": 0, "delete": 0, "unchanged": 0, "conflict": 0}
    assert plan.has_changes
    assert wp.url == f"https://{PROJECT}-jane-doe-vscode.{DOMAIN}"


def test_a_freshly_applied_workspace_is_unchanged_despite_server_defaults() -> None:
    w = workspace(env={"A": "1"})
    plan = plan_of([w], live_of(w))
    [wp] = plan.workspaces
    assert wp.action is Action.UNCHANGED
    assert [o.diff for o in wp.objects] == [[], [], []]
    assert not plan.has_changes
    assert plan.summary()["unchanged"] == 1


def test_quantities_the_server_canonicalised_are_unchanged() -> None:
    w = workspace(cpu="1000m", memory="17179869184")
    live = live_of(w)
    for c in live.objects[oid(w.objects[0])]["spec"]["template"]["spec"]["containers"]:
        for section in ("requests", "limits"):
            c["resources"][section] = {"cpu": "1", "memory": "16Gi"}
    assert plan_of([w], live).workspaces[0].action is Action.UNCHANGED


def test_an_int_or_string_port_is_the_same_as_a_number_or_a_string() -> None:
    desired = {"spec": {"ports": [{"port": 8080, "targetPort": 8080}]}}
    live = {"spec": {"ports": [{"port": 8080, "targetPort": "8080", "protocol": "TCP"}]}}
    assert diff_object(desired, live, None) == []
    live["spec"]["ports"][0]["targetPort"] = "http"
    assert diff_object(desired, live, None) == [FieldDiff("spec.ports[port=8080].targetPort", "http", 8080)]


def test_a_new_commit_alone_is_not_a_change() -> None:
    old, new = workspace(commit="a" * 40), workspace(commit="b" * 40)
    assert plan_of([new], live_of(old)).workspaces[0].action is Action.UNCHANGED
    assert plan_of([workspace(commit=None)], live_of(old)).workspaces[0].action is Action.UNCHANGED
    assert plan_of([new], live_of(workspace(commit=None))).workspaces[0].action is Action.UNCHANGED


def test_fields_other_managers_own_are_ignored() -> None:
    w = workspace()
    live = live_of(w)
    svc = live.objects[oid(w.objects[1])]
    svc["metadata"]["labels"]["team"] = "vision"
    svc["metadata"]["managedFields"].append(
        {
            "manager": "kubectl-label",
            "operation": "Update",
            "fieldsV1": {"f:metadata": {"f:labels": {"f:team": {}}}},
        }
    )
    assert plan_of([w], live).workspaces[0].action is Action.UNCHANGED


# ---------------------------------------------------------------------------------------------
# updates: removed fields (owned, no longer desired), changed fields, drift


def test_a_removed_env_var_is_an_update_with_desired_none() -> None:
    plan = plan_of([workspace(env={"A": "1"})], live_of(workspace(env={"A": "1", "B": "2"})))
    assert plan.workspaces[0].action is Action.UPDATE
    assert deployment_change(plan, "jane-doe-vscode").diff == [
        FieldDiff(f"{CONTAINER}.env[name=B]", {"name": "B", "value": "2"}, None)
    ]


def test_removing_every_env_var_removes_the_whole_list() -> None:
    plan = plan_of([workspace()], live_of(workspace(env={"A": "1"})))
    assert deployment_change(plan, "jane-doe-vscode").diff == [
        FieldDiff(f"{CONTAINER}.env", [{"name": "A", "value": "1"}], None)
    ]


def test_a_changed_and_an_added_env_var_show_live_and_desired() -> None:
    plan = plan_of([workspace(env={"A": "2", "C": "3"})], live_of(workspace(env={"A": "1"})))
    assert deployment_change(plan, "jane-doe-vscode").diff == [
        FieldDiff(f"{CONTAINER}.env[name=A].value", "1", "2"),
        FieldDiff(f"{CONTAINER}.env[name=C]", None, {"name": "C", "value": "3"}),
    ]


def test_a_removed_data_source_shows_its_volume_and_mounts_as_removed() -> None:
    before = workspace(data_sources=(PVC_DS, SCRATCH_DS))
    plan = plan_of([workspace(data_sources=(PVC_DS,))], live_of(before))
    mount = {"mountPath": "/scratch", "name": "scratch"}
    assert deployment_change(plan, "jane-doe-vscode").diff == [
        FieldDiff(
            "spec.template.spec.initContainers[name=init-workdir].volumeMounts[mountPath=/scratch]",
            mount,
            None,
        ),
        FieldDiff(f"{CONTAINER}.volumeMounts[mountPath=/scratch]", mount, None),
        FieldDiff(
            "spec.template.spec.volumes[name=scratch]",
            {"name": "scratch", "persistentVolumeClaim": {"claimName": "scratch-pvc"}},
            None,
        ),
    ]
    assert plan.workspaces[0].restarts


def test_a_removed_gpu_limit_shows_as_removed() -> None:
    plan = plan_of([workspace(gpu=0)], live_of(workspace(gpu=1)))
    assert deployment_change(plan, "jane-doe-vscode").diff == [
        FieldDiff(f"{CONTAINER}.resources.requests.nvidia.com/gpu", "1", None),
        FieldDiff(f"{CONTAINER}.resources.limits.nvidia.com/gpu", "1", None),
    ]


def test_a_bigger_compute_block_changes_cpu_and_memory() -> None:
    plan = plan_of([workspace(cpu="8", memory="32Gi")], live_of(workspace()))
    assert [(d.path, d.live, d.desired) for d in deployment_change(plan, "jane-doe-vscode").diff] == [
        (f"{CONTAINER}.resources.requests.cpu", "4", "8"),
        (f"{CONTAINER}.resources.requests.memory", "16Gi", "32Gi"),
        (f"{CONTAINER}.resources.limits.cpu", "4", "8"),
        (f"{CONTAINER}.resources.limits.memory", "16Gi", "32Gi"),
    ]


def test_replicas_changed_by_another_manager_is_drift_that_the_plan_takes_back() -> None:
    w = workspace()
    live = live_of(w)
    dep = live.objects[oid(w.objects[0])]
    dep["spec"]["replicas"] = 0
    ours = dep["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]
    del ours["f:replicas"]  # `kubectl scale` took ownership of the field
    dep["metadata"]["managedFields"].append(
        {
            "manager": "kubectl",
            "operation": "Update",
            "subresource": "scale",
            "fieldsV1": {"f:spec": {"f:replicas": {}}},
        }
    )
    plan = plan_of([w], live)
    assert plan.workspaces[0].action is Action.UPDATE
    assert deployment_change(plan, w.name).diff == [FieldDiff("spec.replicas", 0, 1)]
    assert [o.action for o in plan.workspaces[0].objects] == [
        Action.UPDATE,
        Action.UNCHANGED,
        Action.UNCHANGED,
    ]


def test_a_label_somebody_removed_from_a_pod_template_is_drift() -> None:
    w = workspace()
    live = live_of(w)
    del live.objects[oid(w.objects[0])]["spec"]["template"]["metadata"]["labels"][LABEL_NAME]
    assert deployment_change(plan_of([w], live), w.name).diff == [
        FieldDiff(f"spec.template.metadata.labels.{LABEL_NAME}", None, "vscode")
    ]


def test_stopping_a_workspace_scales_it_to_zero_without_a_restart() -> None:
    plan = plan_of([workspace(state="stopped")], live_of(workspace()))
    wp = plan.workspaces[0]
    assert deployment_change(plan, wp.name).diff == [FieldDiff("spec.replicas", 1, 0)]
    assert not wp.restarts
    assert "unsaved work is lost" in wp.notes[0]


def test_a_new_port_replaces_the_old_list_items_found_by_their_full_merge_key() -> None:
    plan = plan_of([workspace(port=8888)], live_of(workspace()))
    wp = plan.workspaces[0]
    port = {"containerPort": 8888, "name": "http", "protocol": "TCP"}
    assert [(d.path, d.live, d.desired) for d in wp.objects[0].diff] == [
        (
            f"{CONTAINER}.args",
            ["--bind-addr", "0.0.0.0:8080", "--auth", "password"],
            ["--bind-addr", "0.0.0.0:8888", "--auth", "password"],
        ),
        (
            f"{CONTAINER}.ports[containerPort=8888]",
            None,
            {"name": "http", "containerPort": 8888, "protocol": "TCP"},
        ),
        (f"{CONTAINER}.ports[containerPort=8080]", {**port, "containerPort": 8080}, None),
        (f"{CONTAINER}.readinessProbe.tcpSocket.port", 8080, 8888),
    ]
    assert [(d.path, d.live, d.desired) for d in wp.objects[1].diff] == [
        (
            "spec.ports[port=8888]",
            None,
            {"name": "http", "port": 8888, "targetPort": "http", "protocol": "TCP"},
        ),
        (
            "spec.ports[port=8080]",
            {"name": "http", "port": 8080, "protocol": "TCP", "targetPort": "http"},
            None,
        ),
    ]
    assert paths(wp.objects[2].diff) == ["spec.rules[0].http.paths[0].backend.service.port.number"]
    assert plan.blast_radius == [
        BlockImpact("environment", "aisg-vscode-server-v4-16-1", ["jane-doe-vscode"])
    ]


def test_an_object_of_ours_that_a_desired_workspace_no_longer_has_is_deleted_in_an_update() -> None:
    w = workspace()
    live = live_of(w)
    extra = applied({**w.objects[1], "metadata": {**w.objects[1]["metadata"], "name": "jane-doe-vscode-old"}})
    live.objects[ObjectId("Service", NS, "jane-doe-vscode-old")] = extra
    wp = plan_of([w], live).workspaces[0]
    assert wp.action is Action.UPDATE
    assert [(str(o.id), o.action) for o in wp.objects][-1] == (
        "Service/sample-project/jane-doe-vscode-old",
        Action.DELETE,
    )


# ---------------------------------------------------------------------------------------------
# conflicts and adoption


def _unmanaged_service() -> tuple[DesiredWorkspace, LiveState]:
    w = workspace()
    live = live_of(w)
    svc = live.objects[oid(w.objects[1])]
    svc["metadata"]["labels"] = {"app": "hand-made"}
    svc["metadata"]["managedFields"] = [
        {"manager": "kubectl-create", "operation": "Update", "fieldsV1": {"f:spec": {"f:ports": {}}}}
    ]
    return w, live


def test_an_object_without_our_labels_is_a_conflict() -> None:
    w, live = _unmanaged_service()
    plan = plan_of([w], live)
    assert plan.workspaces[0].action is Action.CONFLICT
    assert [str(c.id) for c in plan.conflicts] == ["Service/sample-project/jane-doe-vscode"]
    assert plan.summary()["conflict"] == 1


def test_an_object_of_another_project_is_a_conflict_too() -> None:
    w = workspace()
    live = live_of(w)
    live.objects[oid(w.objects[2])]["metadata"]["labels"][LABEL_PART_OF] = "other-project"
    assert [str(c.id) for c in plan_of([w], live).conflicts] == ["Ingress/sample-project/jane-doe-vscode"]


def test_check_refuses_conflicts_without_adopt() -> None:
    w, live = _unmanaged_service()
    with pytest.raises(PlanRefused) as e:
        check(plan_of([w], live), PlanOptions())
    assert str(e.value) == (
        "Service/sample-project/jane-doe-vscode exists and is not managed by workspace-reconciler; "
        "rerun with --adopt to take it over"
    )


def test_adopt_turns_a_conflict_into_an_update_with_the_full_diff() -> None:
    w, live = _unmanaged_service()
    plan = plan_of([w], live, adopt=True)
    assert plan.workspaces[0].action is Action.UPDATE
    svc = next(o for o in plan.workspaces[0].objects if o.id.kind == "Service")
    assert svc.action is Action.UPDATE
    assert paths(svc.diff) == [
        f"metadata.labels.{k}" for k in (LABEL_MANAGED_BY, LABEL_PART_OF, LABEL_INSTANCE, LABEL_NAME)
    ]
    check(plan, PlanOptions(adopt=True))


def test_adopting_one_workspace_by_name_leaves_the_other_conflict_alone() -> None:
    jane, john = workspace(), workspace("john-doe-vscode", "john-doe")
    live = live_of(jane, john)
    for w in (jane, john):
        live.objects[oid(w.objects[1])]["metadata"]["labels"] = {"app": "hand-made"}
    plan = plan_of([jane, john], live, adopt_workspaces=frozenset({"jane-doe-vscode"}))
    assert {w.name: w.action for w in plan.workspaces} == {
        "jane-doe-vscode": Action.UPDATE,
        "john-doe-vscode": Action.CONFLICT,
    }
    assert conflict_refusals(plan) == {
        "john-doe-vscode": "john-doe-vscode was left alone: Service/sample-project/john-doe-vscode exists and "
        "is not managed by workspace-reconciler; rerun with --adopt john-doe-vscode to take it over"
    }


# ---------------------------------------------------------------------------------------------
# deletes and the mass-delete guard


def test_a_workspace_whose_file_is_gone_is_deleted_ingress_first_keeping_its_pvcs() -> None:
    keep, gone = workspace(), workspace("john-smith-lab", "john-smith", data_sources=(PVC_DS, SCRATCH_DS))
    plan = plan_of([keep], live_of(keep, gone))
    wp = next(w for w in plan.workspaces if w.name == "john-smith-lab")
    assert wp.action is Action.DELETE
    assert [str(o.id) for o in wp.objects] == [
        "Ingress/sample-project/john-smith-lab",
        "Service/sample-project/john-smith-lab",
        "Deployment/sample-project/john-smith-lab",
    ]
    assert wp.kept_pvcs == ["sample-project-pvc", "scratch-pvc"]
    assert wp.notes == ["data is kept: PVC sample-project-pvc, scratch-pvc are not deleted; the owner's files stay in "
                        "/sample-project-pvc/workspaces/john-smith (in any workspace that mounts it)"]
    assert wp.url == f"https://{PROJECT}-john-smith-lab.{DOMAIN}"
    assert wp.source == "workspaces/john-smith-lab.yaml"
    assert [w.name for w in plan.deletes] == ["john-smith-lab"]
    assert plan.summary() == {"create": 0, "update": 0, "delete": 1, "unchanged": 1, "conflict": 0}
    check(plan, PlanOptions())


def test_objects_that_are_not_ours_are_never_deleted() -> None:
    stranger = workspace("someone-else")
    live = live_of(stranger)
    for obj in live.objects.values():
        obj["metadata"]["labels"] = {"app": "theirs"}
    assert plan_of([], live).workspaces == []


def test_check_refuses_more_deletes_than_max_deletes() -> None:
    gone = [workspace(f"u{i}-vscode", f"u{i}") for i in range(3)]
    keep = workspace()
    plan = plan_of([keep], live_of(keep, *gone))
    with pytest.raises(
        PlanRefused, match=r"deletes 3 workspaces, more than --max-deletes 2; .*--allow-mass-delete"
    ):
        check(plan, PlanOptions(max_deletes=2))
    check(plan, PlanOptions(max_deletes=2, allow_mass_delete=True))
    check(plan, PlanOptions(max_deletes=3))


def test_check_refuses_deleting_every_managed_workspace() -> None:
    gone = [workspace("a-vscode", "a"), workspace("b-vscode", "b")]
    plan = plan_of([], live_of(*gone))
    with pytest.raises(
        PlanRefused, match=r"deletes every managed workspace \(2 of 2\); .*--allow-mass-delete"
    ):
        check(plan, PlanOptions())
    check(plan, PlanOptions(allow_mass_delete=True))


def test_deleting_the_only_managed_workspace_is_allowed() -> None:
    check(plan_of([], live_of(workspace())), PlanOptions())


# ---------------------------------------------------------------------------------------------
# masking


def test_a_secret_value_change_is_reported_but_masked() -> None:
    plan = plan_of(
        [workspace(env={"HF_TOKEN": SECRET_VALUE + "2"})], live_of(workspace(env={"HF_TOKEN": SECRET_VALUE}))
    )
    assert deployment_change(plan, "jane-doe-vscode").diff == [
        FieldDiff(f"{CONTAINER}.env[name=HF_TOKEN].value", "***", "***", masked=True)
    ]


def test_added_and_removed_secret_env_vars_are_masked() -> None:
    plan = plan_of(
        [workspace(env={"WANDB_API_KEY": SECRET_VALUE})],
        live_of(workspace(env={"db_password": SECRET_VALUE})),
    )
    assert deployment_change(plan, "jane-doe-vscode").diff == [
        FieldDiff(
            f"{CONTAINER}.env[name=WANDB_API_KEY]", None, {"name": "WANDB_API_KEY", "value": "***"}, True
        ),
        FieldDiff(f"{CONTAINER}.env[name=db_password]", {"name": "db_password", "value": "***"}, None, True),
    ]


def test_reports_hide_secrets_but_the_object_to_apply_keeps_them() -> None:
    plan = plan_of([workspace(env={"HF_TOKEN": SECRET_VALUE})], LiveState({}, None, None))
    assert SECRET_VALUE in json.dumps(deployment_change(plan, "jane-doe-vscode").desired)
    assert SECRET_VALUE not in json.dumps(plan_json(plan)) + plan_text(plan, color=False)


def test_secret_looking_flags_in_args_are_masked() -> None:
    assert mask(["--ServerApp.token=abc", "--port=8888", "--password", "x"], "args") == [
        "--ServerApp.token=***",
        "--port=8888",
        "--password",
        "***",
    ]
    value = {"name": "PLAIN", "value": "v"}
    assert mask(value) is value


# ---------------------------------------------------------------------------------------------
# blast radius


def test_a_compute_block_change_lists_every_running_workspace_that_restarts() -> None:
    names = ["alice-vscode", "bob-vscode", "carol-vscode"]
    before = [workspace(n, n.split("-")[0]) for n in names]
    after = [workspace(n, n.split("-")[0], cpu="8") for n in names]
    other = workspace("dave-vscode", "dave", compute="cpu-small", cpu="1")
    plan = plan_of([*after, other], live_of(*before, other))
    assert plan.blast_radius == [BlockImpact("compute", "cpu-mid", names)]
    assert all(w.restarts for w in plan.workspaces if w.name in names)


def test_an_environment_block_change_restarts_its_workspaces_but_not_a_stopped_one() -> None:
    new_image = "registry.example.org/mlops/vscode-server:4.17.0"
    before = [workspace("a-vscode", "a"), workspace("b-vscode", "b", state="stopped")]
    after = [
        workspace("a-vscode", "a", image=new_image),
        workspace("b-vscode", "b", image=new_image, state="stopped"),
    ]
    plan = plan_of(after, live_of(*before))
    assert plan.blast_radius == [BlockImpact("environment", "aisg-vscode-server-v4-16-1", ["a-vscode"])]


def test_a_data_source_change_is_a_data_source_block_change() -> None:
    ro = Ds(SCRATCH_DS.name, SCRATCH_DS.pvc, SCRATCH_DS.mount, read_only=True)
    before = [workspace(n, n[0], data_sources=(PVC_DS, SCRATCH_DS)) for n in ("a-vscode", "b-vscode")]
    after = [workspace(n, n[0], data_sources=(PVC_DS, ro)) for n in ("a-vscode", "b-vscode")]
    plan = plan_of(after, live_of(*before))
    assert plan.blast_radius == [BlockImpact("data source", "scratch", ["a-vscode", "b-vscode"])]


def test_one_workspace_switching_to_a_block_is_not_a_block_change() -> None:
    a_before = workspace("a-vscode", "a", compute="cpu-small", cpu="1")
    b = workspace("b-vscode", "b")
    plan = plan_of([workspace("a-vscode", "a"), b], live_of(a_before, b))
    assert plan.blast_radius == []
    assert next(w for w in plan.workspaces if w.name == "a-vscode").restarts


# ---------------------------------------------------------------------------------------------
# capacity


def test_a_missing_or_unbound_pvc_is_a_warning_naming_the_workspace() -> None:
    w = workspace(data_sources=(PVC_DS, SCRATCH_DS))
    plan = plan_of([w], LiveState({}, {"scratch-pvc": "Pending"}, [0]))
    assert plan.warnings == [
        "jane-doe-vscode: PVC sample-project-pvc does not exist in namespace sample-project; the pod cannot "
        "start until it is created (the reconciler never creates PVCs)",
        "jane-doe-vscode: PVC scratch-pvc is Pending, not Bound; the pod stays Pending until it binds "
        "(a claim whose storage class waits for its first consumer binds when the pod is scheduled)",
    ]


def test_unreadable_pvcs_give_one_note() -> None:
    plan = plan_of([workspace("a-vscode", "a"), workspace("b-vscode", "b")], LiveState({}, None, [0]))
    assert plan.warnings == [
        "PVCs could not be listed (no permission?): PVC existence and binding not checked"
    ]


def test_a_gpu_request_no_node_can_satisfy_is_a_warning() -> None:
    plan = plan_of([workspace(gpu=4), workspace("b-vscode", "b", gpu=2)], LiveState({}, {}, [0, 2]))
    assert [w for w in plan.warnings if "GPU" in w] == [
        "jane-doe-vscode: requests 4 GPU(s) but no node has that many allocatable nvidia.com/gpu "
        "(largest: 2); the pod would stay Pending"
    ]


def test_unlistable_nodes_give_one_note_only_when_a_gpu_is_requested() -> None:
    cpu_only = plan_of([workspace(data_sources=())], LiveState({}, {}, None))
    assert cpu_only.warnings == []
    gpu = plan_of(
        [workspace(gpu=1, data_sources=()), workspace("b", "b", gpu=1, data_sources=())],
        LiveState({}, {}, None),
    )
    assert gpu.warnings == ["nodes could not be listed (no permission?): GPU capacity not checked"]


def test_a_stopped_workspace_gets_no_capacity_warning() -> None:
    plan = plan_of([workspace(gpu=8, state="stopped")], LiveState({}, {}, [0]))
    assert plan.warnings == []


# ---------------------------------------------------------------------------------------------
# the comparison on its own


def test_an_atomic_list_is_compared_whole_and_by_index_for_objects() -> None:
    desired = {"spec": {"args": ["a", "b"], "rules": [{"host": "x"}]}}
    live = {"spec": {"args": ["a"], "rules": [{"host": "y", "defaulted": True}]}}
    assert diff_object(desired, live, None) == [
        FieldDiff("spec.args", ["a"], ["a", "b"]),
        FieldDiff("spec.rules[0].host", "y", "x"),
    ]


def test_empty_desired_values_match_fields_the_server_omits() -> None:
    desired = {"spec": {"args": [], "env": [], "readOnly": False, "workingDir": "", "emptyDir": {}}}
    assert diff_object(desired, {"spec": {}}, None) == []


def test_workspace_plans_are_sorted_by_name_with_deletes_among_them() -> None:
    b, a, c = workspace("b-vscode", "b"), workspace("a-vscode", "a"), workspace("c-vscode", "c")
    plan = plan_of([c, a], live_of(b))
    assert [(w.name, w.action.value) for w in plan.workspaces] == [
        ("a-vscode", "create"),
        ("b-vscode", "delete"),
        ("c-vscode", "create"),
    ]


def test_a_plan_is_plain_data() -> None:
    plan = plan_of([workspace()], LiveState({}, {}, []))
    assert dataclasses.asdict(plan)["workspaces"][0]["name"] == "jane-doe-vscode"


# ---------------------------------------------------------------------------------------------
# The plan that keeps only what changes (a no-op plan of 5,000 workspaces in little memory)


def test_a_plan_of_compact_live_objects_and_objects_rendered_when_read_says_what_the_plain_plan_says() -> None:
    from decimal import Decimal

    from reconciler.changeset import CompactObjects
    from reconciler.cost import deployment_hourly, plan_cost
    from reconciler.models import Prices
    from reconciler.render import RenderedObjects

    same, changed, gone, theirs = (workspace("a-vscode", "a"), workspace("b-vscode", "b"),
                                   workspace("john-doe-vscode", "john-doe"), workspace())
    live = live_of(same, changed, gone, theirs)
    live.objects[oid(changed.objects[0])]["spec"]["template"]["spec"]["containers"][0]["image"] = "old:1"
    live.objects[oid(theirs.objects[1])]["metadata"]["labels"] = {"app": "hand-made"}
    desired = [same, changed, theirs]
    compact = CompactObjects()
    for k, v in live.objects.items():
        compact.add(k, v)
    assert {k: compact[k] for k in compact} == live.objects  # kept compact, decoded the same
    renders: list[str] = []

    def lazily(w: DesiredWorkspace) -> DesiredWorkspace:
        def make() -> tuple[dict[str, Any], ...]:
            renders.append(w.name)
            return tuple(copy.deepcopy(o) for o in w.objects)
        ids = tuple((o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in w.objects)
        return dataclasses.replace(w, objects=RenderedObjects(make, ids))

    plain = plan_of(desired, live)
    lean = compute_plan([lazily(w) for w in desired], LiveState(compact, live.pvcs, live.node_gpus), PROJECT, NS,
                        PlanOptions(), lean=True)
    assert renders == ["a-vscode", "b-vscode", "jane-doe-vscode"]  # each workspace rendered once
    assert plan_json(lean) == plan_json(plain)
    assert plan_text(lean, False) == plan_text(plain, False)
    assert lean.summary() == {"create": 0, "update": 1, "delete": 1, "unchanged": 1, "conflict": 1}
    # What a no-op plan holds of an unchanged object: no body (desired, live) at all.
    kept = {(c.id.name, c.action, c.desired is not None, c.live is not None)
            for w in lean.workspaces for c in w.objects}
    assert ("a-vscode", Action.UNCHANGED, False, False) in kept and ("b-vscode", Action.UPDATE, True, True) in kept
    assert ("john-doe-vscode", Action.DELETE, False, True) in kept
    assert ("jane-doe-vscode", Action.CONFLICT, True, True) in kept
    # ... and of a changed one, the same bodies (kept as compact JSON).
    assert deployment_change(lean, "b-vscode").desired == deployment_change(plain, "b-vscode").desired
    assert deployment_change(lean, "b-vscode").live == deployment_change(plain, "b-vscode").live
    # The cost totals: an unchanged Deployment without its body is priced as the repo renders it.
    prices = Prices(cpu=0.04, memoryGiB=0.005)
    rendered = {w.name: deployment_hourly(w.objects[0], prices) for w in desired}
    a, b = plan_cost(plain, prices), plan_cost(lean, prices, rendered=rendered)
    assert a == b and a is not None and a.total_before > a.total_after > Decimal(0)


def test_objects_rendered_when_read_are_the_objects_render_gives(example_repo: Path) -> None:
    from reconciler.render import object_ids, render
    from reconciler.validate import load_repo

    repo = load_repo(example_repo)
    eager, lazy = render(repo), render(repo, lazy=True)
    assert [w.name for w in lazy] == [w.name for w in eager] and len(eager) >= 2
    for a, b in zip(eager, lazy, strict=True):
        assert list(b.objects) == list(a.objects) and len(b.objects) == 3
        assert b.objects[0] == a.objects[0] and b.objects[0] is not b.objects[0]  # never kept
        assert object_ids(b) == object_ids(a) == [(k, repo.project.namespace, a.name)
                                                  for k in ("Deployment", "Service", "Ingress")]
        assert dataclasses.replace(b, objects=()) == dataclasses.replace(a, objects=())
