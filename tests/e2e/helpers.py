"""Helpers for end-to-end tests: a copy of the example repo, the CLI as a user runs it, the admin API."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def reconcile(*args: str, kubeconfig: Path | None = None, env: dict[str, str] | None = None,
              timeout: float = 180) -> Run:
    """Run `python -m reconciler ARGS` as a user would; never accepts a traceback."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    e.pop("KUBECONFIG", None)
    e.update(env or {})
    cmd = [sys.executable, "-m", "reconciler", *args]
    if kubeconfig is not None and args and args[0] not in ("validate", "render", "schema"):
        cmd += ["--kubeconfig", str(kubeconfig)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=timeout, cwd=ROOT)
    run = Run(p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, str(run)
    return run


class Repo:
    """A throwaway copy of the example config repo, pointed at a test namespace."""

    def __init__(self, path: Path, namespace: str) -> None:
        self.path = path
        path.mkdir(parents=True)
        for part in ("project.yaml", "blocks", "workspaces", "schemas"):
            src = ROOT / part
            if src.is_dir():
                shutil.copytree(src, path / part)
            elif src.exists():
                shutil.copy(src, path / part)
        project = self.read("project.yaml")
        project["spec"]["namespace"] = namespace
        self.write("project.yaml", project)
        self.namespace = namespace

    def read(self, rel: str) -> Any:
        return yaml.safe_load((self.path / rel).read_text())

    def write(self, rel: str, doc: Any) -> None:
        p = self.path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(yaml.safe_dump(doc, sort_keys=False))

    def edit(self, rel: str, fn: Any) -> None:
        doc = self.read(rel)
        fn(doc)
        self.write(rel, doc)

    def remove(self, rel: str) -> None:
        (self.path / rel).unlink()

    def add_workspace(self, name: str, owner: str, environment: str = "aisg-vscode-server-v4-16-1",
                      compute: str = "cpu-mid", data_sources: tuple[str, ...] = ("sample-project-pvc",),
                      state: str = "running") -> None:
        self.write(f"workspaces/{name}.yaml", {
            "apiVersion": "workspaces/v1", "kind": "Workspace", "metadata": {"name": name},
            "spec": {"owner": owner, "environment": environment, "compute": compute,
                     "dataSources": list(data_sources), "state": state}})

    def workspaces(self) -> list[str]:
        return sorted(p.stem for p in (self.path / "workspaces").glob("*.yaml"))

    def __str__(self) -> str:
        return str(self.path)


class Admin:
    """The cluster as its administrator sees it (for setting up and checking, never for the product)."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.api = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.net = client.NetworkingV1Api(self.api)
        self.rbac = client.RbacAuthorizationV1Api(self.api)
        self.coord = client.CoordinationV1Api(self.api)
        self.ns = namespace

    def bound_pvc(self, name: str, host_dir: Path | None = None) -> None:
        """An existing, Bound claim, as the platform team would have made it.

        With `host_dir` (for pods on the real node) the volume is that host folder, its `workspaces/`
        writable by every workspace's UID with the sticky bit, as on a team's shared volume.
        """
        pv = f"pv-{name[:40]}-{uuid.uuid4().hex[:8]}"
        path = host_dir or Path(f"/tmp/{pv}")
        if host_dir is not None:
            (host_dir / "workspaces").mkdir(parents=True, exist_ok=True)
            (host_dir / "workspaces").chmod(0o1777)
        self.core.create_persistent_volume({
            "metadata": {"name": pv},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                     "hostPath": {"path": str(path)}, "claimRef": {"namespace": self.ns, "name": name}}})
        self.core.create_namespaced_persistent_volume_claim(self.ns, {
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv,
                     "resources": {"requests": {"storage": "1Gi"}}}})
        deadline = time.monotonic() + 90  # the PV controller may wait for its next sync
        while time.monotonic() < deadline:
            if self.core.read_namespaced_persistent_volume_claim(name, self.ns).status.phase == "Bound":
                return
            time.sleep(0.2)
        raise AssertionError(f"PVC {name} did not bind")

    def delete_namespace_and_wait(self, timeout: float = 120) -> None:
        """Delete the namespace and wait until it is gone (its pods have stopped on a real node)."""
        from kubernetes.client.rest import ApiException

        try:
            self.core.delete_namespace(self.ns)
        except ApiException as e:
            if e.status != 404:
                raise
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.core.read_namespace(self.ns)
            except ApiException as e:
                if e.status == 404:
                    return
                raise
            time.sleep(0.5)
        raise AssertionError(f"namespace {self.ns} still there after {timeout}s")

    def install_roles(self) -> None:
        for f in sorted((ROOT / "deploy" / "rbac").glob("*-role.yaml")):
            role = yaml.safe_load(f.read_text())
            role["metadata"]["namespace"] = self.ns
            self.rbac.create_namespaced_role(self.ns, role)

    def get(self, kind: str, name: str) -> Any:
        read = {"Deployment": self.apps.read_namespaced_deployment, "Service": self.core.read_namespaced_service,
                "Ingress": self.net.read_namespaced_ingress}[kind]
        return self.api.sanitize_for_serialization(read(name, self.ns))

    def names(self, kind: str) -> list[str]:
        lst = {"Deployment": self.apps.list_namespaced_deployment, "Service": self.core.list_namespaced_service,
               "Ingress": self.net.list_namespaced_ingress,
               "PersistentVolumeClaim": self.core.list_namespaced_persistent_volume_claim}[kind]
        return sorted(o.metadata.name for o in lst(self.ns).items)

    def resource_versions(self) -> dict[str, str]:
        out = {}
        for kind in ("Deployment", "Service", "Ingress"):
            for n in self.names(kind):
                out[f"{kind}/{n}"] = self.get(kind, n)["metadata"]["resourceVersion"]
        return out


def workspace(result: Any, name: str) -> Any:
    for w in result["workspaces"]:
        if w["name"] == name:
            return w
    raise AssertionError(f"{name} not in plan: {[w['name'] for w in result['workspaces']]}")


def strip_ansi(s: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", s)


# --- live objects recorded for the plan's unit tests (tests/data/plan/live/) ---------------------

RECORDED_LIVE = ROOT / "tests" / "data" / "plan" / "live"
_FIXED_TIME = "2024-05-01T08:00:00Z"


def recording_name(obj: dict[str, Any]) -> str:
    """The golden file of a desired object's recording: its kind and a hash of its exact content."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return f"{obj['kind']}-{digest[:16]}.json"


def record_applied(kubeconfig: Path, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` as a real API server returns it after our server-side apply (a dry run: nothing is stored).

    Sent by the reconciler's own cluster module (field manager, force), into ``namespace``; the
    answer is normalised so that a recording does not change from run to run: its namespace is
    put back, uid, resourceVersion, timestamps and a Service's cluster IP are fixed, and
    `apiVersion` is dropped (a LIST's items carry none)."""
    from reconciler.cluster import FIELD_MANAGER, KINDS, Cluster, ClusterOptions

    prefix, plural = KINDS[obj["kind"]]
    sent = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
    live = Cluster(namespace, ClusterOptions(kubeconfig=str(kubeconfig))).request(
        "PATCH", f"{prefix}/namespaces/{namespace}/{plural}/{obj['metadata']['name']}",
        query={"fieldManager": FIELD_MANAGER, "force": "true", "dryRun": "All"}, body=sent,
        content_type="application/apply-patch+yaml", what=f"dry-run apply of {obj['kind']}")
    live.pop("apiVersion", None)
    live.pop("status", None)
    meta = live["metadata"]
    meta.update(namespace=obj["metadata"]["namespace"], uid="6f1c3f5e-0000-4000-8000-000000000001",
                resourceVersion="4242", creationTimestamp=_FIXED_TIME)
    for entry in meta.get("managedFields") or []:
        entry["time"] = _FIXED_TIME
    spec = live.get("spec") or {}
    if spec.get("clusterIP"):
        spec.update(clusterIP="10.0.0.17", clusterIPs=["10.0.0.17"])
    return live
