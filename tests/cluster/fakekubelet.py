"""A stand-in for the kubelet on fake nodes: no containers run here, so it does the kubelet's API part.

The real scheduler binds pods to the fake nodes (so a GPU request no node can hold, or an unbound
PVC, leaves a pod Pending exactly as on a real cluster); this process then reports each bound pod
Running and Ready, and finishes the deletion of terminating pods, as a kubelet would.

    python tests/cluster/fakekubelet.py KUBECONFIG
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

FAKE_NODE_PREFIX = "fake-node-"


def _api(kubeconfig: Path) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))


FAKE_NODE_TAINT = {"key": "workspace-gitops/fake-node", "value": "true", "effect": "NoSchedule"}


def register_nodes(kubeconfig: Path, count: int, gpus: int = 0, schedulable: bool = True) -> None:
    """Create `count` Ready nodes with room for many pods (and `gpus` nvidia.com/gpu each).

    `schedulable=False` taints them (FAKE_NODE_TAINT): next to a real node, pods go there, not here.
    """
    api = _api(kubeconfig)
    capacity = {"cpu": "256", "memory": "1Ti", "pods": "5000"}
    if gpus:
        capacity["nvidia.com/gpu"] = str(gpus)
    for i in range(count):
        name = f"{FAKE_NODE_PREFIX}{i}"
        now = dt.datetime.now(dt.UTC).isoformat()
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "type": "fake"}}}
        try:
            api.create_node(body)
        except ApiException as e:
            if e.status != 409:
                raise
        status = {"status": {
            "capacity": capacity, "allocatable": capacity,
            "conditions": [{"type": "Ready", "status": "True", "reason": "FakeKubeletReady",
                            "message": "fake kubelet", "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "addresses": [{"type": "InternalIP", "address": f"127.0.1.{i + 1}"}],
            "nodeInfo": {"kubeletVersion": "fake", "architecture": "amd64", "operatingSystem": "linux",
                         "bootID": "", "containerRuntimeVersion": "", "kernelVersion": "", "kubeProxyVersion": "",
                         "machineID": "", "osImage": "", "systemUUID": ""},
        }}
        api.patch_node_status(name, status)
        # The TaintNodesByCondition admission plugin marks a new node not-ready; a kubelet's first
        # heartbeat would clear it through the node lifecycle controller, which does not run here.
        api.patch_node(name, {"spec": {"taints": [] if schedulable else [FAKE_NODE_TAINT]}})


def _ready_status(pod: client.V1Pod, node_index: int) -> dict[str, object]:
    now = dt.datetime.now(dt.UTC).isoformat()
    cond = [{"type": t, "status": "True", "lastTransitionTime": now}
            for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]
    statuses = [{"name": c.name, "ready": True, "started": True, "restartCount": 0, "image": c.image,
                 "imageID": "", "state": {"running": {"startedAt": now}}} for c in pod.spec.containers]
    init = [{"name": c.name, "ready": True, "restartCount": 0, "image": c.image, "imageID": "",
             "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}}}
            for c in (pod.spec.init_containers or [])]
    return {"status": {"phase": "Running", "conditions": cond, "containerStatuses": statuses,
                       "initContainerStatuses": init, "hostIP": f"127.0.1.{node_index + 1}",
                       "podIP": f"10.244.{node_index}.{abs(hash(pod.metadata.uid)) % 250 + 2}",
                       "startTime": now}}


def _handle(api: client.CoreV1Api, pod: client.V1Pod) -> None:
    node = pod.spec.node_name or ""
    if not node.startswith(FAKE_NODE_PREFIX):
        return
    ns, name = pod.metadata.namespace, pod.metadata.name
    try:
        if pod.metadata.deletion_timestamp:
            api.delete_namespaced_pod(name, ns, grace_period_seconds=0)
            return
        ready = any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
        if not ready:
            api.patch_namespaced_pod_status(name, ns, _ready_status(pod, int(node[len(FAKE_NODE_PREFIX):] or 0)))
    except ApiException as e:
        if e.status not in (404, 409):
            print(f"fake-kubelet: pod {ns}/{name}: {e.status} {e.reason}", file=sys.stderr, flush=True)


def run(kubeconfig: Path) -> None:
    api = _api(kubeconfig)
    while True:
        try:
            pods = api.list_pod_for_all_namespaces()
            for p in pods.items:
                _handle(api, p)
            w = watch.Watch()
            for ev in w.stream(api.list_pod_for_all_namespaces, resource_version=pods.metadata.resource_version,
                               timeout_seconds=300):
                if ev["type"] in ("ADDED", "MODIFIED"):
                    _handle(api, ev["object"])
        except Exception as e:  # noqa: BLE001 - a kubelet keeps going through apiserver restarts
            print(f"fake-kubelet: {type(e).__name__}: {e}; retrying", file=sys.stderr, flush=True)
            time.sleep(1)


if __name__ == "__main__":
    run(Path(sys.argv[1]))
