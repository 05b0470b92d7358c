"""A stateful fake of the Run:ai control plane on loopback (HTTPS, a throwaway CA), for the Run:ai backend's tests.

It checks what it is sent against the published schema and answers in it: every workspace
creation body must validate as runapy's `WorkspaceCreationRequest` (runapy is generated from
Run:ai's OpenAPI document) *and* contain no field that model does not know (a typo in our
mapping would otherwise be dropped silently); every workload it lists validates as runapy's
`Workload`, every workspace it returns as `Workspace1`. Where it matters it behaves like the real
one: creation answers 202 and the phase then moves on its own (Creating → Initializing →
Running, ``step`` seconds apart), delete/suspend/resume answer 202 and move through
Deleting/Stopping/Resuming; names are unique per project (409); a wrong client secret or token
answers 401; ``inject`` makes any endpoint answer 5xx (or anything) or stall (a timeout).

Served: ``POST /api/v1/token``, ``GET /api/v1/clusters``, ``GET /api/v1/org-unit/projects``,
``GET /api/v1/workloads`` (filterBy projectId, offset/limit, next),
``POST /api/v1/workloads/workspaces``, ``GET|DELETE /api/v1/workloads/workspaces/{id}``,
``POST /api/v1/workloads/workspaces/{id}/suspend|resume``. Not modelled: policies, templates,
assets, quota and scheduling (a workspace always reaches Running unless its image is in
``failing_images``), the real URL scheme of a tenant.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import launcher  # noqa: E402
from loopback import LoopbackServer  # noqa: E402

CLIENT_ID = "workspace-gitops-apply"
CLIENT_SECRET = "runai-secret-0123456789abcdefABCDEF"
CLUSTER = "aisg-cluster"
PROJECT = "sample-project"
DOMAIN = "runai.example.test"


@dataclass(frozen=True)
class Recorded:
    """One request the fake received (bodies of token requests are not kept: they hold the secret)."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class _Injection:
    method: str
    path: re.Pattern[str]
    status: int
    body: Any
    delay: float
    times: int | None
    skip: int = 0


@dataclass
class Workload:
    """One workload's state; the phase is computed from timed events."""

    id: str
    name: str
    project_id: str
    type: str
    spec: dict[str, Any]
    created_at: dt.datetime
    events: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, phase); "" = gone
    desired_phase: str = "Running"
    failing: str = ""

    def phase(self, now: float) -> str:
        current = "Creating"
        for at, phase in self.events:
            if at <= now:
                current = phase
        return current


@dataclass
class FakeRunai(LoopbackServer):
    """The fake's state; attributes may be changed by a test at any time."""

    scheme = "https"
    thread_name = "fake-runai"

    directory: Path
    step: float = 0.3
    """Seconds between two phases of a transition (Creating → Initializing → Running ...)."""
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    token_seconds: int = 3600
    page_limit_max: int = 2
    """The listing never returns more than this per page, so paging is always exercised."""
    failing_images: dict[str, str] = field(default_factory=dict)
    """image -> message: such a workspace ends in phase Failed with that message."""
    projects: dict[str, str] = field(default_factory=lambda: {"4": PROJECT})
    clusters: dict[str, str] = field(default_factory=lambda: {"0f3c9a8e-6a2b-4c6e-9a4e-7b2f4c1d9e21": CLUSTER})
    workloads: dict[str, Workload] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    schema_errors: list[str] = field(default_factory=list)
    """Every request body or answer that failed the published schema (a test asserts it stays empty)."""
    _tokens: set[str] = field(default_factory=set)
    _injections: list[_Injection] = field(default_factory=list)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    ca: Path | None = None

    # ---- lifecycle

    def _bind(self) -> ThreadingHTTPServer:
        """HTTPS with a certificate from a throwaway CA (`ca`)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        ca_key = launcher._key()
        ca_name = launcher._name("workspace-gitops-fake-runai-ca")
        ca = launcher._cert(ca_name, ca_key, ca_name, ca_key, ca=True)
        key = launcher._key()
        crt = launcher._cert(launcher._name("127.0.0.1"), key, ca_name, ca_key, server_names=("127.0.0.1", "localhost"))
        self.ca = self.directory / "ca.crt"
        self.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        (self.directory / "tls.crt").write_bytes(crt.public_bytes(serialization.Encoding.PEM))
        launcher._write_key(key, self.directory / "tls.key")
        fake = self

        class Handler(_Handler):
            runai = fake

        server = _Server(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.directory / "tls.crt", self.directory / "tls.key")
        server.socket = context.wrap_socket(server.socket, server_side=True)
        return server

    def environment(self, *, secret: str | None = None) -> dict[str, str]:
        """What a run needs: the credentials and the CA (SSL_CERT_FILE, as for any private CA)."""
        return {"RUNAI_CLIENT_ID": self.client_id, "RUNAI_CLIENT_SECRET": secret or self.client_secret,
                "SSL_CERT_FILE": str(self.ca)}

    # ---- scripting

    def inject(self, method: str, path: str, status: int = 500, body: Any = None, *, delay: float = 0.0,
               times: int | None = 1, skip: int = 0) -> None:
        """After `skip` matching requests, the next `times` answer `status` (after `delay` seconds: a stall).

        `status` 0: the request stalls `delay` seconds, then is served as usual (a slow control plane)."""
        with self._lock:
            self._injections.append(_Injection(method, re.compile(path), status,
                                               body if body is not None else {"code": status, "message": "injected"},
                                               delay, times, skip))

    def add_workload(self, name: str, *, type: str = "workspace", annotations: list[dict[str, str]] | None = None,
                     image: str = "someone/else:latest", project_id: str = "4") -> Workload:
        """A workload made by someone else (the UI, the runai CLI), already Running."""
        spec: dict[str, Any] = {"image": image}
        if annotations is not None:
            spec["annotations"] = annotations
        with self._lock:
            w = self._new(name, project_id, type, spec)
            w.events = [(0.0, "Running")]
            return w

    def writes(self) -> list[Recorded]:
        """Every request that changes something (the token request excepted)."""
        return [r for r in self.requests if r.method != "GET" and r.path != "/api/v1/token"]

    def named(self, name: str) -> Workload | None:
        """The live workload of that name (any project), if any."""
        now = time.monotonic()
        with self._lock:
            return next((w for w in self.workloads.values() if w.name == name and w.phase(now) != ""), None)

    def phase(self, name: str) -> str:
        """The phase of the live workload of that name ("" when there is none)."""
        w = self.named(name)
        return w.phase(time.monotonic()) if w else ""

    def settle(self, timeout: float = 10) -> None:
        """Wait until every transition has happened."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                last = max((at for w in self.workloads.values() for at, _ in w.events), default=0.0)
            if last <= time.monotonic():
                return
            time.sleep(0.05)

    # ---- state

    def _new(self, name: str, project_id: str, type: str, spec: dict[str, Any]) -> Workload:
        w = Workload(str(uuid.uuid4()), name, project_id, type, spec, dt.datetime.now(dt.UTC))
        self.workloads[w.id] = w
        return w

    def _transition(self, w: Workload, *phases: str) -> None:
        now = time.monotonic()
        w.events = [e for e in w.events if e[0] <= now]
        for i, phase in enumerate(phases):
            w.events.append((now + i * self.step, phase))

    def _live(self, now: float) -> list[Workload]:
        for wid in [w.id for w in self.workloads.values() if w.phase(now) == ""]:
            del self.workloads[wid]
        return sorted(self.workloads.values(), key=lambda w: w.created_at)

    def _cluster_id(self) -> str:
        return next(iter(self.clusters))

    def _workload_json(self, w: Workload, now: float) -> dict[str, Any]:
        phase = w.phase(now)
        stamp = w.created_at.isoformat().replace("+00:00", "Z")
        project = self.projects.get(w.project_id, "other")
        body = {
            "tenantId": 1, "runningPods": 1 if phase == "Running" else 0, "phaseUpdatedAt": stamp,
            "k8sPhaseUpdatedAt": stamp, "updatedAt": stamp, "source": "Control-plane", "deletedAt": None,
            "type": w.type, "name": w.name, "id": w.id, "priority": 50, "priorityClassName": "build",
            "submittedBy": self.client_id, "clusterId": self._cluster_id(), "projectName": project,
            "projectId": w.project_id, "departmentName": "default", "departmentId": "2",
            "namespace": f"runai-{project}", "createdAt": stamp, "phase": phase, "conditions": [],
            "phaseMessage": w.failing if phase == "Failed" else "", "k8sPhase": phase, "category": "Build",
            "images": [str(w.spec.get("image", ""))],
            "urls": [f"https://{DOMAIN}/{project}/{w.name}/"] if phase == "Running" and w.spec.get("exposedUrls")
            else [],
        }
        self._check("Workload", body)
        return body

    def _workspace_json(self, w: Workload, now: float) -> dict[str, Any]:
        stamp = w.created_at.isoformat().replace("+00:00", "Z")
        body = {"name": w.name, "requestedName": w.name, "workloadId": w.id, "projectId": w.project_id,
                "departmentId": "2", "clusterId": self._cluster_id(), "createdBy": self.client_id,
                "createdAt": stamp, "deletedAt": None, "desiredPhase": w.desired_phase,
                "actualPhase": w.phase(now), "spec": w.spec}
        self._check("Workspace1", body)
        return body

    def _check(self, model: str, body: dict[str, Any]) -> str:
        """'' when `body` validates as runapy's `model` and holds no field it does not know, else why not."""
        from pydantic import ValidationError
        from runai import models

        cls = getattr(models, model)
        try:
            parsed = cls.from_dict(body)
        except ValidationError as e:
            why = f"{model}: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}"
            self.schema_errors.append(why)
            return why
        unknown = _unknown_fields(body, parsed.to_dict())
        if unknown:
            why = f"{model}: fields the published schema does not have: {', '.join(unknown)}"
            self.schema_errors.append(why)
            return why
        return ""

    # ---- requests

    def handle(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str],
               body: Any) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(Recorded(method, path, query, None if path == "/api/v1/token" else body))
            for inj in self._injections:
                if inj.method == method and inj.path.search(path) and inj.times != 0:
                    if inj.skip > 0:
                        inj.skip -= 1
                        continue
                    if inj.times is not None:
                        inj.times -= 1
                    injected: tuple[int, Any, float] | None = (inj.status, inj.body, inj.delay)
                    break
            else:
                injected = None
        if injected is not None:
            time.sleep(injected[2])
            if injected[0] != 0:
                return injected[0], injected[1]
            # status 0: only the stall, then the real answer
        with self._lock:
            return self._route(method, path, query, headers, body)

    def _route(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str],
               body: Any) -> tuple[int, Any]:
        now = time.monotonic()
        if method == "POST" and path == "/api/v1/token":
            if not isinstance(body, dict) or body.get("grantType") != "app_token" or \
                    body.get("AppId") != self.client_id or body.get("AppSecret") != self.client_secret:
                return 401, {"code": 401, "message": "invalid client credentials"}
            token = _jwt(self.token_seconds)
            self._tokens.add(token)
            return 200, {"accessToken": token}
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self._tokens:
            return 401, {"code": 401, "message": "unauthorized"}
        if method == "GET" and path == "/api/v1/clusters":
            return 200, [{"uuid": uid, "name": name, "tenantId": 1, "createdAt": "2026-01-01T00:00:00Z"}
                         for uid, name in self.clusters.items()]
        if method == "GET" and path == "/api/v1/org-unit/projects":
            wanted = _filters(query).get("name")
            return 200, {"projects": [{"id": pid, "name": name, "clusterId": self._cluster_id(), "parentId": "2"}
                                      for pid, name in self.projects.items() if wanted in (None, name)], "next": 0}
        if method == "GET" and path == "/api/v1/workloads":
            pid = _filters(query).get("projectId")
            offset = int((query.get("offset") or ["0"])[0])
            limit = min(int((query.get("limit") or ["50"])[0]), self.page_limit_max)
            items = [w for w in self._live(now) if pid in (None, w.project_id)]
            page = items[offset:offset + limit]
            answer: dict[str, Any] = {"workloads": [self._workload_json(w, now) for w in page]}
            if offset + limit < len(items):
                answer["next"] = offset + limit
            return 200, answer
        if method == "POST" and path == "/api/v1/workloads/workspaces":
            return self._create(body, now)
        m = re.fullmatch(r"/api/v1/workloads/workspaces/([^/]+)(/suspend|/resume)?", path)
        if m:
            w = self.workloads.get(m.group(1))
            if w is None or w.phase(now) == "" or w.type != "workspace":
                return 404, {"code": 404, "message": f"workspace {m.group(1)} not found"}
            action = m.group(2)
            if method == "GET" and action is None:
                return 200, self._workspace_json(w, now)
            if method == "DELETE" and action is None:
                w.desired_phase = "Deleted"
                self._transition(w, "Deleting", "")
                return 202, {"code": 202, "message": "deleting"}
            if method == "POST" and action == "/suspend":
                w.desired_phase = "Stopped"
                self._transition(w, "Stopping", "Stopped")
                return 202, {"code": 202, "message": "suspending"}
            if method == "POST" and action == "/resume":
                w.desired_phase = "Running"
                self._transition(w, "Resuming", "Running")
                return 202, {"code": 202, "message": "resuming"}
        return 404, {"code": 404, "message": f"no route {method} {path}"}

    def _create(self, body: Any, now: float) -> tuple[int, Any]:
        if not isinstance(body, dict):
            return 400, {"code": 400, "message": "body must be a JSON object"}
        why = self._check("WorkspaceCreationRequest", body)
        if why:
            return 400, {"code": 400, "message": why}
        if body["projectId"] not in self.projects or body["clusterId"] not in self.clusters:
            return 400, {"code": 400, "message": "unknown project or cluster"}
        if any(w.name == body["name"] and w.project_id == body["projectId"] for w in self._live(now)):
            return 409, {"code": 409, "message": f"workload {body['name']} already exists in the project"}
        spec = body.get("spec") or {}
        w = self._new(body["name"], body["projectId"], "workspace", spec)
        failing = self.failing_images.get(str(spec.get("image", "")))
        if failing:
            w.failing = failing
            self._transition(w, "Creating", "Initializing", "Failed")
        else:
            self._transition(w, "Creating", "Initializing", "Running")
        return 202, self._workspace_json(w, now)


def _unknown_fields(sent: Any, kept: Any, path: str = "") -> list[str]:
    if isinstance(sent, dict) and isinstance(kept, dict):
        out = [f"{path}{k}" for k in sent if k not in kept and sent[k] is not None]
        for k in sent:
            if k in kept:
                out += _unknown_fields(sent[k], kept[k], f"{path}{k}.")
        return out
    if isinstance(sent, list) and isinstance(kept, list):
        pairs = enumerate(zip(sent, kept, strict=False))
        return [u for i, (a, b) in pairs for u in _unknown_fields(a, b, f"{path}{i}.")]
    return []


def _filters(query: dict[str, list[str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in query.get("filterBy") or ():
        for part in value.split(","):
            if "==" in part:
                key, _, val = part.partition("==")
                out[key] = val
    return out


def _jwt(seconds: int) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return ".".join([part({"alg": "none", "typ": "JWT"}),
                     part({"exp": int(time.time()) + seconds, "sub": uuid.uuid4().hex}), "fake"])


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a test's stall, a timeout) is not the fake's error; anything else is.
        if isinstance(sys.exc_info()[1], ssl.SSLError | ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    runai: FakeRunai
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _serve(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, answer = self.runai.handle(self.command, url.path, urllib.parse.parse_qs(url.query), headers, body)
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _serve
