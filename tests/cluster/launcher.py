"""A real Kubernetes control plane on loopback: etcd + kube-apiserver + controller-manager + scheduler.

Used by pytest (tests/conftest.py), `make cluster` / `make cluster-down`, the demo and the benchmark.
Binaries come from $KUBEBUILDER_ASSETS, else from tests/cluster/build.sh (built once, cached in
~/.cache/workspace-gitops). Certificates are throwaway and live in the cluster directory.

Pods on the fake nodes are only reported Running (tests/cluster/fakekubelet.py). With `real_node`
(`--real-node`) a real kubelet + containerd + runc node named `localhost` joins too and runs them
for real (tests/cluster/realnode.py); while it is there, the fake nodes are tainted NoSchedule.

    python tests/cluster/launcher.py up   --dir D [--audit] [--fake-nodes N] [--real-node [--image I]...]
    python tests/cluster/launcher.py down --dir D
    python tests/cluster/launcher.py host-volume PATH   # a hostPath PV directory, workspaces/ owned by 1000
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
FAKE_NODE_PREFIX = "fake-node-"


def log(msg: str) -> None:
    print(f"[cluster] {msg}", file=sys.stderr, flush=True)


@functools.cache
def binary_dir() -> Path:
    """The directory holding the control-plane binaries, building them on first use."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        return Path(assets)
    out = subprocess.run(["bash", str(HERE / "build.sh")], check=True, stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- certificates ------------------------------------------------------------------------------

def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(key: rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _cert(subject: x509.Name, key: rsa.RSAPrivateKey, issuer: x509.Name, issuer_key: rsa.RSAPrivateKey, *,
          ca: bool = False, server_names: tuple[str, ...] = (), client: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
         .not_valid_after(now + dt.timedelta(days=7))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
    else:
        usages = [x509.ExtendedKeyUsageOID.CLIENT_AUTH] if client else [x509.ExtendedKeyUsageOID.SERVER_AUTH]
        b = b.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if server_names:
        import ipaddress
        alt: list[x509.GeneralName] = []
        for n in server_names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alt.append(x509.DNSName(n))
        b = b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Cluster:
    """A running (or described) control plane rooted at `dir`."""

    dir: Path
    server: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    node: str = ""  # the real node's name ("localhost"), "" without one
    pod_subnet: str = ""  # the real node's pod subnet (on its own bridge), e.g. "10.244.100.0/24"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "admin.kubeconfig"

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    @property
    def audit_log(self) -> Path:
        return self.dir / "audit.log"

    # --- users ---------------------------------------------------------------------------------
    def user_kubeconfig(self, user: str, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig for `user` (client cert signed by the cluster CA); bind it to Roles yourself."""
        ca_key = serialization.load_pem_private_key((self.pki / "ca.key").read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate((self.pki / "ca.crt").read_bytes())
        assert isinstance(ca_key, rsa.RSAPrivateKey)
        key = _key()
        cert = _cert(_name(user, groups), key, ca_cert.subject, ca_key, client=True)
        safe = user.replace(":", "_")
        _write_key(key, self.pki / f"user-{safe}.key")
        (self.pki / f"user-{safe}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        path = self.dir / f"user-{safe}.kubeconfig"
        _write_kubeconfig(path, self.server, self.pki / "ca.crt", self.pki / f"user-{safe}.crt",
                          self.pki / f"user-{safe}.key", user=safe)
        return path

    def save(self) -> None:
        (self.dir / "state.json").write_text(json.dumps({"server": self.server, "pids": self.pids,
                                                         "node": self.node, "pod_subnet": self.pod_subnet}))

    @classmethod
    def load(cls, d: Path) -> Cluster:
        state = json.loads((d / "state.json").read_text())
        return cls(dir=d, server=state["server"], pids=state["pids"], node=state.get("node", ""),
                   pod_subnet=state.get("pod_subnet", ""))


def _write_kubeconfig(path: Path, server: str, ca: Path, crt: Path, key: Path, user: str) -> None:
    cfg = {
        "apiVersion": "v1", "kind": "Config", "current-context": "local",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(crt), "client-key": str(key)}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
    }
    path.write_text(json.dumps(cfg, indent=2))
    path.chmod(0o600)


def _make_pki(pki: Path) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = _name("workspace-gitops-test-ca")
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    _write_key(ca_key, pki / "ca.key")
    (pki / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    srv_key = _key()
    srv = _cert(_name("kube-apiserver"), srv_key, ca_name, ca_key,
                server_names=("127.0.0.1", "localhost", "10.0.0.1", "kubernetes.default.svc"))
    _write_key(srv_key, pki / "apiserver.key")
    (pki / "apiserver.crt").write_bytes(srv.public_bytes(serialization.Encoding.PEM))
    adm_key = _key()
    adm = _cert(_name("admin", ("system:masters",)), adm_key, ca_name, ca_key, client=True)
    _write_key(adm_key, pki / "admin.key")
    (pki / "admin.crt").write_bytes(adm.public_bytes(serialization.Encoding.PEM))
    # The apiserver's identity towards kubelets (logs, exec): bound to system:kubelet-api-admin by realnode.
    kc_key = _key()
    kc = _cert(_name("kube-apiserver-kubelet-client"), kc_key, ca_name, ca_key, client=True)
    _write_key(kc_key, pki / "apiserver-kubelet-client.key")
    (pki / "apiserver-kubelet-client.crt").write_bytes(kc.public_bytes(serialization.Encoding.PEM))
    sa_key = _key()
    _write_key(sa_key, pki / "sa.key")
    (pki / "sa.pub").write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def sign_server_cert(pki: Path, prefix: Path, names: tuple[str, ...]) -> tuple[Path, Path]:
    """A serving certificate for `names` signed by the cluster CA: (prefix.crt, prefix.key)."""
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    key = _key()
    cert = _cert(_name(names[0]), key, ca_cert.subject, ca_key, server_names=names)
    crt_path, key_path = prefix.with_suffix(".crt"), prefix.with_suffix(".key")
    _write_key(key, key_path)
    crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return crt_path, key_path


AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
"""


def _die_with_parent() -> None:
    """Child processes die with the process that started them (pytest), so nothing is left behind."""
    import ctypes
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(name: str, argv: list[str], logdir: Path, attached: bool) -> subprocess.Popen[bytes]:
    out = open(logdir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=_die_with_parent if attached else None, start_new_session=not attached)


def _wait_ready(url: str, ca: Path, crt: Path, key: Path, timeout: float, proc: subprocess.Popen[bytes],
                name: str, logfile: Path) -> None:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(crt), str(key))
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = logfile.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} exited with {proc.returncode}; last log lines:\n{tail}")
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
                if r.status == 200:
                    return
        except Exception as e:  # noqa: BLE001 - we retry until the deadline and report the last one
            last = str(e)
        time.sleep(0.3)
    raise RuntimeError(f"{name} not ready at {url} after {timeout}s: {last}")


def _wait_etcd(port: int, proc: subprocess.Popen[bytes], logfile: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"etcd exited with {proc.returncode}:\n{logfile.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if b'"true"' in r.read():
                    return
        except Exception:  # noqa: BLE001
            pass
        time.sleep(0.2)
    raise RuntimeError("etcd did not become healthy")


def start(d: Path, *, audit: bool = False, attached: bool = False, fake_nodes: int = 1,
          node_gpus: int = 0, timeout: float = 120, real_node: bool = False,
          images: Sequence[Path] = ()) -> Cluster:
    """Start etcd, kube-apiserver, controller-manager and scheduler; write `d/admin.kubeconfig`.

    `real_node`: also a real kubelet + containerd node (realnode.py), Ready and untainted on return,
    with `images` (OCI layout tars, the pause image among them) imported. `attached`: every process
    dies with the caller (PR_SET_PDEATHSIG), the real node's containers included.
    """
    bins = binary_dir()
    for b in BINARIES:
        if not (bins / b).exists():
            raise RuntimeError(f"missing {bins / b}: run `bash tests/cluster/build.sh`")
    d = d.resolve()
    if (d / "state.json").exists():
        stop(d)
    shutil.rmtree(d, ignore_errors=True)
    (d / "logs").mkdir(parents=True)
    pki = d / "pki"
    _make_pki(pki)
    c = Cluster(dir=d)
    logs = d / "logs"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd = _spawn("etcd", [str(bins / "etcd"), "--data-dir", str(d / "etcd"),
                               "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
                               "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                               "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                               "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
                               "--initial-cluster", f"default=http://127.0.0.1:{peer_port}",
                               "--unsafe-no-fsync", "--quota-backend-bytes", str(4 << 30)], logs, attached)
        procs.append(etcd)
        c.pids["etcd"] = etcd.pid
        _wait_etcd(etcd_port, etcd, logs / "etcd.log")
        api_args = [
            str(bins / "kube-apiserver"),
            "--advertise-address=127.0.0.1", "--bind-address=127.0.0.1", f"--secure-port={api_port}",
            f"--etcd-servers=http://127.0.0.1:{etcd_port}", f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/16", "--allow-privileged=true",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            "--disable-admission-plugins=ServiceAccount",
            # Kubelets (the real node's) are reached by name only: `localhost`, never another address of
            # this host; the apiserver checks their serving certificate and shows them its own client one.
            "--kubelet-preferred-address-types=Hostname", f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            "--enable-priority-and-fairness=false", "--max-requests-inflight=2000",
            "--max-mutating-requests-inflight=1000",
        ]
        if audit:
            (d / "audit-policy.yaml").write_text(AUDIT_POLICY)
            api_args += [f"--audit-policy-file={d / 'audit-policy.yaml'}", f"--audit-log-path={c.audit_log}",
                         "--audit-log-format=json", "--audit-log-mode=blocking", "--audit-log-maxsize=0"]
        api = _spawn("kube-apiserver", api_args, logs, attached)
        procs.append(api)
        c.pids["kube-apiserver"] = api.pid
        c.server = f"https://127.0.0.1:{api_port}"
        _write_kubeconfig(c.kubeconfig, c.server, pki / "ca.crt", pki / "admin.crt", pki / "admin.key", "admin")
        _wait_ready(f"{c.server}/readyz", pki / "ca.crt", pki / "admin.crt", pki / "admin.key", timeout, api,
                    "kube-apiserver", logs / "kube-apiserver.log")
        kcm = _spawn("kube-controller-manager", [
            str(bins / "kube-controller-manager"), f"--kubeconfig={c.kubeconfig}",
            f"--authentication-kubeconfig={c.kubeconfig}", f"--authorization-kubeconfig={c.kubeconfig}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=false",
            # No kubelet heartbeats here: the node lifecycle controller would taint and evict.
            "--controllers=*,-node-lifecycle-controller",
            "--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10",
            "--kube-api-qps=500", "--kube-api-burst=1000",
            # A claim the volume controller sees before its volume is bound only at the next resync
            # (15 s by default): the suite's and the benchmark's claims are Bound within 2 s instead.
            "--pvclaimbinder-sync-period=2s",
        ], logs, attached)
        procs.append(kcm)
        c.pids["kube-controller-manager"] = kcm.pid
        sched = _spawn("kube-scheduler", [
            str(bins / "kube-scheduler"), f"--kubeconfig={c.kubeconfig}",
            f"--authentication-kubeconfig={c.kubeconfig}", f"--authorization-kubeconfig={c.kubeconfig}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            "--kube-api-qps=500", "--kube-api-burst=1000",
        ], logs, attached)
        procs.append(sched)
        c.pids["kube-scheduler"] = sched.pid
        c.save()
        if fake_nodes:
            import fakekubelet
            fakekubelet.register_nodes(c.kubeconfig, fake_nodes, gpus=node_gpus, schedulable=not real_node)
            kl = _spawn("fake-kubelet", [sys.executable, str(HERE / "fakekubelet.py"), str(c.kubeconfig)],
                        logs, attached)
            c.pids["fake-kubelet"] = kl.pid
            c.save()
        if real_node:
            import realnode
            node = realnode.start(c, images=images, attached=attached, timeout=timeout)
            c.node, c.pod_subnet = node.name, node.subnet
            c.save()
        return c
    except BaseException:
        if real_node:
            import realnode
            realnode.stop(d / "node")
        for p in procs:
            p.kill()
        raise


def _gone(pid: int) -> bool:
    """No such process, or only a zombie (after `up`, the processes' parent is PID 1, which reaps when it likes)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def stop(d: Path) -> None:
    """Stop the real node (if any), then every process of the control plane at `d` (TERM, then KILL)."""
    if (d / "node" / "node.json").exists():
        import realnode
        realnode.stop(d / "node")
    try:
        c = Cluster.load(d)
    except FileNotFoundError:
        return
    for name, pid in reversed(list(c.pids.items())):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if _gone(pid):
                break
            time.sleep(0.05)
        else:
            log(f"{name} (pid {pid}) ignored SIGTERM; killing")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    (d / "state.json").unlink(missing_ok=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["up", "down", "binaries", "user", "host-volume"])
    ap.add_argument("name", nargs="?", help="with `user`: the user name (prints its kubeconfig path); "
                                            "with `host-volume`: the directory")
    ap.add_argument("--dir", type=Path, default=Path(".cluster"))
    ap.add_argument("--audit", action="store_true", help="write an audit log of every request (Metadata level)")
    ap.add_argument("--fake-nodes", type=int, default=1, help="fake nodes whose pods are made Ready")
    ap.add_argument("--node-gpus", type=int, default=0, help="allocatable nvidia.com/gpu per fake node")
    ap.add_argument("--real-node", action="store_true",
                    help="also a real node (kubelet + containerd) named localhost that runs the pods")
    ap.add_argument("--image", action="append", default=[], metavar="NAME|TAR",
                    help="with --real-node: an image to import, a tar or a name from tests/cluster/images/build.py "
                         "(pause, jupyterlab, vscode); default: all of them (built on first use)")
    a = ap.parse_args()
    if a.action == "binaries":
        print(binary_dir())
        return 0
    if a.action == "user":
        print(Cluster.load(a.dir.resolve()).user_kubeconfig(a.name))
        return 0
    if a.action == "host-volume":
        import realnode
        print(realnode.make_host_volume(Path(a.name).resolve()))
        return 0
    if a.action == "down":
        stop(a.dir.resolve())
        log(f"stopped the control plane in {a.dir}")
        return 0
    log("starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler (first run builds them)")
    try:
        tars = _image_tars(a.image) if a.real_node else []
        c = start(a.dir, audit=a.audit, fake_nodes=a.fake_nodes, node_gpus=a.node_gpus, real_node=a.real_node,
                  images=tars)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        log(f"error: {e}")
        return 1
    log(f"control plane ready at {c.server}; stop it with `make cluster-down`")
    if c.node:
        log(f"real node {c.node} Ready, pods on {c.pod_subnet}; logs in {c.dir / 'logs'}")
    print(f"export KUBECONFIG={c.kubeconfig}")
    return 0


def _image_tars(wanted: list[str]) -> list[Path]:
    """OCI tars for --image values (paths, or names built by images/build.py); the pause image always."""
    from images import build as images

    names = [w for w in wanted if not w.endswith(".tar")]
    tars = [Path(w).resolve() for w in wanted if w.endswith(".tar")]
    built = images.build(None if not wanted else ["pause", *names])
    return [*built.values(), *tars]


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.modules.setdefault("launcher", sys.modules[__name__])  # realnode imports this module by name
    sys.exit(main())
