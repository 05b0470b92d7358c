"""A real ingress controller for the harness: Traefik v3.6.12 (built from its Go module), run outside the cluster.

Traefik's Kubernetes Ingress provider watches the cluster through a kubeconfig (``KUBECONFIG``) and routes each
Ingress by host to the addresses in its Service's EndpointSlices. It listens only on loopback: one HTTPS
entrypoint on ``127.0.0.1:<port>`` (TLS terminated with a throwaway CA whose ``ca.crt`` is written to the
ingress directory) and a ``ping`` entrypoint on another loopback port for health. Nothing else listens and
nothing phones home (version check and anonymous usage reporting are off; no API, no dashboard).

    python tests/cluster/ingress.py up   --dir D --kubeconfig K [--host H ...] [--port P]
    python tests/cluster/ingress.py down --dir D

What a browser or curl then does::

    curl --cacert D/ca.crt --resolve ws.runai.aisingapore.net:<port>:127.0.0.1 https://ws.runai.aisingapore.net:<port>/

Settings that matter for code-server and JupyterLab: WebSocket upgrades pass through (Traefik's proxy
hijacks the connection and clears its deadlines); there is no request-body limit (Traefik only buffers
bodies with the `buffering` middleware, which nothing here configures) and the entrypoint's read timeout,
60 s by default in Traefik v3, is turned off so a slow upload of a large file is not cut. Ingresses without
``ingressClassName`` (what the reconciler renders) are served; IngressClass lookup is off
(``disableClusterScopeResources``), so an Ingress that names a class is ignored. With
``start(..., ingress_classes=True)`` (and ``grant(..., ingress_classes=True)``, which also lets Traefik read
IngressClasses and Nodes) Traefik looks IngressClasses up: an Ingress naming a class whose controller is
``traefik.io/ingress-controller`` is served too, one naming any other class is not (``CLASS_CONTROLLER``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import launcher  # noqa: E402 - tests/cluster is not a package

VERSION = "v3.6.12"
STATE_FILE = "traefik.json"
ENTRYPOINT = "websecure"
DEFAULT_HOSTS = ("*.runai.aisingapore.net", "*.localhost", "localhost", "127.0.0.1")

# Least privilege for Traefik's Kubernetes Ingress provider as start() configures it. It runs one
# list+watch informer per kind and never reads single objects or writes (no ingress status: no
# `ingressEndpoint` is configured). Secrets are required: the provider always watches them (to load the
# certificates an Ingress names in spec.tls) and waits for that cache before it routes anything; there
# is no switch to turn it off. IngressClasses and Nodes are not needed because start() sets
# disableClusterScopeResources. Scope it further with RoleBindings plus `--providers.kubernetesingress.namespaces`
# if the watched namespaces are known in advance.
CLUSTER_ROLE_NAME = "workspace-gitops-traefik-ingress"
RBAC: dict[str, Any] = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRole",
    "metadata": {"name": CLUSTER_ROLE_NAME},
    "rules": [
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["services", "secrets"], "verbs": ["list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
    ],
}


CLASS_CONTROLLER = "traefik.io/ingress-controller"
"""The `spec.controller` of the IngressClasses Traefik serves (when started with ingress_classes=True)."""
CLASS_RBAC: dict[str, Any] = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRole",
    "metadata": {"name": f"{CLUSTER_ROLE_NAME}-classes"},
    # IngressClass lookup in Traefik v3 comes with its cluster-scope informers: IngressClasses and Nodes.
    "rules": [
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingressclasses"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "watch"]},
    ],
}
"""What Traefik needs on top of RBAC to serve Ingresses that name an IngressClass."""


_children: dict[int, subprocess.Popen[bytes]] = {}  # started by this process: reaped by stop()


def log(msg: str) -> None:
    print(f"[ingress] {msg}", file=sys.stderr, flush=True)


@dataclass
class Ingress:
    """A running Traefik: its HTTPS port on 127.0.0.1, the CA that signed its certificate, its pid and log."""

    port: int
    ca_cert: Path
    pid: int
    log: Path
    ping_port: int = 0
    binary: str = ""

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts only the throwaway CA."""
        return ssl.create_default_context(cafile=str(self.ca_cert))


def build() -> Path:
    """Build Traefik once (tests/cluster/build-traefik.sh, cached by version) and return the binary's path."""
    out = subprocess.run(["bash", str(HERE / "build-traefik.sh")], check=True, stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def _rbac_api(admin_kubeconfig: Path) -> Any:
    from kubernetes import client, config

    new_client: Any = config.new_client_from_config
    return client.RbacAuthorizationV1Api(new_client(config_file=str(admin_kubeconfig)))


def _binding_name(user: str, role: str = CLUSTER_ROLE_NAME) -> str:
    return f"{role}-{user}"[:253]


def grant(admin_kubeconfig: Path, user: str, *, ingress_classes: bool = False) -> None:
    """Create (or update) the RBAC ClusterRole and bind it to `user` (a client-certificate user name);
    with `ingress_classes`, CLASS_RBAC too (for a Traefik started with ingress_classes=True)."""
    from kubernetes.client.exceptions import ApiException

    api = _rbac_api(admin_kubeconfig)
    for role in (RBAC, CLASS_RBAC) if ingress_classes else (RBAC,):
        name = role["metadata"]["name"]
        try:
            api.create_cluster_role(role)
        except ApiException as e:
            if e.status != 409:
                raise
            api.replace_cluster_role(name, role)
        binding: dict[str, Any] = {
            "metadata": {"name": _binding_name(user, name)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
        }
        try:
            api.create_cluster_role_binding(binding)
        except ApiException as e:
            if e.status != 409:
                raise


def revoke(admin_kubeconfig: Path, user: str) -> None:
    """Delete the bindings grant() made for `user` (the ClusterRoles stay: other users may be bound to them)."""
    from kubernetes.client.exceptions import ApiException

    for role in (CLUSTER_ROLE_NAME, CLASS_RBAC["metadata"]["name"]):
        try:
            _rbac_api(admin_kubeconfig).delete_cluster_role_binding(_binding_name(user, role))
        except ApiException as e:
            if e.status != 404:
                raise


# --- certificates ------------------------------------------------------------------------------

def _write_certs(d: Path, hosts: tuple[str, ...]) -> tuple[Path, Path, Path]:
    """A throwaway CA (only its certificate is kept) and a server certificate for `hosts`."""
    ca_key = launcher._key()
    ca_name = launcher._name("workspace-gitops-ingress-test-ca")
    ca = launcher._cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    srv_key = launcher._key()
    srv = launcher._cert(launcher._name(hosts[0]), srv_key, ca_name, ca_key, server_names=hosts)
    ca_path, crt_path, key_path = d / "ca.crt", d / "tls.crt", d / "tls.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    # Traefik serves the whole chain (server certificate, then the CA's); clients trust ca.crt alone.
    crt_path.write_bytes(srv.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM))
    launcher._write_key(srv_key, key_path)
    return ca_path, crt_path, key_path


def _dynamic_config(crt: Path, key: Path) -> str:
    # JSON is YAML: the file provider reads it as .yaml.
    return json.dumps({"tls": {"stores": {"default": {"defaultCertificate": {
        "certFile": str(crt), "keyFile": str(key)}}}}}, indent=2)


# --- process -----------------------------------------------------------------------------------

def _argv(binary: Path, d: Path, port: int, ping_port: int, ingress_classes: bool = False) -> list[str]:
    ep = f"--entrypoints.{ENTRYPOINT}"
    # Without IngressClass lookup an Ingress that names a class is never served; with it, Ingresses
    # without a class are still served (Traefik's own rule when it is given no `ingressclass`).
    scope = [] if ingress_classes else ["--providers.kubernetesingress.disableclusterscoperesources=true"]
    return [
        str(binary),
        "--global.checknewversion=false",
        "--global.sendanonymoususage=false",
        f"{ep}.address=127.0.0.1:{port}",
        f"{ep}.asdefault=true",  # Ingress routers attach to this entrypoint only, never to `ping`
        f"{ep}.http.tls=true",
        # Traefik v3 cuts a request whose body takes longer than 60 s to read: uploads must not be cut.
        f"{ep}.transport.respondingtimeouts.readtimeout=0s",
        f"--entrypoints.ping.address=127.0.0.1:{ping_port}",
        "--ping=true",
        "--ping.entrypoint=ping",
        "--providers.kubernetesingress=true",
        *scope,
        f"--providers.file.filename={d / 'dynamic.yaml'}",
        "--providers.file.watch=false",
        "--providers.providersthrottleduration=200ms",
        "--log.level=INFO",
        "--log.nocolor=true",
        "--accesslog=true",
        f"--accesslog.filepath={d / 'access.log'}",
    ]


def _is_traefik(pid: int, binary: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and cmdline[0].decode(errors="replace") == binary


def _wait_serving(ing: Ingress, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Ready when the ping entrypoint answers OK and the HTTPS entrypoint answers an unknown host with 404."""
    ctx = ing.ssl_context()
    ctx.check_hostname = False  # the probe's name is not in the certificate; the chain is still verified
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = ing.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"traefik exited with {proc.returncode}; last log lines:\n{tail}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ing.ping_port}/ping", timeout=2) as r:
                if r.status != 200:
                    raise RuntimeError(f"ping answered {r.status}")
            req = urllib.request.Request(f"{ing.url}/", headers={"Host": "readiness-probe.invalid"})
            try:
                urllib.request.urlopen(req, context=ctx, timeout=2).close()
                last = "an unknown host got an answer other than 404"
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    return
                last = f"HTTPS answered {e.code}"
        except Exception as e:  # noqa: BLE001 - retried until the deadline; the last one is reported
            last = str(e)
        time.sleep(0.2)
    raise RuntimeError(f"traefik not serving on {ing.url} after {timeout}s: {last}\n"
                       f"{ing.log.read_text(errors='replace')[-3000:]}")


def start(dir: Path, kubeconfig: Path, *, hosts: tuple[str, ...], attached: bool, port: int | None = None,
          timeout: float = 60, ingress_classes: bool = False) -> Ingress:
    """Start Traefik on 127.0.0.1:`port` (a free one unless given), routing the cluster's Ingresses.

    `dir` receives ca.crt (trust it to verify the ingress), the server certificate and key, the dynamic
    configuration, traefik.log, access.log and the state file that stop(dir) reads. `hosts` are the
    certificate's names (wildcards allowed, IPs become IP SANs). `attached=True`: Traefik dies with this
    process (tests); `attached=False`: it runs in its own session until stop() (`make demo`).
    `ingress_classes=True`: IngressClass lookup on (the user needs grant(..., ingress_classes=True)).
    """
    if not hosts:
        raise ValueError("hosts: at least one name for the server certificate")
    binary = build()
    d = Path(dir).resolve()
    d.mkdir(parents=True, exist_ok=True)
    if (d / STATE_FILE).exists():
        stop(d)
    _, crt, key = _write_certs(d, hosts)
    (d / "dynamic.yaml").write_text(_dynamic_config(crt, key))
    port = port or launcher.free_port()
    ping_port = launcher.free_port()
    while ping_port == port:
        ping_port = launcher.free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")}
    env["KUBECONFIG"] = str(Path(kubeconfig).resolve())
    logfile = d / "traefik.log"
    out = open(logfile, "ab")  # noqa: SIM115 - the child owns it
    try:
        proc = subprocess.Popen(_argv(binary, d, port, ping_port, ingress_classes), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=d,
                                preexec_fn=launcher._die_with_parent if attached else None,
                                start_new_session=not attached)
    finally:
        out.close()
    _children[proc.pid] = proc
    ing = Ingress(port=port, ca_cert=d / "ca.crt", pid=proc.pid, log=logfile, ping_port=ping_port,
                  binary=str(binary))
    (d / STATE_FILE).write_text(json.dumps({**asdict(ing), "ca_cert": str(ing.ca_cert), "log": str(ing.log)}))
    try:
        _wait_serving(ing, proc, timeout)
    except BaseException:
        stop(d)
        raise
    return ing


def load(dir: Path) -> Ingress:
    s = json.loads((Path(dir) / STATE_FILE).read_text())
    return Ingress(port=s["port"], ca_cert=Path(s["ca_cert"]), pid=s["pid"], log=Path(s["log"]),
                   ping_port=s.get("ping_port", 0), binary=s.get("binary", ""))


def stop(ingress_or_dir: Ingress | Path, timeout: float = 10) -> None:
    """Stop Traefik (TERM, then KILL after `timeout`) and wait until its process is gone."""
    state: Path | None = None
    if isinstance(ingress_or_dir, Ingress):
        ing = ingress_or_dir
        state = ing.log.parent / STATE_FILE
    else:
        state = Path(ingress_or_dir) / STATE_FILE
        try:
            ing = load(Path(ingress_or_dir))
        except FileNotFoundError:
            return
    # The pid may have been reused since: only signal it if it still runs our binary.
    ours = _is_traefik(ing.pid, ing.binary) if ing.binary else _alive(ing.pid)
    if ours:
        with contextlib.suppress(ProcessLookupError):
            os.kill(ing.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(ing.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(ing.pid):
            log(f"traefik (pid {ing.pid}) ignored SIGTERM; killing")
            with contextlib.suppress(ProcessLookupError):
                os.kill(ing.pid, signal.SIGKILL)
            while _alive(ing.pid):
                time.sleep(0.05)
    proc = _children.pop(ing.pid, None)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1)
    if state.exists() and json.loads(state.read_text()).get("pid") == ing.pid:
        state.unlink()


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (reaps it when it is a child started here)."""
    proc = _children.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["up", "down", "build", "grant"])
    ap.add_argument("--dir", type=Path, default=Path(".ingress"))
    ap.add_argument("--kubeconfig", type=Path, help="with `up`: the kubeconfig Traefik watches the cluster with")
    ap.add_argument("--host", action="append", help=f"certificate name (repeatable; default {' '.join(DEFAULT_HOSTS)})")
    ap.add_argument("--port", type=int, help="HTTPS port on 127.0.0.1 (default: a free one)")
    ap.add_argument("--user", help="with `grant`: the user to bind to Traefik's ClusterRole (--kubeconfig: an admin's)")
    a = ap.parse_args()
    if a.action == "build":
        print(build())
        return 0
    if a.action == "grant":
        if a.kubeconfig is None or not a.user:
            ap.error("grant needs --kubeconfig (an admin's) and --user")
        grant(a.kubeconfig, a.user)
        return 0
    if a.action == "down":
        stop(a.dir)
        log(f"stopped the ingress in {a.dir}")
        return 0
    if a.kubeconfig is None:
        ap.error("up needs --kubeconfig")
    try:
        ing = start(a.dir, a.kubeconfig, hosts=tuple(a.host or DEFAULT_HOSTS), attached=False, port=a.port)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        log(f"error: {e}")
        return 1
    log(f"traefik {VERSION} serving the cluster's Ingresses on {ing.url} (pid {ing.pid}, log {ing.log})")
    print(f"INGRESS_PORT={ing.port}")
    print(f"INGRESS_CA={ing.ca_cert}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
