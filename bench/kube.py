"""The harness's own calls to the apiserver (setup, teardown, settling), with the official `kubernetes` client.

Every request carries the harness's User-Agent (`UA_HARNESS`), so the audit-log counts, which are by
User-Agent, never include them.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from bench.config import UA_HARNESS, log
from bench.repo import DATA_SOURCE

TIMEOUT = 60
FAKE_NODE = "fake-node-0"
"""The one node, tainted NoSchedule (tests/cluster/fakekubelet.py's register_nodes): the scheduler
places nothing there, so the thousands of Pods of a size stay Pending; only `OneWorkspaceKubelet`
binds a Pod to it."""
LABEL_INSTANCE = "app.kubernetes.io/instance"


class Admin:
    """The cluster admin, for what the harness itself creates, reads and deletes."""

    def __init__(self, kubeconfig: Path) -> None:
        self.api_client: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig))
        self.api_client.user_agent = UA_HARNESS
        self.core = client.CoreV1Api(self.api_client)

    def close(self) -> None:
        self.api_client.close()  # type: ignore[no-untyped-call]

    def count_pods(self, namespace: str) -> int:
        """How many Pods a LIST would return, from one `limit=1` page (remainingItemCount)."""
        page = self.core.list_namespaced_pod(namespace, limit=1, _request_timeout=TIMEOUT)
        remaining = page.metadata.remaining_item_count if page.metadata else None
        return len(page.items or []) + int(remaining or 0)

    def namespace_exists(self, name: str) -> bool:
        try:
            self.core.read_namespace(name, _request_timeout=TIMEOUT)
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    def probe(self, name: str) -> None:
        """One request whose audit event carries `name` (a GET of a namespace that does not exist)."""
        self.namespace_exists(name)

    def claim_phase(self, namespace: str, name: str) -> str | None:
        pvc = self.core.read_namespaced_persistent_volume_claim(name, namespace, _request_timeout=TIMEOUT)
        return pvc.status.phase if pvc.status else None


def _ignore_404(call: Any, *args: Any) -> None:
    try:
        call(*args, _request_timeout=TIMEOUT)
    except ApiException as e:
        if e.status != 404:
            raise


def pv_name(namespace: str) -> str:
    return f"{namespace}-{DATA_SOURCE}"


def create_namespaces(admin: Admin, namespaces: list[str]) -> None:
    """Fresh namespaces, each with a Bound claim for the data source (so the plan has no capacity warning).

    Created up front for all the runs of a size: volume and claim events make the scheduler retry
    every Pending pod, which must not happen during a measurement.
    """
    for ns in namespaces:
        admin.core.create_persistent_volume(client.V1PersistentVolume(
            metadata=client.V1ObjectMeta(name=pv_name(ns)),
            spec=client.V1PersistentVolumeSpec(
                capacity={"storage": "1Gi"}, access_modes=["ReadWriteMany"], storage_class_name="",
                persistent_volume_reclaim_policy="Retain",
                host_path=client.V1HostPathVolumeSource(path="/tmp/workspace-gitops-bench"),
                claim_ref=client.V1ObjectReference(namespace=ns, name=DATA_SOURCE))), _request_timeout=TIMEOUT)
    # A claim the volume controller sees before its volume waits for the next resync (2 s with the
    # launcher's --pvclaimbinder-sync-period, 15 s by default).
    time.sleep(1.0)
    for ns in namespaces:
        admin.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)),
                                    _request_timeout=TIMEOUT)
        admin.core.create_namespaced_persistent_volume_claim(ns, client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name=DATA_SOURCE),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=["ReadWriteMany"], storage_class_name="", volume_name=pv_name(ns),
                resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}))),
            _request_timeout=TIMEOUT)
    wait_bound(admin, namespaces)


def wait_bound(admin: Admin, namespaces: list[str], timeout: float = 60) -> None:
    start = time.monotonic()
    deadline = start + timeout
    for ns in namespaces:
        while admin.claim_phase(ns, DATA_SOURCE) != "Bound":
            if time.monotonic() > deadline:
                log(f"warning: claim {ns}/{DATA_SOURCE} not Bound after {timeout:.0f}s; the plan will warn")
                break
            time.sleep(0.2)
    log(f"  claims Bound after {time.monotonic() - start:.1f}s")


def delete_namespaces(admin: Admin, namespaces: list[str], timeout: float = 600, wait: bool = True) -> None:
    """Delete the namespaces and their volumes, and (`wait`) wait until they are gone."""
    for ns in namespaces:
        _ignore_404(admin.core.delete_namespace, ns)
        _ignore_404(admin.core.delete_persistent_volume, pv_name(ns))
    if not wait:
        return
    start = time.monotonic()
    for ns in namespaces:
        while admin.namespace_exists(ns):
            release_pods(admin, ns)
            if time.monotonic() > start + timeout:
                log(f"warning: namespace {ns} still terminating after {timeout:.0f}s")
                return
            time.sleep(0.5)
    log(f"  namespaces gone after {time.monotonic() - start:.1f}s")


def release_pods(admin: Admin, namespace: str) -> None:
    """Finish deleting the Pods bound to FAKE_NODE, as its kubelet would (no kubelet runs there)."""
    pods = admin.core.list_namespaced_pod(namespace, field_selector=f"spec.nodeName={FAKE_NODE}",
                                          _request_timeout=TIMEOUT).items
    for pod in pods:
        if pod.metadata and pod.metadata.deletion_timestamp and pod.metadata.name:
            try:
                admin.core.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=0,
                                                 _request_timeout=TIMEOUT)
            except ApiException as e:
                if e.status != 404:
                    raise


class OneWorkspaceKubelet:
    """Plays scheduler and kubelet for the Pods of one workspace while a `reconcile --wait` runs.

    Binds each of its Pods to FAKE_NODE and reports it Running and Ready (as the suite's fake
    kubelet does), so the workspace becomes ready, while every other Pod of the namespace stays
    Pending and costs nothing. Polls every 0.1 s: at most that much is added to the measured wait."""

    def __init__(self, admin: Admin, namespace: str, workspace: str) -> None:
        self.admin, self.ns, self.workspace = admin, namespace, workspace
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._loop, name=f"kubelet-{workspace}", daemon=True)

    def __enter__(self) -> OneWorkspaceKubelet:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def _loop(self) -> None:
        core: Any = self.admin.core  # plain dicts in, no typed models
        while not self.stop.wait(0.1):
            try:
                pods = core.list_namespaced_pod(self.ns, label_selector=f"{LABEL_INSTANCE}={self.workspace}",
                                                _request_timeout=TIMEOUT).items
                for pod in pods:
                    name = pod.metadata.name
                    if pod.metadata.deletion_timestamp:
                        continue
                    if not pod.spec.node_name:
                        core.create_namespaced_pod_binding(
                            name, self.ns, {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                                            "target": {"apiVersion": "v1", "kind": "Node", "name": FAKE_NODE}},
                            _preload_content=False, _request_timeout=TIMEOUT)
                    elif not any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or [])):
                        core.patch_namespaced_pod_status(name, self.ns, _ready(pod), _request_timeout=TIMEOUT)
            except ApiException as e:
                if e.status not in (404, 409) and len(self.errors) < 5:
                    self.errors.append(f"{e.status} {e.reason}")


def _ready(pod: Any) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"status": {
        "phase": "Running", "startTime": now, "hostIP": "127.0.1.1", "podIP": "10.244.0.2",
        "conditions": [{"type": t, "status": "True", "lastTransitionTime": now}
                       for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
        "containerStatuses": [{"name": c.name, "ready": True, "started": True, "restartCount": 0, "image": c.image,
                               "imageID": "", "state": {"running": {"startedAt": now}}}
                              for c in pod.spec.containers],
        "initContainerStatuses": [{"name": c.name, "ready": True, "restartCount": 0, "image": c.image,
                                   "imageID": "", "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                                                           "startedAt": now, "finishedAt": now}}}
                                  for c in (pod.spec.init_containers or [])]}}
