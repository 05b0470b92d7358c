"""The harness's own calls to the apiserver (setup, teardown, settling), with the official `kubernetes` client.

Every request carries the harness's User-Agent (`UA_HARNESS`), so the audit-log counts, which are by
User-Agent, never include them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from bench.config import UA_HARNESS, log
from bench.repo import DATA_SOURCE

TIMEOUT = 60


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
    # A claim the volume controller sees before its volume waits for the next resync (15 s).
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


def delete_namespaces(admin: Admin, namespaces: list[str], timeout: float = 600) -> None:
    """Delete the namespaces and their volumes, and wait until they are gone."""
    for ns in namespaces:
        _ignore_404(admin.core.delete_namespace, ns)
        _ignore_404(admin.core.delete_persistent_volume, pv_name(ns))
    start = time.monotonic()
    for ns in namespaces:
        while admin.namespace_exists(ns):
            if time.monotonic() > start + timeout:
                log(f"warning: namespace {ns} still terminating after {timeout:.0f}s")
                return
            time.sleep(0.5)
    log(f"  namespaces gone after {time.monotonic() - start:.1f}s")
