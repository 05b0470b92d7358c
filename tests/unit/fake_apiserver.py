"""A scripted Kubernetes API on loopback for unit tests of reconciler.cluster: each request is
answered by the first route whose method and path match, and recorded."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

Answer = tuple[int, Any]
Route = tuple[str, str, Callable[["Seen"], Answer]]


@dataclass(frozen=True)
class Seen:
    """One request the fake API answered."""

    method: str
    path: str
    query: str
    body: Any
    headers: dict[str, str]


@dataclass
class FakeAPI:
    """``routes``: (method, path regex, handler); anything unrouted answers 404 like the apiserver.

    A handler that answers status 0 has its answer lost: the connection is closed without one.
    """

    routes: list[Route] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def route(self, method: str, path: str, answer: Answer | Callable[[Seen], Answer]) -> None:
        handler = answer if callable(answer) else (lambda _seen, a=answer: a)
        self.routes.insert(0, (method, path, handler))

    def __enter__(self) -> FakeAPI:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path, _, query = self.path.partition("?")
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                seen = Seen(self.command, path, query, body, dict(self.headers))
                api.seen.append(seen)
                status, payload = 404, {"kind": "Status", "message": f"{path} not found", "code": 404}
                for method, pattern, handler in api.routes:
                    if method == self.command and re.fullmatch(pattern, path):
                        status, payload = handler(seen)
                        break
                if status == 0:  # the request was handled, its answer is lost: drop the connection
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def kubeconfig(self, directory: Path, token: str = "fake-token") -> Path:
        path = directory / "kubeconfig"
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        }), encoding="utf-8")
        return path


def empty_list(_: Seen) -> Answer:
    return 200, {"kind": "List", "items": [], "metadata": {}}


def status(code: int, message: str) -> Answer:
    return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code}
