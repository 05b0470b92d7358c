"""A real node (kubelet + containerd + runc + a CNI bridge) on the suite's kind of control plane.

The module starts its OWN control plane with the real node and no fake node, runs real pods on it
(the JupyterLab image from tests/cluster/images/build.py: python3 for a web server), and checks what
the workspaces need from a node: Running/Ready pods, `kubectl logs` and `kubectl exec` through the
apiserver, a hostPath PersistentVolume written by UID 1000 and seen on the host, pod IPs reachable
from the host. The last test stops it and asserts nothing is left: no kubelet/containerd/shim/container
process, no mount, no bridge or veth, no cgroup.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "cluster"))

import launcher  # noqa: E402
import realnode  # noqa: E402

pytestmark = [pytest.mark.cluster, pytest.mark.real_node]

RESTRICTED = {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
              "seccompProfile": {"type": "RuntimeDefault"}}


@dataclass
class RealCluster:
    cluster: launcher.Cluster
    image: str  # an image with python3 (JupyterLab's)
    namespace: str
    started_in: float

    @property
    def node_dir(self) -> Path:
        return self.cluster.dir / "node"

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        kubectl = launcher.binary_dir() / "kubectl"
        return subprocess.run([str(kubectl), f"--kubeconfig={self.cluster.kubeconfig}", "-n", self.namespace,
                               f"--cache-dir={self.cluster.dir / 'kubectl-cache'}", *args],
                              capture_output=True, text=True, check=check, timeout=timeout)

    def core(self):  # type: ignore[no-untyped-def]
        from kubernetes import client, config

        return client.CoreV1Api(config.new_client_from_config(config_file=str(self.cluster.kubeconfig)))

    def pod(self, name: str, spec: dict[str, object]) -> None:
        self.core().create_namespaced_pod(self.namespace, {"metadata": {"name": name}, "spec": spec})

    def wait_pod(self, name: str, cond: str = "Ready", timeout: float = 120) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        last: dict[str, object] = {}
        while time.monotonic() < deadline:
            last = self.core().read_namespaced_pod(name, self.namespace).to_dict()
            status = last["status"] or {}
            if cond == "Ready" and any(c["type"] == "Ready" and c["status"] == "True"
                                       for c in status.get("conditions") or []):
                return last
            if cond == "Succeeded" and status.get("phase") == "Succeeded":
                return last
            if status.get("phase") == "Failed":
                break
            time.sleep(0.5)
        events = self.kubectl("get", "events", "-o", "wide", check=False).stdout
        logs = Path(self.cluster.dir, "logs", "kubelet.log").read_text(errors="replace")[-3000:]
        raise AssertionError(f"pod {name} not {cond}: {json.dumps(last.get('status'), default=str)[:3000]}\n"
                             f"events:\n{events}\nkubelet.log tail:\n{logs}")


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCluster]:
    from images import build as images

    tars = images.build(["pause", "jupyterlab"])  # cached after the first build
    d = tmp_path_factory.mktemp("real-node")
    t0 = time.monotonic()
    try:
        c = launcher.start(d, attached=True, fake_nodes=0, real_node=True, images=list(tars.values()))
    except Exception as e:  # noqa: BLE001 - a node that cannot start is a failure, never a skip
        launcher.stop(d)
        pytest.fail(f"could not start the control plane with a real node: {e}", pytrace=False)
    try:
        rc = RealCluster(c, images.JUPYTERLAB_IMAGE, f"real-node-{uuid.uuid4().hex[:6]}", time.monotonic() - t0)
        rc.core().create_namespace({"metadata": {"name": rc.namespace}})
        yield rc
    finally:
        launcher.stop(d)


def test_the_node_is_ready_untainted_and_reached_on_loopback(real: RealCluster) -> None:
    assert real.cluster.node == "localhost"
    assert real.cluster.pod_subnet.startswith("10.244.") and real.cluster.pod_subnet.endswith(".0/24")
    node = real.core().read_node("localhost")
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    assert not node.spec.taints
    addresses = {a.type: a.address for a in node.status.addresses}
    assert addresses["Hostname"] == "localhost"
    assert addresses["InternalIP"] == real.cluster.pod_subnet.replace(".0/24", ".1")  # the bridge, not eth0
    print(f"\ncontrol plane + real node started in {real.started_in:.1f}s", file=sys.stderr)


def test_a_pod_runs_and_logs_exec_and_its_ip_work_through_the_apiserver(real: RealCluster) -> None:
    real.pod("web", {
        "containers": [{
            "name": "web", "image": real.image, "imagePullPolicy": "Never",
            "command": ["sh", "-c", "echo hello-from-the-real-node; exec python3 -m http.server 8000"],
            "workingDir": "/tmp", "ports": [{"containerPort": 8000}],
            "readinessProbe": {"tcpSocket": {"port": 8000}, "periodSeconds": 1},
            "securityContext": {**RESTRICTED, "runAsUser": 1000},
        }],
        "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000},
        "terminationGracePeriodSeconds": 1,
    })
    pod = real.wait_pod("web")
    assert pod["spec"]["node_name"] == "localhost"
    assert pod["status"]["phase"] == "Running"
    ip = pod["status"]["pod_ip"]
    import ipaddress

    assert ipaddress.ip_address(ip) in ipaddress.ip_network(real.cluster.pod_subnet)

    assert "hello-from-the-real-node" in real.kubectl("logs", "web").stdout
    out = real.kubectl("exec", "web", "--", "sh", "-c", "id -u; id -g; cat /proc/1/cmdline | tr '\\0' ' '").stdout
    uid, gid, cmdline = out.splitlines()[:3]
    assert (uid, gid) == ("1000", "1000")
    assert "python3 -m http.server" in cmdline or "sh -c" in cmdline

    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an HTTP(S)_PROXY
    with direct.open(f"http://{ip}:8000/", timeout=5) as r:  # from the host, over the node's bridge
        assert r.status == 200
    assert "GET / HTTP" in real.kubectl("logs", "web").stdout + real.kubectl("logs", "web").stderr


def test_uid_1000_writes_a_hostpath_volume_the_host_reads(real: RealCluster, tmp_path: Path) -> None:
    volume = realnode.make_host_volume(tmp_path / "project-pvc")
    core = real.core()
    pv = f"pv-{real.namespace}"
    core.create_persistent_volume(realnode.host_pv(pv, volume, claim_namespace=real.namespace, claim_name="team-pvc",
                                                   size="1Gi"))
    core.create_namespaced_persistent_volume_claim(real.namespace, {
        "metadata": {"name": "team-pvc"},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv,
                 "resources": {"requests": {"storage": "1Gi"}}}})
    real.pod("writer", {
        "restartPolicy": "Never",
        "containers": [{
            "name": "writer", "image": real.image, "imagePullPolicy": "Never",
            "command": ["sh", "-c", "mkdir -p /data/workspaces/alice && echo written-by-$(id -u) > "
                                    "/data/workspaces/alice/hello.txt"],
            "volumeMounts": [{"name": "team", "mountPath": "/data"}],
            "securityContext": {**RESTRICTED, "runAsUser": 1000},
        }],
        "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000},
        "volumes": [{"name": "team", "persistentVolumeClaim": {"claimName": "team-pvc"}}],
    })
    real.wait_pod("writer", "Succeeded")
    written = volume / "workspaces" / "alice" / "hello.txt"
    assert written.read_text() == "written-by-1000\n"
    assert (written.stat().st_uid, written.stat().st_gid) == (1000, 1000)


def test_a_sigkilled_owner_leaves_no_process_or_mount_and_the_next_start_sweeps_the_bridge(
        real: RealCluster, tmp_path_factory: pytest.TempPathFactory) -> None:
    """SIGKILL of the process that started the node (pytest, say): the kernel ends the node's namespace.

    Runs next to the module's node, so it is also two real nodes on one host at once (own bridges).
    """
    from images import build as images

    tars = [str(t) for t in images.build(["pause", "jupyterlab"]).values()]
    d = tmp_path_factory.mktemp("owner")  # a short path: unix sockets live below it
    owner = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
from pathlib import Path
sys.path.insert(0, {str(ROOT / "tests" / "cluster")!r})
import launcher
launcher.start(Path({str(d)!r}), attached=True, fake_nodes=0, real_node=True, images=[Path(t) for t in {tars!r}])
print("READY", flush=True)
time.sleep(3600)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "READY", "the owner could not start its node"
        other = RealCluster(launcher.Cluster.load(d), real.image, "default", 0)
        assert other.cluster.pod_subnet != real.cluster.pod_subnet
        other.pod("sleeper", {"containers": [{"name": "s", "image": real.image, "imagePullPolicy": "Never",
                                              "command": ["sleep", "3600"],
                                              "securityContext": {**RESTRICTED, "runAsUser": 1000}}],
                              "terminationGracePeriodSeconds": 1})
        other.wait_pod("sleeper")
        node = realnode.Node.load(d / "node")
        running = realnode._node_processes(node)
        assert any("containerd-shim" in what for _, what in running), running
        assert any(what.startswith("sleep 3600") for _, what in running), running
    finally:
        owner.kill()
        owner.wait()
    deadline = time.monotonic() + 10
    while realnode._node_processes(node) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert realnode._node_processes(node) == []
    assert str(d / "node") not in Path("/proc/self/mountinfo").read_text()
    # Only host-namespace things remain (the bridge, empty cgroups) until a sweep: any start, or stop.
    assert f"interface {node.bridge}" in realnode.leftovers(d / "node")
    assert node.bridge in realnode.sweep_stale()
    assert realnode.leftovers(d / "node") == []
    launcher.stop(d)  # the control plane's processes died with the owner too (PDEATHSIG); this tidies state


def test_stop_leaves_nothing_behind(real: RealCluster) -> None:
    node = realnode.Node.load(real.node_dir)
    pod_ips = [p.status.pod_ip for p in real.core().list_namespaced_pod(real.namespace).items if p.status.pod_ip]
    running = realnode._node_processes(node)
    names = {what.split()[0].rsplit("/", 1)[-1] for _, what in running}
    assert {"kubelet", "containerd"} <= names, running  # the scan does see the node while it runs
    assert any("containerd-shim" in what for _, what in running), running
    t0 = time.monotonic()
    launcher.stop(real.cluster.dir)
    print(f"\ncontrol plane + real node stopped in {time.monotonic() - t0:.1f}s", file=sys.stderr)

    assert realnode.leftovers(real.node_dir) == []
    assert [pid for pid, _ in running if realnode._alive(pid)] == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(real.node_dir) not in mounts
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert node.bridge not in links
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout
    assert node.subnet not in routes  # (so nothing may dial the old pod IPs now: they would leave the host)
    assert pod_ips
