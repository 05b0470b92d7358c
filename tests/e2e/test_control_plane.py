"""The control plane the suite runs against is real: etcd, kube-apiserver, controllers, RBAC."""

from __future__ import annotations

import time

import pytest
from kubernetes import client, dynamic
from kubernetes.client.rest import ApiException

from tests.conftest import ControlPlane, admin_client

pytestmark = pytest.mark.cluster

DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "probe", "labels": {"app": "probe"}},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "probe"}},
             "template": {"metadata": {"labels": {"app": "probe"}},
                          "spec": {"containers": [{"name": "c", "image": "registry.example/probe:1"}]}}},
}


def test_the_apiserver_reports_a_real_1_34_version(control_plane: ControlPlane) -> None:
    info = client.VersionApi(admin_client(control_plane.kubeconfig)).get_code()
    assert info.major == "1" and info.minor == "34"
    assert info.git_version.startswith("v1.34.")


def test_server_side_apply_creates_a_deployment_and_its_replicaset(control_plane: ControlPlane,
                                                                   namespace: str) -> None:
    dyn = dynamic.DynamicClient(admin_client(control_plane.kubeconfig))
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    body = {**DEPLOYMENT, "metadata": {**DEPLOYMENT["metadata"], "namespace": namespace}}
    deployments.server_side_apply(body=body, namespace=namespace, field_manager="workspace-reconciler")
    live = deployments.get(name="probe", namespace=namespace).to_dict()
    managers = {m["manager"] for m in live["metadata"]["managedFields"]}
    assert "workspace-reconciler" in managers
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/probe:1"

    apps = client.AppsV1Api(admin_client(control_plane.kubeconfig))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rs = apps.list_namespaced_replica_set(namespace).items
        if rs:
            break
        time.sleep(0.2)
    assert rs, "the controller-manager should have created a ReplicaSet"
    assert rs[0].metadata.owner_references[0].name == "probe"


def test_a_read_only_user_gets_403_when_writing(control_plane: ControlPlane, namespace: str, make_user) -> None:
    rbac = client.RbacAuthorizationV1Api(admin_client(control_plane.kubeconfig))
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "reader"},
        "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]}]})
    kubeconfig = make_user(["reader"])
    from kubernetes import config

    apps = client.AppsV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    assert apps.list_namespaced_deployment(namespace).items == []
    with pytest.raises(ApiException) as err:
        apps.create_namespaced_deployment(namespace, {**DEPLOYMENT, "metadata": {"name": "nope"}})
    assert err.value.status == 403
