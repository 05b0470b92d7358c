"""Issue #11 (hardening) in reconciler.cluster, against a scripted API on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.cluster import Cluster, ClusterOptions
from reconciler.errors import ClusterError
from tests.unit.fake_apiserver import FakeAPI, empty_list, status

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
    from reconciler.plan import ObjectId

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
