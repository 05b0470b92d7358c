"""A loopback HTTP front for the real kube-apiserver: records every request and injects answers.

The reconciler is pointed at it with a plain-HTTP kubeconfig whose bearer token names the
client (so two runs can be told apart); the proxy forwards each request unchanged to the real
apiserver with the administrator's credentials, unless an injection rule matches::

    with FaultProxy(admin_kubeconfig) as proxy:
        proxy.inject("GET", r"/deployments$", 503, times=2)     # the first two LISTs fail
        kc = proxy.kubeconfig(tmp_path, client="run-a")
        ... run reconcile with kc ...
        proxy.seen(method="GET", path=r"/deployments$")         # every attempt, with its answer

`status=0` drops the connection without an answer (a connection reset as the client sees it).
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config

_FORWARDED = ("accept", "content-type", "user-agent")


@dataclass(frozen=True)
class Seen:
    """One request the proxy received, and what it answered."""

    client: str
    method: str
    path: str
    query: str
    status: int
    injected: bool
    start: float  # time.monotonic() when the request arrived
    end: float  # ... and when the answer was sent

    def __str__(self) -> str:
        return f"{self.client} {self.method} {self.path} -> {self.status}{' (injected)' if self.injected else ''}"


@dataclass
class Rule:
    """Answer `status` to the requests matching `method` and the `path` regex, `times` times (None: always)."""

    method: str
    path: re.Pattern[str]
    status: int
    times: int | None
    body: dict[str, Any]
    headers: dict[str, str]
    client: str | None = None
    matched: int = 0

    def take(self, client_name: str, method: str, path: str) -> bool:
        if self.method != method or not self.path.search(path) or self.times == 0:
            return False
        if self.client is not None and self.client != client_name:
            return False
        self.matched += 1
        if self.times is not None:
            self.times -= 1
        return True


@dataclass
class FaultProxy:
    """The proxy's state; start it with `with FaultProxy(kubeconfig) as proxy:`."""

    admin_kubeconfig: Path
    requests: list[Seen] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    def __enter__(self) -> FaultProxy:
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.admin_kubeconfig), client_configuration=cfg)
        self._upstream = cfg.host.rstrip("/")
        self._auth = {k: v for k, v in cfg.api_key.items()}  # a token-based admin kubeconfig
        self._upstream_pool = urllib3.PoolManager(
            num_pools=4, maxsize=32, cert_reqs="CERT_REQUIRED", ca_certs=cfg.ssl_ca_cert,
            cert_file=cfg.cert_file, key_file=cfg.key_file, retries=False)
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         name="fault-proxy", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._upstream_pool.clear()

    @property
    def url(self) -> str:
        assert self._server is not None, "the proxy is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def kubeconfig(self, directory: Path, client_name: str = "reconcile") -> Path:
        """A kubeconfig that reaches the apiserver through this proxy; its token names the client."""
        path = directory / f"proxy-{client_name}.kubeconfig"
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "proxy",
            "clusters": [{"name": "proxy", "cluster": {"server": self.url}}],
            "users": [{"name": client_name, "user": {"token": client_name}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": client_name}}]}))
        return path

    def inject(self, method: str, path: str, status: int, *, times: int | None = 1, message: str = "",
               headers: dict[str, str] | None = None, client_name: str | None = None) -> Rule:
        """Answer `status` (a Kubernetes Status body) instead of forwarding; `status=0` drops the connection."""
        reason = {403: "Forbidden", 409: "Conflict", 422: "Invalid", 429: "TooManyRequests",
                  500: "InternalError", 503: "ServiceUnavailable"}.get(status, "Unknown")
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message or f"injected by the fault proxy ({status})", "reason": reason, "code": status}
        rule = Rule(method.upper(), re.compile(path), status, times, body, dict(headers or {}), client_name)
        with self._lock:
            self.rules.append(rule)
        return rule

    def seen(self, *, method: str | None = None, path: str | None = None, client_name: str | None = None,
             writes: bool = False) -> list[Seen]:
        """The recorded requests, filtered (a regex searched in the path; `writes`: every method but GET)."""
        with self._lock:
            return [r for r in self.requests
                    if (method is None or r.method == method.upper())
                    and (path is None or re.search(path, r.path))
                    and (client_name is None or r.client == client_name)
                    and (not writes or r.method != "GET")]

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.rules.clear()

    # --- serving ---------------------------------------------------------------------------
    def _rule_for(self, client_name: str, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.take(client_name, method, path):
                    return rule
        return None

    def _forward(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, str]:
        fwd = {k: v for k, v in headers.items() if k in _FORWARDED}
        fwd.update(self._auth)
        r = self._upstream_pool.request(method, self._upstream + target, body=body or None, headers=fwd,
                                        redirect=False, timeout=urllib3.Timeout(connect=5, read=60))
        return r.status, r.data, r.headers.get("Content-Type", "application/json")

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        start = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        client_name = headers.get("authorization", "").removeprefix("Bearer ").strip() or "anonymous"
        split = urllib.parse.urlsplit(self.path)
        rule = self.owner._rule_for(client_name, self.command, split.path)
        if rule is not None and rule.status == 0:
            self.owner._record(Seen(client_name, self.command, split.path, split.query, 0, True, start,
                                    time.monotonic()))
            self.close_connection = True
            self.connection.close()
            return
        if rule is not None:
            status, payload, ctype, extra = (rule.status, json.dumps(rule.body).encode(), "application/json",
                                             rule.headers)
        else:
            try:
                status, payload, ctype = self.owner._forward(self.command, self.path, headers, body)
            except (urllib3.exceptions.HTTPError, OSError) as e:
                status, payload, ctype = 502, json.dumps({"kind": "Status", "code": 502,
                                                          "message": f"proxy: {e}"}).encode(), "application/json"
            extra = {}
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
        self.owner._record(Seen(client_name, self.command, split.path, split.query, status, rule is not None, start,
                                time.monotonic()))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve
