"""Shared fixtures: one real control plane per test session, a fresh namespace per test.

The control plane is the real kube-apiserver + etcd (+ controller-manager, scheduler and a fake
kubelet) built from Go modules by tests/cluster/build.sh. It is never skipped: a test that needs
it fails when it cannot start. `WORKSPACE_GITOPS_USE_EXISTING_CLUSTER=1` with `KUBECONFIG` uses an
existing cluster instead; `KUBEBUILDER_ASSETS` points at prebuilt binaries.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "cluster"))
sys.path.insert(0, str(ROOT / "tests" / "cluster" / "images"))

import launcher  # noqa: E402


@dataclass
class ControlPlane:
    """What a test needs to reach the cluster."""

    kubeconfig: Path
    cluster: launcher.Cluster | None  # None for an existing cluster

    def user(self, name: str, namespace: str, roles: list[str], cluster_roles: list[str] | None = None) -> Path:
        """A kubeconfig for a new user bound to exactly these Roles in `namespace`."""
        if self.cluster is None:
            pytest.fail("least-privilege users need the suite's own control plane (client certs from its CA)")
        path = self.cluster.user_kubeconfig(name)
        rbac = admin_client(self.kubeconfig)
        from kubernetes import client

        api = client.RbacAuthorizationV1Api(rbac)
        for role in roles:
            api.create_namespaced_role_binding(namespace, {
                "metadata": {"name": f"{name}-{role}"[:63]},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                "subjects": [{"kind": "User", "name": name, "apiGroup": "rbac.authorization.k8s.io"}]})
        for role in cluster_roles or []:
            api.create_cluster_role_binding({
                "metadata": {"name": f"{name}-{role}-{uuid.uuid4().hex[:6]}"[:63]},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "User", "name": name, "apiGroup": "rbac.authorization.k8s.io"}]})
        return path


def admin_client(kubeconfig: Path):  # type: ignore[no-untyped-def]
    from kubernetes import config

    return config.new_client_from_config(config_file=str(kubeconfig))


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    if os.environ.get("WORKSPACE_GITOPS_USE_EXISTING_CLUSTER") == "1":
        kc = os.environ.get("KUBECONFIG")
        if not kc:
            pytest.fail("WORKSPACE_GITOPS_USE_EXISTING_CLUSTER=1 needs KUBECONFIG")
        yield ControlPlane(kubeconfig=Path(kc), cluster=None)
        return
    d = tmp_path_factory.mktemp("control-plane")
    try:
        c = launcher.start(d, attached=True, fake_nodes=1, node_gpus=1)
    except Exception as e:  # noqa: BLE001 - a missing control plane is a failure, never a skip
        pytest.fail(f"could not start the local control plane: {e}", pytrace=False)
    try:
        yield ControlPlane(kubeconfig=c.kubeconfig, cluster=c)
    finally:
        launcher.stop(d)


@dataclass
class RealPlane(ControlPlane):
    """A control plane whose node is real (kubelet + containerd) and whose Ingresses a real Traefik serves."""

    ingress: Any = None
    """tests.e2e.ides.Ingress: where Traefik listens on loopback, and its CA."""
    kubectl: Path = Path("kubectl")


REAL_HOSTS = ("*.runai.aisingapore.net", "*.example.org", "*.localhost", "localhost")
"""Host names the ingress's certificate covers: the examples' domain and the test repos'."""


@pytest.fixture(scope="session")
def real_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealPlane]:
    """Its own control plane (no fake node) with the real node, the workspace images and Traefik.

    Started once per session, only when a test asks for it; stopped with everything it started.
    """
    import ingress
    from images import build as images

    from tests.e2e.ides import Ingress

    d = tmp_path_factory.mktemp("real-plane")
    try:
        tars = images.build()
        ingress.build()
        c = launcher.start(d / "cluster", attached=True, fake_nodes=0, real_node=True, images=list(tars.values()))
    except Exception as e:  # noqa: BLE001 - a missing real node is a failure, never a skip
        pytest.fail(f"could not start the control plane with a real node: {e}", pytrace=False)
    served = None
    try:
        user = "traefik-ingress"
        ingress.grant(c.kubeconfig, user)
        served = ingress.start(d / "ingress", c.user_kubeconfig(user), hosts=REAL_HOSTS, attached=True)
        yield RealPlane(kubeconfig=c.kubeconfig, cluster=c, ingress=Ingress(served.port, served.ca_cert),
                        kubectl=launcher.binary_dir() / "kubectl")
    finally:
        if served is not None:
            ingress.stop(served)
        launcher.stop(d / "cluster")


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace, named after the test with a uuid suffix, deleted afterwards."""
    from kubernetes import client

    base = request.node.name.lower().replace("_", "-").strip("-")[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:6]}"
    api = client.CoreV1Api(admin_client(control_plane.kubeconfig))
    api.create_namespace({"metadata": {"name": name}})
    yield name
    api.delete_namespace(name)


@pytest.fixture
def make_user(control_plane: ControlPlane, namespace: str) -> Callable[..., Path]:
    def make(roles: list[str], cluster_roles: list[str] | None = None) -> Path:
        return control_plane.user(f"user-{uuid.uuid4().hex[:8]}", namespace, roles, cluster_roles)

    return make
