"""Issue #11 (hardening) in reconciler.cluster, against a scripted API on loopback."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.cluster import ApplyOptions, Cluster, ClusterOptions, Lease
from reconciler.errors import ClusterError, LockError
from reconciler.plan import ObjectId
from tests.unit.fake_apiserver import FakeAPI, Seen, empty_list, status

KIND_LISTS = r"/apis/apps/v1/namespaces/[^/]+/deployments|/api/v1/namespaces/[^/]+/services" \
             r"|/apis/networking.k8s.io/v1/namespaces/[^/]+/ingresses"


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    with FakeAPI() as fake:
        fake.route("GET", KIND_LISTS, empty_list)
        fake.route("GET", "/api/v1/nodes", empty_list)
        yield fake


def cluster(api: FakeAPI, tmp_path: Path, namespace: str) -> Cluster:
    return Cluster(namespace, ClusterOptions(kubeconfig=str(api.kubeconfig(tmp_path)), retries=0))


# ---------------------------------------------------------------------------------------------
# 5. Typed API errors: decisions by HTTP status, never by message text


def test_a_500_listing_pvcs_in_a_namespace_named_forbidden_is_an_error_not_missing_permission(
    api: FakeAPI, tmp_path: Path
) -> None:
    ns = "forbidden-lab"
    api.route("GET", f"/api/v1/namespaces/{ns}/persistentvolumeclaims",
              status(500, f"etcd timeout listing persistentvolumeclaims in {ns}"))
    with pytest.raises(ClusterError) as failed:
        cluster(api, tmp_path, ns).read_live(["data"])
    assert failed.value.status == 500
    assert str(failed.value).startswith(f"list PVCs in {ns}: failed (500)")


def test_a_500_listing_nodes_whose_message_says_forbidden_is_an_error(api: FakeAPI, tmp_path: Path) -> None:
    api.route("GET", "/api/v1/nodes", status(500, "forbidden by a webhook that crashed"))
    with pytest.raises(ClusterError) as failed:
        cluster(api, tmp_path, "lab").read_live([])
    assert failed.value.status == 500


def test_a_403_listing_pvcs_or_nodes_means_they_cannot_be_checked(api: FakeAPI, tmp_path: Path) -> None:
    api.route("GET", "/api/v1/namespaces/lab/persistentvolumeclaims", status(403, "no"))
    api.route("GET", "/api/v1/nodes", status(403, "no"))
    live = cluster(api, tmp_path, "lab").read_live(["data"])
    assert (live.pvcs, live.node_gpus) == (None, None)


def test_a_delete_answered_404_is_done_but_a_500_saying_404_is_not(api: FakeAPI, tmp_path: Path) -> None:
    c = cluster(api, tmp_path, "lab")
    api.route("DELETE", "/api/v1/namespaces/lab/services/gone", status(404, "services \"gone\" not found"))
    c.delete(ObjectId("Service", "lab", "gone"), "uid-1")
    api.route("DELETE", "/api/v1/namespaces/lab/services/odd", status(500, "upstream said (404 not found)"))
    with pytest.raises(ClusterError) as failed:
        c.delete(ObjectId("Service", "lab", "odd"), "uid-2")
    assert failed.value.status == 500


def test_an_unreachable_api_server_is_a_cluster_error_without_a_status(tmp_path: Path) -> None:
    with FakeAPI() as gone:
        kubeconfig = gone.kubeconfig(tmp_path)
    c = Cluster("lab", ClusterOptions(kubeconfig=str(kubeconfig), retries=0))
    with pytest.raises(ClusterError) as failed:
        c.read_live([])
    assert failed.value.status is None
    assert "cannot reach the API server" in str(failed.value)


# ---------------------------------------------------------------------------------------------
# 4. Lease fencing


LEASES = "/apis/coordination.k8s.io/v1/namespaces/lab/leases"
LEASE = LEASES + "/workspace-reconciler"


class LeaseStore:
    """The Lease as the apiserver keeps it: resourceVersion preconditions on update and delete."""

    def __init__(self, api: FakeAPI) -> None:
        self.obj: dict[str, Any] | None = None
        self.rv = 100
        self.lose_next_put_answer = False
        self.fail_puts = False
        self.answer_delay = 0.0
        self.lock = threading.Lock()
        api.route("GET", LEASE, self.get)
        api.route("POST", LEASES, self.create)
        api.route("PUT", LEASE, self.update)
        api.route("DELETE", LEASE, self.delete)

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        uid = self.obj["metadata"]["uid"] if self.obj else "lease-uid"
        self.obj = {**body, "metadata": {**body["metadata"], "resourceVersion": str(self.rv), "uid": uid}}
        return self.obj

    def get(self, _: Seen) -> tuple[int, Any]:
        with self.lock:
            return (200, self.obj) if self.obj else status(404, "leases not found")

    def create(self, seen: Seen) -> tuple[int, Any]:
        with self.lock:
            return status(409, "already exists") if self.obj else (201, self._store(seen.body))

    def update(self, seen: Seen) -> tuple[int, Any]:
        with self.lock:
            if self.fail_puts:
                return status(503, "etcd is away")
            if self.obj is None:
                return status(404, "leases not found")
            if seen.body["metadata"].get("resourceVersion") != self.obj["metadata"]["resourceVersion"]:
                return status(409, "the object has been modified")
            stored = self._store(seen.body)
            if self.lose_next_put_answer:
                self.lose_next_put_answer = False
                return 0, None
        time.sleep(self.answer_delay)  # stored; the answer is still on its way
        return 200, stored

    def delete(self, seen: Seen) -> tuple[int, Any]:
        with self.lock:
            if self.obj is None:
                return status(404, "leases not found")
            pre = (seen.body or {}).get("preconditions") or {}
            meta = self.obj["metadata"]
            if any(pre.get(k, meta[k]) != meta[k] for k in ("uid", "resourceVersion")):
                return status(409, "Precondition failed")
            self.obj = None
            return 200, {"kind": "Status", "status": "Success"}

    def take_over(self, holder: str) -> None:
        """Another runner takes the Lease over (the same object and uid, a new holder)."""
        with self.lock:
            assert self.obj is not None
            self._store({**self.obj, "spec": {**self.obj["spec"], "holderIdentity": holder}})

    def renewals(self, api: FakeAPI, holder: str) -> int:
        return len([s for s in api.seen if s.method == "PUT" and s.path == LEASE
                    and s.body["spec"]["holderIdentity"] == holder])


def held_lease(api: FakeAPI, tmp_path: Path, seconds: int = 1, holder: str = "run-a") -> tuple[Cluster, Lease]:
    c = Cluster("lab", ClusterOptions(kubeconfig=str(api.kubeconfig(tmp_path))))  # retries as in a real run
    return c, c.acquire_lease(ApplyOptions(timeout=5, lease_seconds=seconds, holder=holder))


def test_a_renewal_stored_whose_answer_was_lost_is_recognised_and_the_lease_kept(
    api: FakeAPI, tmp_path: Path
) -> None:
    store = LeaseStore(api)
    store.lose_next_put_answer = True
    c, lease = held_lease(api, tmp_path, seconds=2)
    try:
        time.sleep(5)  # 2.5 lease durations: without recognising its own renewal it would have lost it
        assert store.obj is not None and store.obj["spec"]["holderIdentity"] == "run-a"
        assert store.rv >= 104, "the Lease was renewed again after the renewal whose answer was lost (rv 102)"
        lease.ensure_held()
    finally:
        lease.release()
    assert store.obj is None, "released"


def test_a_release_while_a_renewal_is_on_its_way_deletes_the_renewed_lease(api: FakeAPI, tmp_path: Path) -> None:
    """The renewal was stored: release must delete that version, or the Lease blocks the next run until it expires."""
    store = LeaseStore(api)
    _, lease = held_lease(api, tmp_path, seconds=1)
    store.answer_delay = 1.0
    time.sleep(0.6)  # a renewal (every 1/3 s) has been stored and waits for its answer
    before = store.rv
    lease.release()
    assert store.rv > 101 and before > 101, "a renewal was stored before the release"
    assert store.obj is None, "released: the delete carried the resourceVersion of the renewal"


def test_a_lease_taken_over_stops_every_later_write_with_one_reason(api: FakeAPI, tmp_path: Path) -> None:
    store = LeaseStore(api)
    c, lease = held_lease(api, tmp_path, seconds=1)
    try:
        store.take_over("run-b")
        deadline = time.monotonic() + 3
        with pytest.raises(LockError) as lost:
            while time.monotonic() < deadline:
                lease.ensure_held()
                time.sleep(0.05)
        assert str(lost.value).startswith("apply stopped: Lease/lab/workspace-reconciler was taken over by 'run-b'")
        writes = len(api.seen)
        with pytest.raises(LockError):
            c.delete(ObjectId("Service", "lab", "x"), "uid-1")
        assert len(api.seen) == writes, "nothing is sent once the Lease is lost"
    finally:
        lease.release()
    assert store.obj is not None and store.obj["spec"]["holderIdentity"] == "run-b", \
        "a stale holder's release does not delete its successor's Lease"
    delete = [s for s in api.seen if s.method == "DELETE" and s.path == LEASE][-1]
    assert delete.body["preconditions"]["resourceVersion"]


def test_writes_stop_once_the_local_clock_passes_the_last_renewal_plus_the_lease_duration(
    api: FakeAPI, tmp_path: Path
) -> None:
    store = LeaseStore(api)
    c, lease = held_lease(api, tmp_path, seconds=2)
    store.fail_puts = True
    acquired = time.monotonic()
    try:
        c.delete(ObjectId("Service", "lab", "early"), "uid-1")  # 404: fine, and under the Lease
        time.sleep(2.2)
        with pytest.raises(LockError) as lost:
            c.delete(ObjectId("Service", "lab", "late"), "uid-2")
    finally:
        lease.release()
    assert "was not renewed within its 2s" in str(lost.value) and "\n" not in str(lost.value)
    late = [s for s in api.seen if s.path.endswith("/services/late")]
    assert late == [], "the write after the deadline was never sent"
    assert time.monotonic() - acquired < 10


def test_expiry_is_judged_by_an_unchanged_record_on_the_local_clock_not_by_timestamps(
    api: FakeAPI, tmp_path: Path
) -> None:
    store = LeaseStore(api)
    hour_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    store._store({"metadata": {"name": "workspace-reconciler"},
                  "spec": {"holderIdentity": "skewed-run", "leaseDurationSeconds": 2,
                           "acquireTime": hour_ago, "renewTime": hour_ago}})
    started = time.monotonic()
    c, lease = held_lease(api, tmp_path, seconds=2, holder="run-a")
    waited = time.monotonic() - started
    lease.release()
    assert waited >= 2, "a record renewed 'an hour ago' by another clock is still watched for its duration"


def test_a_lease_renewed_by_a_runner_whose_clock_is_behind_is_never_taken(api: FakeAPI, tmp_path: Path) -> None:
    store = LeaseStore(api)
    hour_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    store._store({"metadata": {"name": "workspace-reconciler"},
                  "spec": {"holderIdentity": "live-run", "leaseDurationSeconds": 1,
                           "acquireTime": hour_ago, "renewTime": hour_ago}})
    stop = threading.Event()

    def keep_renewing() -> None:  # the holder's renewTime stays an hour behind our clock
        while not stop.wait(0.3):
            store.take_over("live-run")

    threading.Thread(target=keep_renewing, daemon=True).start()
    try:
        with pytest.raises(LockError) as held:
            held_lease(api, tmp_path, seconds=1, holder="run-a")
    finally:
        stop.set()
    assert "is held by 'live-run'" in str(held.value)


# ---------------------------------------------------------------------------------------------
# 3. Public API of the kubernetes client only


def test_cluster_uses_no_private_internals_of_the_kubernetes_client() -> None:
    source = (Path(__file__).resolve().parents[2] / "reconciler" / "cluster.py").read_text(encoding="utf-8")
    for private in ("rest_client", "pool_manager", "RESTClientObject", "auth_settings(", "refresh_api_key_hook",
                    "new_client_from_config"):
        assert private not in source, private


def test_requests_carry_the_kubeconfigs_credentials_from_an_exec_plugin(api: FakeAPI, tmp_path: Path) -> None:
    plugin = tmp_path / "credential-plugin.sh"
    plugin.write_text('#!/bin/sh\necho \'{"apiVersion": "client.authentication.k8s.io/v1", '
                      '"kind": "ExecCredential", "status": {"token": "exec-token-123"}}\'\n', encoding="utf-8")
    plugin.chmod(0o755)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": api.url}}],
        "users": [{"name": "u", "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                                                  "command": str(plugin), "interactiveMode": "Never"}}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}), encoding="utf-8")
    c = Cluster("lab", ClusterOptions(kubeconfig=str(kubeconfig), retries=0))
    c.read_live([], gpu_check=False)
    headers = [{k.lower(): v for k, v in s.headers.items()} for s in api.seen]
    assert {h.get("authorization") for h in headers} == {"Bearer exec-token-123"}
    assert {h.get("user-agent") for h in headers} == {"workspace-reconciler/0.1"}
    assert c.requests == 3, "one LIST per kind, nothing else (no discovery)"


def test_an_apply_is_one_apply_patch_with_the_field_manager_and_a_json_body(api: FakeAPI, tmp_path: Path) -> None:
    api.route("PATCH", "/api/v1/namespaces/lab/services/x", lambda seen: (200, seen.body))
    c = cluster(api, tmp_path, "lab")
    obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"ports": [{"port": 80}]}}
    assert c.server_side_apply(obj) == obj
    (seen,) = [s for s in api.seen if s.method == "PATCH"]
    assert seen.headers["Content-Type"] == "application/apply-patch+yaml"
    assert sorted(seen.query.split("&")) == ["fieldManager=workspace-reconciler", "force=true"]
    assert seen.body == obj
