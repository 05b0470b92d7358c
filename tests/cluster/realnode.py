"""A real node next to the launcher's control plane: kubelet + containerd + runc + a CNI bridge.

    launcher.start(d, real_node=True, images=[...OCI tars...])   # or: launcher.py up --real-node
    launcher.stop(d)                                              # or: launcher.py down

Everything the node runs lives in ONE private PID + mount namespace whose init is a small Python
process (`_keeper` below, then `_init` inside the namespace):

    pytest / launcher --(PDEATHSIG when attached)--> keeper (host PID ns, own session)
        --(PDEATHSIG)--> init = PID 1 of a new PID ns, in a new private mount ns
            -> containerd -> containerd-shim-runc-v2 -> pause + containers
            -> kubelet

When the init dies, however it dies, the kernel SIGKILLs every process of its PID namespace (shims
and containers included) and drops every mount made inside it (overlay rootfs, pod volumes, shm,
the netns bind mounts), which frees the pods' network namespaces and with them their veths;
containerd's root and state are tmpfs mounts in there, so images and snapshots go too. The
keeper SIGKILLs the init on SIGTERM/SIGINT/SIGHUP; PR_SET_PDEATHSIG kills the keeper with its
starter (attached mode) and the init with the keeper, so a SIGKILLed pytest leaves no process and
no mount behind. What the kernel cannot drop is in the host network namespace / cgroupfs: the CNI
bridge (`wgnode<N>`) and the empty cgroup directories under `/<bridge>` (the kubelet's cgroupRoot).
`stop` deletes both; a claim file in /run/workspace-gitops/nodes lets the next `start` (any
cluster) or `stop` sweep them when their keeper is dead.

Host side effects avoided on purpose: hardcoded host paths of containerd/kubelet/libcni (/run,
/var/log, /var/lib/cni, /var/lib/kubelet) are tmpfs inside the namespace (the last two are created
empty on the host if missing, as mount points); the kernel sysctls the kubelet
would set (vm.overcommit_memory, kernel.panic, ...) are shadowed inside the namespace by files
holding the values it expects; the kubelet makes no iptables chains; the bridge has no masquerade,
the pods no default route (they reach the bridge subnet only), the host keeps ip_forward as it is;
image pulls go to 127.0.0.1:9 (refused), never to a registry.

Pods run as on a real node; the node is `localhost` (the apiserver dials the kubelet on loopback:
`--kubelet-preferred-address-types=Hostname`), InternalIP = the bridge's address.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import ipaddress
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NODE_NAME = "localhost"
CLAIMS = Path("/run/workspace-gitops/nodes")  # one JSON file per live node on this host
SUBNET_INDEXES = range(100, 250)  # 10.244.N.0/24; the fake kubelet invents 10.244.<node index>.x
BRIDGE_PREFIX = "wgnode"
CONTAINERD = "/usr/bin/containerd"
CTR = "/usr/bin/ctr"
RUNC = "/usr/sbin/runc"
CNI_BIN_DIR = "/usr/lib/cni"
CRI_NAMESPACE = "k8s.io"
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"  # the apiserver's identity towards kubelets
# What the kubelet's container manager insists on (setupKernelTunables); shadowed inside the namespace.
KUBELET_SYSCTLS = {"vm/overcommit_memory": "1", "vm/panic_on_oom": "0", "kernel/panic": "10",
                   "kernel/panic_on_oops": "1", "kernel/keys/root_maxkeys": "1000000",
                   "kernel/keys/root_maxbytes": "25000000"}

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWPID = 0x00020000, 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG = 1


def log(msg: str) -> None:
    print(f"[node] {msg}", file=sys.stderr, flush=True)


@dataclass
class Node:
    """A real node (running or described); saved as `<cluster>/node/node.json`."""

    dir: str  # <cluster dir>/node: containerd's and the kubelet's private state
    logs: str  # <cluster dir>/logs: containerd.log, kubelet.log, node.log
    index: int  # N of the pod subnet 10.244.N.0/24
    name: str = NODE_NAME
    keeper: int = 0  # pid of the keeper (host PID namespace)
    pidns: str = ""  # "pid:[inode]" of the node's PID namespace, to find any process left in it
    mntns: str = ""  # "mnt:[inode]" of its mount namespace
    kubelet_port: int = 0

    @property
    def bridge(self) -> str:
        return f"{BRIDGE_PREFIX}{self.index}"

    @property
    def subnet(self) -> str:
        return f"10.244.{self.index}.0/24"

    @property
    def gateway(self) -> str:
        return f"10.244.{self.index}.1"

    @property
    def cgroup(self) -> str:
        """The kubelet's cgroupRoot (made by _claim): kubepods/<qos>/pod<uid>/<container> are below it."""
        return f"/{self.bridge}"

    @property
    def socket(self) -> Path:
        return Path(self.dir) / "containerd" / "containerd.sock"

    def save(self) -> None:
        (Path(self.dir) / "node.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, node_dir: Path) -> Node:
        return cls(**json.loads((node_dir / "node.json").read_text()))


# --- small system helpers -------------------------------------------------------------------------

def _check(ret: int, what: str) -> None:
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                       data.encode() if data else None), f"mount {source} on {target}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):  # our own zombie child: reap it, it is dead
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _is_keeper(pid: int, node_dir: str) -> bool:
    """Is `pid` (still) the keeper of the node at node_dir (not a recycled pid)?"""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return False
    return b"_keeper" in argv and str(Path(node_dir) / "init.json").encode() in argv and _alive(pid)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def _tail(path: Path, chars: int = 2500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return "(no log)"


# --- the namespace: keeper (host side) and init (PID 1 inside) --------------------------------------

def _keeper(config: Path) -> int:
    """Fork the namespace's init and stay its parent; SIGTERM/SIGINT/SIGHUP end the whole namespace."""
    cfg = json.loads(config.read_text())
    _check(_libc.unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")
    alive_r, alive_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(alive_w)
        code = 1
        try:
            code = _init(cfg, alive_r)
        except BaseException:  # noqa: BLE001 - PID 1 must never raise past here
            traceback.print_exc()
        os._exit(code)
    os.close(alive_r)

    def end(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, end)
    _, status = os.waitpid(pid, 0)
    print(f"[node keeper] namespace init exited ({status:#x}); every process of the node is gone", flush=True)
    return 0


def _init(cfg: dict[str, Any], alive_fd: int) -> int:
    """PID 1 of the node's namespace: private mounts, then containerd and the kubelet; reaps everything."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    readable, _, _ = select.select([alive_fd], [], [], 0)
    if readable and os.read(alive_fd, 1) == b"":  # the keeper died before PDEATHSIG was armed
        return 1
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the keeper decides; SIGKILL from it ends everything
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount("none", "/", None, MS_REC | MS_PRIVATE)  # nothing mounted here propagates to the host
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    # Host paths containerd, the shims, the kubelet and libcni write to no matter what they are told:
    # /run/containerd/s (shim sockets), /var/log/containers (kubelet symlinks), /var/lib/cni (results cache),
    # /var/lib/kubelet/device-plugins (the kubelet's device plugin socket, whatever its --root-dir).
    for target in ("/run", "/var/log", "/var/lib/cni", "/var/lib/kubelet"):
        os.makedirs(target, exist_ok=True)
        _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    os.makedirs("/var/log/containers")
    # The kubelet rewrites these kernel settings unless they already hold what it wants: let it read that.
    shadow = Path("/run/sysctl")
    shadow.mkdir()
    for key, value in KUBELET_SYSCTLS.items():
        real = Path("/proc/sys") / key
        if real.read_text().strip() != value:
            f = shadow / key.replace("/", ".")
            f.write_text(value + "\n")
            _mount(str(f), str(real), None, MS_BIND)
    # containerd's root (images, snapshots, writable layers) and state (bundles, netns) in memory: they
    # vanish with the namespace, however it ends (deleting an unpacked image from this disk takes ~25 s).
    for target in (cfg["containerd_root"], cfg["containerd_state"]):
        os.makedirs(target, exist_ok=True)
        _mount("tmpfs", target, "tmpfs", MS_NODEV, "mode=711")
    # overlayfs if it mounts there, else the native snapshotter.
    probe = Path(cfg["containerd_root"]) / "overlay-probe"
    for sub in ("lower", "upper", "work", "merged"):
        (probe / sub).mkdir(parents=True, exist_ok=True)
    snapshotter = "overlayfs"
    try:
        _mount("overlay", str(probe / "merged"), "overlay", 0,
               f"lowerdir={probe / 'lower'},upperdir={probe / 'upper'},workdir={probe / 'work'}")
        _check(_libc.umount2(str(probe / "merged").encode(), 0), "umount overlay probe")
    except OSError as e:
        print(f"[node init] overlayfs does not mount here ({e}); using the native snapshotter", flush=True)
        snapshotter = "native"
    shutil.rmtree(probe, ignore_errors=True)
    conf = Path(cfg["containerd_config"])
    conf.write_text(conf.read_text().replace("@SNAPSHOTTER@", snapshotter))
    Path(cfg["dir"], "snapshotter").write_text(snapshotter)

    def spawn(name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        out = open(Path(cfg["logs"]) / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=cfg["env"], cwd="/")

    containerd = spawn("containerd", cfg["containerd"])
    sock = Path(cfg["socket"])
    deadline = time.monotonic() + 30
    while not sock.exists():
        if containerd.poll() is not None or time.monotonic() > deadline:
            print("[node init] containerd did not come up", flush=True)
            return 1
        time.sleep(0.05)
    kubelet = spawn("kubelet", cfg["kubelet"])
    print(f"[node init] containerd ({snapshotter}) and kubelet started", flush=True)
    main = {containerd.pid: "containerd", kubelet.pid: "kubelet"}
    while True:  # reap every process re-parented to PID 1; end the node if a main one exits
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1
        if pid in main:
            print(f"[node init] {main[pid]} exited ({status:#x}); ending the node", flush=True)
            return 1


# --- claims: which bridge/subnet/cgroup belongs to which live node on this host ---------------------

@contextlib.contextmanager
def _claims_locked() -> Iterator[None]:
    CLAIMS.mkdir(parents=True, exist_ok=True)
    with open(CLAIMS / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _routed(subnet: ipaddress.IPv4Network) -> bool:
    out = _ip("-4", "-o", "route", "show", "table", "all").stdout + _ip("-4", "-o", "addr", "show").stdout
    for word in out.split():
        try:
            net = ipaddress.ip_network(word, strict=False)
        except ValueError:
            continue
        if isinstance(net, ipaddress.IPv4Network) and net.prefixlen > 0 and net.overlaps(subnet):
            return True
    return False


def sweep_stale() -> list[str]:
    """Delete the bridge and cgroups of every claimed node whose keeper is gone (e.g. pytest was SIGKILLed)."""
    removed: list[str] = []
    with _claims_locked():
        for claim in sorted(CLAIMS.glob("*.json")):
            try:
                node = Node(**json.loads(claim.read_text()))
            except (ValueError, TypeError, FileNotFoundError):
                claim.unlink(missing_ok=True)
                continue
            if node.keeper and _is_keeper(node.keeper, node.dir):
                continue
            _release(node)
            claim.unlink(missing_ok=True)
            removed.append(node.bridge)
    return removed


def _claim(node_dir: Path, logs: Path) -> Node:
    """Pick a free 10.244.N.0/24 and make its bridge (address .1) under the host-wide lock."""
    sweep_stale()
    with _claims_locked():
        taken = {int(p.stem[len(BRIDGE_PREFIX):]) for p in CLAIMS.glob(f"{BRIDGE_PREFIX}*.json")}
        for n in SUBNET_INDEXES:
            node = Node(dir=str(node_dir), logs=str(logs), index=n)
            if n in taken or _routed(ipaddress.ip_network(node.subnet)):
                continue
            if _ip("link", "show", node.bridge, check=False).returncode == 0:
                continue  # someone else's interface of that name
            (CLAIMS / f"{node.bridge}.json").write_text(json.dumps(asdict(node)))
            _ip("link", "add", "name", node.bridge, "type", "bridge")
            _ip("addr", "add", f"{node.gateway}/24", "dev", node.bridge)
            _ip("link", "set", node.bridge, "up")
            for root in _cgroup_roots():
                (root / node.cgroup.lstrip("/")).mkdir(exist_ok=True)
            return node
    raise RuntimeError("no free pod subnet 10.244.N.0/24 (N in 100..249) on this host")


def _cgroup_roots() -> list[Path]:
    roots = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] in ("cgroup", "cgroup2"):
            roots.append(Path(left.split()[4]))
    return roots


def _release(node: Node) -> list[str]:
    """Delete what outlives the namespace: the bridge (and any port left on it) and the cgroups."""
    problems: list[str] = []
    deadline = time.monotonic() + 5
    while True:  # the pods' netns are freed asynchronously; their veths go with them
        ports = _ip("-o", "link", "show", "master", node.bridge, check=False).stdout.strip()
        if not ports or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for line in ports.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        _ip("link", "del", name, check=False)
        problems.append(f"veth {name} was still on {node.bridge}")
    if _ip("link", "show", node.bridge, check=False).returncode == 0:
        r = _ip("link", "del", node.bridge, check=False)
        if r.returncode != 0:
            problems.append(f"ip link del {node.bridge}: {r.stderr.strip()}")
    for root in _cgroup_roots():
        top = root / node.cgroup.lstrip("/")
        if not top.is_dir():
            continue
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [top]:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        problems.append(f"rmdir {d}: {e}")
                        break
                    time.sleep(0.1)
            else:
                problems.append(f"rmdir {d}: busy")
    return problems


# --- configuration -------------------------------------------------------------------------------

def _containerd_config(node: Node, pause_image: str) -> str:
    d = Path(node.dir) / "containerd"
    return f"""version = 2
root = "{d / 'root'}"
state = "{d / 'state'}"
oom_score = 0
[grpc]
  address = "{node.socket}"
[ttrpc]
  address = ""
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d / 'opt'}"
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  sandbox_image = "{pause_image}"
  netns_mounts_under_state_dir = true
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_tls_streaming = false
  systemd_cgroup = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "@SNAPSHOTTER@"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{Path(node.dir) / 'cni' / 'net.d'}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{d / 'hosts'}"
"""


def _cni_config(node: Node) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0", "name": node.bridge,
        "plugins": [{
            "type": "bridge", "bridge": node.bridge,
            # The bridge already has .1 (made by _claim): no gateway/forwarding/masquerade changes on the host,
            # and no default route in the pods: they reach the bridge subnet (and the host on .1) only.
            "isGateway": False, "isDefaultGateway": False, "ipMasq": False, "hairpinMode": False,
            "ipam": {"type": "host-local", "dataDir": str(Path(node.dir) / "cni" / "ipam"), "routes": [],
                     "ranges": [[{"subnet": node.subnet, "rangeStart": f"10.244.{node.index}.2",
                                  "rangeEnd": f"10.244.{node.index}.254", "gateway": node.gateway}]]},
        }],
    }


def _kubelet_config(node: Node, ca: Path, crt: Path, key: Path, healthz_port: int) -> dict[str, Any]:
    d = Path(node.dir)
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": "127.0.0.1", "port": node.kubelet_port, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": healthz_port,
        "tlsCertFile": str(crt), "tlsPrivateKeyFile": str(key),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": str(ca)}},
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{node.socket}", "imageServiceEndpoint": f"unix://{node.socket}",
        "cgroupDriver": "cgroupfs", "cgroupRoot": node.cgroup, "cgroupsPerQOS": True, "failCgroupV1": False,
        "enforceNodeAllocatable": [], "failSwapOn": False, "localStorageCapacityIsolation": False,
        "evictionHard": {}, "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "makeIPTablesUtilChains": False, "protectKernelDefaults": False,
        "podLogsDir": str(d / "pod-logs"), "resolvConf": "", "serializeImagePulls": False,
        "rotateCertificates": False, "serverTLSBootstrap": False,
        "nodeStatusReportFrequency": "10s", "nodeStatusUpdateFrequency": "5s",
        "syncFrequency": "10s", "runtimeRequestTimeout": "2m",
    }


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- start / stop -----------------------------------------------------------------------------------

def start(cluster: Any, *, images: Sequence[Path] = (), attached: bool = False, timeout: float = 120) -> Node:
    """Start the node for `cluster` (a launcher.Cluster); Ready, untainted, with `images` imported.

    `images` are OCI layout tars; the pause image (images/build.py's PAUSE_IMAGE) must be one of them.
    """
    import launcher
    from images.build import PAUSE_IMAGE, import_images
    from kubernetes import client, config

    bins = launcher.binary_dir()
    if not (bins / "kubelet").exists():
        raise RuntimeError(f"missing {bins / 'kubelet'}: run `bash tests/cluster/build.sh`")
    for tool in (CONTAINERD, CTR, RUNC, f"{CNI_BIN_DIR}/bridge", f"{CNI_BIN_DIR}/host-local",
                 f"{CNI_BIN_DIR}/loopback", "/usr/bin/containerd-shim-runc-v2"):
        if not Path(tool).exists():
            raise RuntimeError(f"missing {tool}: apt-get install containerd runc containernetworking-plugins")
    t0 = time.monotonic()
    cdir: Path = cluster.dir
    node_dir, logs = cdir / "node", cdir / "logs"
    if (node_dir / "node.json").exists():
        stop(node_dir)
    shutil.rmtree(node_dir, ignore_errors=True)
    longest = node_dir / "kubelet" / "device-plugins" / "kubelet.sock"  # the longest unix socket path below it
    if len(os.fsencode(longest)) > 107:
        raise RuntimeError(f"{node_dir}: too long a path for the node's unix sockets ({longest}: over 107 bytes)")
    for sub in ("containerd/hosts/_default", "cni/net.d", "cni/ipam", "kubelet", "pod-logs", "pki"):
        (node_dir / sub).mkdir(parents=True, exist_ok=True)
    node = _claim(node_dir, logs)
    try:
        node.kubelet_port = _free_port()
        node.save()
        # Certificates: the kubelet's client identity (Node authorizer + RBAC), its serving certificate
        # (the apiserver checks it against the cluster CA), the CA it checks the apiserver's client cert with.
        kubeconfig = cluster.user_kubeconfig(f"system:node:{node.name}", ("system:nodes",))
        crt, key = launcher.sign_server_cert(cluster.pki, node_dir / "pki" / "kubelet",
                                             ("localhost", "127.0.0.1", node.gateway))
        # Pulls never leave the host: every registry resolves to a closed loopback port.
        (node_dir / "containerd/hosts/_default/hosts.toml").write_text(
            'server = "http://127.0.0.1:9"\n[host."http://127.0.0.1:9"]\n  capabilities = ["pull", "resolve"]\n')
        cfg_toml = node_dir / "containerd" / "config.toml"
        cfg_toml.write_text(_containerd_config(node, PAUSE_IMAGE))
        (node_dir / "cni/net.d/10-bridge.conflist").write_text(json.dumps(_cni_config(node), indent=2))
        kcfg = node_dir / "kubelet-config.json"
        kcfg.write_text(json.dumps(_kubelet_config(node, cluster.pki / "ca.crt", crt, key, _free_port()), indent=2))
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
               "LANG": "C.UTF-8"}
        init = {
            "dir": str(node_dir), "logs": str(logs), "env": env, "socket": str(node.socket),
            "containerd_config": str(cfg_toml), "containerd_root": str(node_dir / "containerd" / "root"),
            "containerd_state": str(node_dir / "containerd" / "state"),
            "containerd": [CONTAINERD, "--config", str(cfg_toml)],
            "kubelet": [str(bins / "kubelet"), f"--config={kcfg}", f"--kubeconfig={kubeconfig}",
                        f"--root-dir={node_dir / 'kubelet'}", f"--cert-dir={node_dir / 'pki'}",
                        f"--hostname-override={node.name}", f"--node-ip={node.gateway}", "--v=1"],
        }
        (node_dir / "init.json").write_text(json.dumps(init, indent=2))
        keeper = _spawn_keeper(node_dir / "init.json", logs / "node.log", attached)
        node.keeper = keeper.pid
        node.save()
        with _claims_locked():
            (CLAIMS / f"{node.bridge}.json").write_text(json.dumps(asdict(node)))
        _wait_for(lambda: node.socket.exists(), 30, node, "containerd's socket")
        init_pid = _ns_init_pid(keeper.pid)
        node.pidns = os.readlink(f"/proc/{init_pid}/ns/pid")
        node.mntns = os.readlink(f"/proc/{init_pid}/ns/mnt")
        node.save()
        t_up = time.monotonic()
        import_images(CTR, str(node.socket), list(images), CRI_NAMESPACE)
        listed = subprocess.run([CTR, "--address", str(node.socket), "--namespace", CRI_NAMESPACE, "images", "ls",
                                 "-q"], check=True, capture_output=True, text=True).stdout.split()
        if PAUSE_IMAGE not in listed:
            raise RuntimeError(f"the pause image {PAUSE_IMAGE} is not among the imported images {listed}: "
                               "pass images/build.py's pause tar in `images`")
        t_images = time.monotonic()
        api = client.CoreV1Api(config.new_client_from_config(config_file=str(cluster.kubeconfig)))
        rbac = client.RbacAuthorizationV1Api(api.api_client)
        with contextlib.suppress(client.ApiException):  # 409: already there
            rbac.create_cluster_role_binding({
                "metadata": {"name": "kube-apiserver-kubelet-api-admin"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "system:kubelet-api-admin"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KUBELET_CLIENT_USER}]})

        def ready() -> bool:
            try:
                n = api.read_node(node.name)
            except client.ApiException:
                return False
            return any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))

        _wait_for(ready, max(10.0, timeout - (time.monotonic() - t0)), node, f"Node {node.name} Ready")
        # The lifecycle controller that would lift this taint does not run (launcher: -node-lifecycle-controller).
        n = api.read_node(node.name)
        taints = [t for t in (n.spec.taints or []) if t.key != "node.kubernetes.io/not-ready"]
        api.patch_node(node.name, {"spec": {"taints": [api.api_client.sanitize_for_serialization(t)
                                                        for t in taints] or None}})
        log(f"node {node.name} Ready in {time.monotonic() - t0:.1f}s (containerd up {t_up - t0:.1f}s, "
            f"images {t_images - t_up:.1f}s); pods on {node.bridge} {node.subnet}")
        return node
    except BaseException:
        stop(node_dir)
        raise


def _spawn_keeper(init_json: Path, logfile: Path, attached: bool) -> subprocess.Popen[bytes]:
    def prepare() -> None:
        if attached:
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    out = open(logfile, "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_keeper", str(init_json)],
                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=prepare,
                            start_new_session=True, close_fds=True)


def _ns_init_pid(keeper: int) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            kids = Path(f"/proc/{keeper}/task/{keeper}/children").read_text().split()
            if kids:
                return int(kids[0])
        time.sleep(0.02)
    raise RuntimeError("the node's namespace init did not start")


def _wait_for(cond: Any, timeout: float, node: Node, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if not _is_keeper(node.keeper, node.dir):
            break
        time.sleep(0.2)
    logs = Path(node.logs)
    state = "the node's namespace ended" if not _is_keeper(node.keeper, node.dir) else f"{timeout:.0f}s passed"
    raise RuntimeError(f"waiting for {what}: {state}.\n--- node.log:\n{_tail(logs / 'node.log', 1500)}\n"
                       f"--- kubelet.log:\n{_tail(logs / 'kubelet.log')}\n"
                       f"--- containerd.log:\n{_tail(logs / 'containerd.log')}")


def stop(node_dir: Path) -> list[str]:
    """End the node's namespace and delete its bridge and cgroups; returns what needed extra cleanup.

    Safe to call twice, from another process than start's, or for a node that never came up.
    """
    try:
        node = Node.load(node_dir)
    except FileNotFoundError:
        return []
    t0 = time.monotonic()
    problems: list[str] = []
    if node.keeper and _is_keeper(node.keeper, node.dir):
        os.kill(node.keeper, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _alive(node.keeper) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _alive(node.keeper):
            problems.append(f"keeper {node.keeper} ignored SIGTERM")
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.keeper, signal.SIGKILL)
    t_killed = time.monotonic()
    for pid, what in _node_processes(node):  # nothing should be left; if anything is, kill it
        problems.append(f"process {pid} ({what}) outlived the namespace")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with _claims_locked():
        problems += _release(node)
        (CLAIMS / f"{node.bridge}.json").unlink(missing_ok=True)
    t_released = time.monotonic()
    mounts = _node_mounts(node)
    if mounts:
        problems += [f"mount {m} outlived the namespace" for m in mounts]
    else:  # images and pod data can be large; only state below node_dir goes, and only with no mount in it
        for sub in ("containerd", "kubelet"):
            shutil.rmtree(node_dir / sub, ignore_errors=True)
    (node_dir / "node.json").rename(node_dir / "node.stopped.json")
    for p in problems:
        log(f"stop: {p}")
    log(f"node {node.name} stopped in {time.monotonic() - t0:.1f}s (namespace ended {t_killed - t0:.1f}s, "
        f"bridge/cgroups {t_released - t_killed:.1f}s, state removed {time.monotonic() - t_released:.1f}s)")
    return problems


# --- what a node could leave behind (stop uses it; the tests assert it is empty) ---------------------

NODE_BINARIES = frozenset({b"containerd", b"kubelet", b"containerd-shim-runc-v2", b"containerd-shim", b"runc"})


def _node_processes(node: Node) -> list[tuple[int, str]]:
    """Live processes of the node: in its PID or mount namespace, in its cgroups, or its binaries on its dir."""
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            ns = {os.readlink(p / "ns/pid"), os.readlink(p / "ns/mnt")}
            argv = (p / "cmdline").read_bytes().split(b"\0")
            cgroups = (p / "cgroup").read_bytes()
        except OSError:
            continue
        mine = ((node.pidns and node.pidns in ns) or (node.mntns and node.mntns in ns)
                or f":{node.cgroup}/".encode() in cgroups
                or (b"_keeper" in argv and any(node.dir.encode() in a for a in argv))
                or (argv[0].rsplit(b"/", 1)[-1] in NODE_BINARIES and any(node.dir.encode() in a for a in argv)))
        if mine and _alive(int(p.name)):
            found.append((int(p.name), b" ".join(argv).decode(errors="replace").strip()[:160]))
    return found


def _node_mounts(node: Node) -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4].startswith(node.dir) or fields[3].startswith(node.dir):
            out.append(fields[4])
    return out


def leftovers(node_dir: Path) -> list[str]:
    """Everything of a stopped node still on this host: processes, mounts, interfaces, cgroups, netns."""
    path = node_dir / "node.stopped.json"
    node = Node(**json.loads(path.read_text())) if path.exists() else Node.load(node_dir)
    found = [f"process {pid}: {what}" for pid, what in _node_processes(node)]
    found += [f"mount {m}" for m in _node_mounts(node)]
    if _ip("link", "show", node.bridge, check=False).returncode == 0:
        found.append(f"interface {node.bridge}")
    found += [f"cgroup {c}" for c in (r / node.cgroup.lstrip("/") for r in _cgroup_roots()) if c.exists()]
    if (CLAIMS / f"{node.bridge}.json").exists():
        found.append(f"claim {CLAIMS / node.bridge}.json")
    return found


# --- volumes --------------------------------------------------------------------------------------

def make_host_volume(path: Path, *, uid: int = 1000, gid: int = 1000) -> Path:
    """A directory to back a hostPath PersistentVolume, laid out as the platform team would.

    `path/workspaces` belongs to uid:gid (setgid, group-writable): the pods run as runAsUser 1000 with
    fsGroup 1000, and fsGroup does not apply to hostPath volumes, so ownership must be right on the host.
    """
    path.mkdir(parents=True, exist_ok=True)
    ws = path / "workspaces"
    ws.mkdir(exist_ok=True)
    os.chown(ws, uid, gid)
    ws.chmod(0o2775)
    return path


def host_pv(name: str, path: Path, *, claim_namespace: str, claim_name: str, size: str = "10Gi",
            access_modes: tuple[str, ...] = ("ReadWriteMany",)) -> dict[str, Any]:
    """A hostPath PersistentVolume pre-bound to one claim (make the directory with make_host_volume)."""
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {"capacity": {"storage": size}, "accessModes": list(access_modes), "storageClassName": "",
                     "persistentVolumeReclaimPolicy": "Retain",
                     "hostPath": {"path": str(path), "type": "Directory"},
                     "claimRef": {"namespace": claim_namespace, "name": claim_name}}}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_keeper":
        sys.exit(_keeper(Path(sys.argv[2])))
    print(__doc__)
    sys.exit(2)
