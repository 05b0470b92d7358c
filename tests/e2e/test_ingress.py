"""A real ingress controller (Traefik v3.6.12) routes the Ingresses the reconciler renders.

Traefik runs outside the cluster (tests/cluster/ingress.py) with a dedicated least-privilege user, and reaches
backends the way it would reach a workspace pod: Ingress (host rule, path `/` Prefix) -> Service -> the
Service's EndpointSlice. The fake kubelet runs no pods, so each backend here is a small HTTP + WebSocket server
on 127.0.0.1 behind a selector-less Service and a hand-written EndpointSlice. The apiserver refuses loopback
addresses in IPv4 EndpointSlices (127.0.0.0/8 "may not be in the loopback range"), so the slice is of address
type FQDN with the address "127.0.0.1": a valid domain name to the apiserver, a dialable address to Traefik
(which builds its server URLs from the addresses whatever the slice's type).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import socket
import ssl
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO

import ingress as ingress_mod
import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.conftest import ControlPlane, admin_client

pytestmark = pytest.mark.cluster

DOMAIN = "runai.aisingapore.net"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SERVICE_PORT = 8888  # the Service's port, as an environment block's `port` renders it
UPLOAD_BYTES = 20 * 1024 * 1024


# --- a backend: HTTP + WebSocket on 127.0.0.1 --------------------------------------------------

def _read_frame(f: BinaryIO) -> tuple[int, bytes]:
    """One WebSocket frame (opcode, unmasked payload)."""
    b0, b1 = f.read(2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", f.read(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", f.read(8))
    mask = f.read(4) if b1 & 0x80 else b""
    data = f.read(n)
    if mask:
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return b0 & 0x0F, data


def _frame(opcode: int, payload: bytes, *, masked: bool) -> bytes:
    """One final WebSocket frame; clients mask, servers do not."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class _Backend(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.headers.get("Upgrade", "").lower() == "websocket":
            key = self.headers["Sec-WebSocket-Key"]
            accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
            self.send_response(101, "Switching Protocols")
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept)
            self.end_headers()
            self.wfile.flush()
            opcode, payload = _read_frame(self.rfile)  # echo one message, prefixed with who answered
            self.wfile.write(_frame(opcode, f"{self.server.name}:".encode() + payload, masked=False))
            self.wfile.flush()
            self.close_connection = True
            return
        self._reply(200, {"backend": self.server.name, "path": self.path, "host": self.headers.get("Host")})

    def do_POST(self) -> None:  # noqa: N802
        left = int(self.headers.get("Content-Length", "0"))
        digest, length = hashlib.sha256(), 0
        while left:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            digest.update(chunk)
            length += len(chunk)
            left -= len(chunk)
        self._reply(200, {"backend": self.server.name, "length": length, "sha256": digest.hexdigest()})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), _Backend)
        self.name = name

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@pytest.fixture
def backends() -> Iterator[Callable[[str], _Server]]:
    """Start named backends on 127.0.0.1 (free ports); all shut down afterwards."""
    servers: list[_Server] = []

    def make(name: str) -> _Server:
        s = _Server(name)
        threading.Thread(target=s.serve_forever, name=f"backend-{name}", daemon=True).start()
        servers.append(s)
        return s

    try:
        yield make
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


# --- the cluster side: Service, EndpointSlice, Ingress -----------------------------------------

def _expose(api: client.ApiClient, namespace: str, name: str, backend: _Server, host: str) -> None:
    """What the reconciler renders for a workspace (Service + Ingress), plus the endpoints a Ready pod would get."""
    client.CoreV1Api(api).create_namespaced_service(namespace, {
        "metadata": {"name": name},
        "spec": {"type": "ClusterIP",
                 "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}]}})
    client.DiscoveryV1Api(api).create_namespaced_endpoint_slice(namespace, {
        "metadata": {"name": f"{name}-loopback", "labels": {
            "kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": "workspace-gitops-tests"}},
        "addressType": "FQDN",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True, "serving": True}}],
        "ports": [{"name": "http", "port": backend.port, "protocol": "TCP"}]})
    client.NetworkingV1Api(api).create_namespaced_ingress(namespace, {
        "metadata": {"name": name, "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "0"}},
        "spec": {"rules": [{"host": host, "http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": name, "port": {"number": SERVICE_PORT}}}}]}}]}})


# --- the client side: through Traefik, TLS verified against the throwaway CA -------------------

@dataclass
class Reply:
    status: int
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def _tls(ing: ingress_mod.Ingress, host: str) -> ssl.SSLSocket:
    """A TLS connection to Traefik on 127.0.0.1 with SNI `host`, verified against ca.crt."""
    return ing.ssl_context().wrap_socket(socket.create_connection(("127.0.0.1", ing.port), timeout=30),
                                         server_hostname=host)


def _request(ing: ingress_mod.Ingress, host: str, method: str = "GET", path: str = "/",
             body: bytes | None = None) -> Reply:
    conn = http.client.HTTPConnection(host, ing.port, timeout=60)  # Host: <host>:<port>, as a browser sends
    conn.sock = _tls(ing, host)
    try:
        conn.request(method, path, body=body)
        r = conn.getresponse()
        return Reply(r.status, r.read())
    finally:
        conn.close()


def _wait_for(ing: ingress_mod.Ingress, what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    pytest.fail(f"{what} within {timeout}s; traefik log:\n{ing.log.read_text(errors='replace')[-3000:]}")


def _routes_to(ing: ingress_mod.Ingress, host: str, backend: str) -> Callable[[], bool]:
    def check() -> bool:
        r = _request(ing, host)
        return r.status == 200 and r.json["backend"] == backend

    return check


def _websocket(ing: ingress_mod.Ingress, host: str, message: bytes) -> tuple[str, bytes]:
    """Upgrade to a WebSocket through Traefik, send one text message, return (status line, echoed message)."""
    key = base64.b64encode(os.urandom(16)).decode()
    with _tls(ing, host) as s:
        s.sendall((f"GET /ws HTTP/1.1\r\nHost: {host}:{ing.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        f = s.makefile("rb")
        status = f.readline().decode().strip()
        headers: dict[str, str] = {}
        while (line := f.readline().decode().strip()):
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if " 101 " not in f"{status} ":
            return status, b""
        want = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        assert headers.get("sec-websocket-accept") == want
        s.sendall(_frame(0x1, message, masked=True))
        opcode, payload = _read_frame(f)
        assert opcode == 0x1
        return status, payload


def _listening(pid: int) -> set[tuple[str, int]]:
    """The (address, port) pairs process `pid` listens on (TCP) or is bound to (UDP)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = set()
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if inode not in inodes or (table.startswith("tcp") and state != "0A"):  # 0A: LISTEN
                continue
            ip_hex, port_hex = local.split(":")
            raw = bytes.fromhex(ip_hex)
            if len(raw) == 4:
                addr = socket.inet_ntop(socket.AF_INET, raw[::-1])
            else:
                addr = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
            found.add((addr, int(port_hex, 16)))
    return found


def _traefik_pids(marker: str) -> list[int]:
    """Processes whose command line mentions `marker` (an ingress directory)."""
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmdline = (p / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and int(p.name) != os.getpid():
            pids.append(int(p.name))
    return pids


# --- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def traefik_binary() -> Path:
    return ingress_mod.build()


@pytest.fixture(scope="module")
def ingress_kubeconfig(control_plane: ControlPlane) -> Iterator[Path]:
    """A dedicated user bound only to ingress.RBAC (list+watch of Ingresses, Services, EndpointSlices, Secrets)."""
    if control_plane.cluster is None:
        yield control_plane.kubeconfig  # an existing cluster: no CA to mint a user with
        return
    user = f"traefik-{uuid.uuid4().hex[:8]}"
    path = control_plane.cluster.user_kubeconfig(user)
    ingress_mod.grant(control_plane.kubeconfig, user)
    try:
        yield path
    finally:
        ingress_mod.revoke(control_plane.kubeconfig, user)


@pytest.fixture(scope="module")
def traefik(traefik_binary: Path, ingress_kubeconfig: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ingress_mod.Ingress]:
    d = tmp_path_factory.mktemp("ingress")
    ing = ingress_mod.start(d, ingress_kubeconfig, hosts=(f"*.{DOMAIN}", "*.localhost", "localhost", "127.0.0.1"),
                            attached=True)
    try:
        yield ing
    finally:
        ingress_mod.stop(ing)


# --- tests -------------------------------------------------------------------------------------

def test_the_ingress_user_has_only_the_read_access_traefik_needs(control_plane: ControlPlane,
                                                                  ingress_kubeconfig: Path, namespace: str) -> None:
    if control_plane.cluster is None:
        pytest.fail("least-privilege users need the suite's own control plane (client certs from its CA)")
    api = config.new_client_from_config(config_file=str(ingress_kubeconfig))
    core = client.CoreV1Api(api)
    assert client.NetworkingV1Api(api).list_ingress_for_all_namespaces().items is not None
    assert client.DiscoveryV1Api(api).list_endpoint_slice_for_all_namespaces().items is not None
    for forbidden in (lambda: core.list_namespaced_pod(namespace),
                      lambda: core.read_namespaced_service("anything", namespace),
                      lambda: core.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}}),
                      lambda: client.NetworkingV1Api(api).delete_namespaced_ingress("anything", namespace)):
        with pytest.raises(ApiException) as err:
            forbidden()
        assert err.value.status == 403


def test_the_apiserver_refuses_loopback_ipv4_endpoints(control_plane: ControlPlane, namespace: str) -> None:
    """Why the backends' EndpointSlices are of type FQDN (see the module docstring)."""
    with pytest.raises(ApiException) as err:
        client.DiscoveryV1Api(admin_client(control_plane.kubeconfig)).create_namespaced_endpoint_slice(namespace, {
            "metadata": {"name": "loopback", "labels": {"kubernetes.io/service-name": "x"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["127.0.0.1"]}],
            "ports": [{"name": "http", "port": 8080}]})
    assert err.value.status == 422 and "loopback" in err.value.body


def test_traefik_listens_only_on_loopback(traefik: ingress_mod.Ingress) -> None:
    assert _listening(traefik.pid) == {("127.0.0.1", traefik.port), ("127.0.0.1", traefik.ping_port)}
    assert traefik.ca_cert.read_text().startswith("-----BEGIN CERTIFICATE-----")


def test_each_host_reaches_its_own_backend_and_an_unknown_host_gets_404(
        control_plane: ControlPlane, namespace: str, traefik: ingress_mod.Ingress,
        backends: Callable[[str], _Server]) -> None:
    api = admin_client(control_plane.kubeconfig)
    tag = uuid.uuid4().hex[:6]
    hosts = {"alice": f"{namespace[:20]}-alice-{tag}.{DOMAIN}", "bob": f"{namespace[:20]}-bob-{tag}.{DOMAIN}"}
    for name, host in hosts.items():
        _expose(api, namespace, name, backends(name), host)
    for name, host in hosts.items():
        _wait_for(traefik, f"{host} routed to {name}", _routes_to(traefik, host, name))
        r = _request(traefik, host, path="/lab?token=abc")
        assert r.status == 200
        assert r.json == {"backend": name, "path": "/lab?token=abc", "host": f"{host}:{traefik.port}"}
    # JupyterLab's contents API carries file names percent-encoded (a '#' or '?' in a name); Traefik 3.6 lets
    # them through unchanged by default (its encodedCharacters options; later versions may refuse them).
    path = "/api/contents/notes%2Fweek%231%3F%20draft.ipynb?content=1"
    assert _request(traefik, hosts["alice"], path=path).json["path"] == path
    assert _request(traefik, f"nobody-{tag}.{DOMAIN}").status == 404
    # The certificate is the throwaway CA's: a client that does not trust it refuses the connection.
    with pytest.raises(ssl.SSLCertVerificationError), socket.create_connection(("127.0.0.1", traefik.port)) as raw:
        ssl.create_default_context().wrap_socket(raw, server_hostname=hosts["alice"])


def test_a_websocket_upgrade_round_trips_a_message(control_plane: ControlPlane, namespace: str,
                                                   traefik: ingress_mod.Ingress,
                                                   backends: Callable[[str], _Server]) -> None:
    host = f"{namespace[:30]}-ws.{DOMAIN}"
    _expose(admin_client(control_plane.kubeconfig), namespace, "ide", backends("ide"), host)
    _wait_for(traefik, f"{host} routed", _routes_to(traefik, host, "ide"))
    status, echoed = _websocket(traefik, host, b"hello through traefik")
    assert status.startswith("HTTP/1.1 101"), status
    assert echoed == b"ide:hello through traefik"


def test_a_20_mb_upload_arrives_whole(control_plane: ControlPlane, namespace: str, traefik: ingress_mod.Ingress,
                                      backends: Callable[[str], _Server]) -> None:
    host = f"{namespace[:30]}-up.{DOMAIN}"
    _expose(admin_client(control_plane.kubeconfig), namespace, "nb", backends("nb"), host)
    _wait_for(traefik, f"{host} routed", _routes_to(traefik, host, "nb"))
    body = os.urandom(UPLOAD_BYTES)
    r = _request(traefik, host, "POST", "/api/contents/upload.bin", body)
    assert r.status == 200, r.body[:500]
    assert r.json == {"backend": "nb", "length": UPLOAD_BYTES, "sha256": hashlib.sha256(body).hexdigest()}


@pytest.mark.soak
def test_an_upload_slower_than_traefiks_default_read_timeout_is_not_cut(
        control_plane: ControlPlane, namespace: str, traefik: ingress_mod.Ingress,
        backends: Callable[[str], _Server]) -> None:
    """Traefik v3 cuts a request whose body takes over 60 s to arrive unless readTimeout is 0 (ingress.start)."""
    host = f"{namespace[:30]}-slow.{DOMAIN}"
    _expose(admin_client(control_plane.kubeconfig), namespace, "slow", backends("slow"), host)
    _wait_for(traefik, f"{host} routed", _routes_to(traefik, host, "slow"))
    chunks = [os.urandom(16 * 1024) for _ in range(70)]  # one a second: 70 s
    conn = http.client.HTTPConnection(host, traefik.port, timeout=120)
    conn.sock = _tls(traefik, host)
    conn.sock.settimeout(120)
    try:
        conn.putrequest("POST", "/api/contents/slow.bin")
        conn.putheader("Content-Length", str(sum(map(len, chunks))))
        conn.endheaders()
        for c in chunks:
            conn.send(c)
            time.sleep(1)
        r = conn.getresponse()
        assert r.status == 200
        assert json.loads(r.read())["sha256"] == hashlib.sha256(b"".join(chunks)).hexdigest()
    finally:
        conn.close()


def test_deleting_the_ingress_stops_routing(control_plane: ControlPlane, namespace: str,
                                            traefik: ingress_mod.Ingress,
                                            backends: Callable[[str], _Server]) -> None:
    api = admin_client(control_plane.kubeconfig)
    host = f"{namespace[:30]}-gone.{DOMAIN}"
    _expose(api, namespace, "gone", backends("gone"), host)
    _wait_for(traefik, f"{host} routed", _routes_to(traefik, host, "gone"))
    client.NetworkingV1Api(api).delete_namespaced_ingress("gone", namespace)
    _wait_for(traefik, f"{host} unrouted after the Ingress was deleted", lambda: _request(traefik, host).status == 404)


def test_stop_leaves_no_traefik_process(traefik_binary: Path, ingress_kubeconfig: Path, tmp_path: Path) -> None:
    d = tmp_path / "detached-ingress"
    ing = ingress_mod.start(d, ingress_kubeconfig, hosts=("localhost",), attached=False)
    try:
        assert _traefik_pids(str(d)) == [ing.pid]
        assert os.getsid(ing.pid) == ing.pid  # detached: its own session, as `make demo` leaves it running
        ingress_mod.stop(d)  # by directory, as another process (`make demo-down`) would
        assert not Path(f"/proc/{ing.pid}").exists()
        assert _traefik_pids(str(d)) == []
        assert not (d / ingress_mod.STATE_FILE).exists()
        ingress_mod.stop(d)  # a second stop is a no-op
    finally:
        ingress_mod.stop(d)
