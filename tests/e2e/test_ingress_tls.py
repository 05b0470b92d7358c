"""project.yaml's `ingress.tlsSecret` and `ingress.className` on real parts: the real node and Traefik.

The team's own wildcard certificate, from a CA this test makes, is a `kubernetes.io/tls` Secret in the
namespace; project.yaml names it and the IngressClass Traefik serves. The reconciler renders the
workspace's Ingress with `ingressClassName` and `spec.tls`; Traefik (started here with IngressClass lookup
on, tests/cluster/ingress.py) serves the workspace with THAT certificate: curl verifies it against the
team's CA, and a client that trusts only Traefik's own default certificate's CA is refused. Naming an
IngressClass of another controller takes the workspace off this ingress (404 from Traefik).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ingress as ingress_mod
import launcher
import pytest
from cryptography.hazmat.primitives import serialization

from tests.conftest import RealPlane
from tests.e2e.helpers import Admin, Repo, reconcile

pytestmark = [pytest.mark.cluster, pytest.mark.real_node]

PVC = "sample-project-pvc"
WORKSPACE = "john-tan-jupyterlab"
SECRET = "team-wildcard-tls"


@dataclass
class Setup:
    plane: RealPlane
    admin: Admin
    repo: Repo
    traefik: ingress_mod.Ingress
    team_ca: Path
    served_class: str
    other_class: str

    @property
    def host(self) -> str:
        project = self.repo.read("project.yaml")
        return f"{project['metadata']['name']}-{WORKSPACE}.{project['spec']['domain']}"

    def apply(self) -> None:
        run = reconcile("--repo", str(self.repo.path), "--output", "json", "--timeout", "240",
                        kubeconfig=self.plane.kubeconfig, timeout=330)
        assert run.code == 0, str(run)

    def curl(self, ca: Path | None, path: str = "/login") -> subprocess.CompletedProcess[str]:
        """GET https://<host><path> through Traefik; the certificate verified against `ca` (None: not verified)."""
        trust = ["--cacert", str(ca)] if ca else ["-k"]
        return subprocess.run(["curl", "-sS", "--max-time", "20", *trust, "--connect-to",
                               f"{self.host}:443:127.0.0.1:{self.traefik.port}", "-o", "/dev/null",
                               "-w", "%{http_code}", f"https://{self.host}{path}"],
                              capture_output=True, text=True, timeout=40)

    def wait(self, status: str, ca: Path | None, timeout: float = 60) -> None:
        """Until curl (verifying against `ca`) gets HTTP `status`; Traefik takes a moment to see a change."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.curl(ca)
            if r.returncode == 0 and r.stdout.strip() == status:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"no {status} from {self.host} after {timeout}s: curl {r.returncode} "
                                     f"{r.stdout} {r.stderr}\n{self.traefik.log.read_text(errors='replace')[-2000:]}")
            time.sleep(1)


def _team_certificate(d: Path, domain: str) -> tuple[Path, bytes, bytes]:
    """The team's CA (its certificate file) and a `*.domain` certificate and key it signed (PEM)."""
    ca_key = launcher._key()
    ca_name = launcher._name(f"team-ca-{uuid.uuid4().hex[:6]}")
    ca = launcher._cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    key = launcher._key()
    cert = launcher._cert(launcher._name(f"*.{domain}"), key, ca_name, ca_key, server_names=(f"*.{domain}",))
    ca_path = d / "team-ca.crt"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    return ca_path, cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture(scope="module")
def setup(real_plane: RealPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    import base64

    from kubernetes import client
    from kubernetes.client.rest import ApiException

    namespace = f"tls-{uuid.uuid4().hex[:6]}"
    tmp = tmp_path_factory.mktemp("ingress-tls")
    admin = Admin(real_plane.kubeconfig, namespace)
    net = client.NetworkingV1Api(admin.api)
    suffix = uuid.uuid4().hex[:6]
    served, other = f"traefik-{suffix}", f"other-{suffix}"
    user = f"traefik-classes-{suffix}"
    traefik = None
    admin.core.create_namespace({"metadata": {"name": namespace}})
    try:
        for name, controller in ((served, ingress_mod.CLASS_CONTROLLER), (other, "example.com/other-controller")):
            net.create_ingress_class({"metadata": {"name": name}, "spec": {"controller": controller}})
        admin.bound_pvc(PVC, host_dir=tmp / "volume")
        repo = Repo(tmp / "repo", namespace)
        for name in repo.workspaces():
            if name != WORKSPACE:
                repo.remove(f"workspaces/{name}.yaml")
        domain = repo.read("project.yaml")["spec"]["domain"]
        team_ca, crt, key = _team_certificate(tmp, domain)
        admin.core.create_namespaced_secret(namespace, {
            "metadata": {"name": SECRET}, "type": "kubernetes.io/tls",
            "data": {"tls.crt": base64.b64encode(crt).decode(), "tls.key": base64.b64encode(key).decode()}})
        ingress_mod.grant(real_plane.kubeconfig, user, ingress_classes=True)
        assert real_plane.cluster is not None
        # Traefik's own default certificate covers the same names: only the Secret can make the team's CA verify.
        traefik = ingress_mod.start(tmp / "traefik", real_plane.cluster.user_kubeconfig(user),
                                    hosts=(f"*.{domain}",), attached=True, ingress_classes=True)
        yield Setup(real_plane, admin, repo, traefik, team_ca, served, other)
    finally:
        if traefik is not None:
            ingress_mod.stop(traefik)
        ingress_mod.revoke(real_plane.kubeconfig, user)
        admin.delete_namespace_and_wait()
        for name in (served, other):
            try:
                net.delete_ingress_class(name)
            except ApiException as e:
                if e.status != 404:
                    raise


def test_the_workspace_is_served_with_the_projects_tls_secret_through_its_ingress_class(setup: Setup) -> None:
    setup.repo.edit("project.yaml", lambda d: d["spec"].update(
        ingress={"tlsSecret": SECRET, "className": setup.served_class}))
    setup.apply()
    ing = setup.admin.net.read_namespaced_ingress(WORKSPACE, setup.repo.namespace)
    assert ing.spec.ingress_class_name == setup.served_class
    assert [t.secret_name for t in ing.spec.tls] == [SECRET]

    # JupyterLab's own login page, over TLS verified against the team's CA alone.
    setup.wait("200", setup.team_ca)
    # ... and not Traefik's default certificate: a client trusting only Traefik's CA is refused.
    refused = setup.curl(setup.traefik.ca_cert)
    assert refused.returncode == 60, f"curl {refused.returncode}: {refused.stderr}"  # 60: peer certificate


def test_an_ingress_of_another_class_is_not_served(setup: Setup) -> None:
    setup.repo.edit("project.yaml", lambda d: d["spec"].update(
        ingress={"tlsSecret": SECRET, "className": setup.other_class}))
    setup.apply()
    ing = setup.admin.net.read_namespaced_ingress(WORKSPACE, setup.repo.namespace)
    assert ing.spec.ingress_class_name == setup.other_class
    # Traefik drops the route: its own 404, whichever certificate it shows now.
    setup.wait("404", None)
    setup.repo.edit("project.yaml", lambda d: d["spec"].update(
        ingress={"tlsSecret": SECRET, "className": setup.served_class}))
    setup.apply()
    setup.wait("200", setup.team_ca)
