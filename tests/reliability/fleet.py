"""A namespace full of workspaces, with bystanders that are not ours, and the checks that it converged.

`Fleet` owns a throwaway config repo of `size` workspaces (a mix of VSCode and JupyterLab, with
and without a data source) in one namespace, the objects around them that the reconciler must
never touch (an unmanaged Deployment, Service, Ingress, ConfigMap and Secret, another project's
Deployment that carries our managed-by label, and two PVCs), seeded random changes to the repo,
and `assert_converged`: a dry-run shows every desired object unchanged, the live objects carry
what the repo renders (checked here, independently of the plan's own diff), nothing else moved.

`LeaseWatch` records every change of the `workspace-reconciler` Lease through a watch, so a test
can say who held it and when.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import watch
from kubernetes.client.rest import ApiException

from reconciler.render import render
from reconciler.validate import load_repo
from tests.e2e.helpers import ROOT, Admin, Repo, reconcile

PROJECT = "sample-project"
SELECTOR = f"app.kubernetes.io/managed-by=workspace-reconciler,app.kubernetes.io/part-of={PROJECT}"
ENVIRONMENTS = ("aisg-vscode-server-v4-16-1", "aisg-jupyterlab-server-0-1-0")
PVC = "sample-project-pvc"
LEASE_SECONDS = 3
"""WORKSPACE_RECONCILER_LEASE_SECONDS of every run here: a crashed holder's Lease expires quickly."""
KINDS = ("Deployment", "Service", "Ingress")


def run_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a reconcile run, as tests/e2e/helpers.reconcile builds it (no CI, no KUBECONFIG)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    env.pop("KUBECONFIG", None)
    env["WORKSPACE_RECONCILER_LEASE_SECONDS"] = str(LEASE_SECONDS)
    env.update(extra or {})
    return env


class Launched:
    """A reconcile run in the background; its output goes to files, so a large plan never blocks on a full pipe."""

    def __init__(self, args: tuple[str, ...], kubeconfig: Path, env: dict[str, str] | None) -> None:
        self._out = tempfile.TemporaryFile()  # noqa: SIM115 - closed by finish()
        self._err = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "reconciler", *args, "--kubeconfig", str(kubeconfig)],
                                     stdout=self._out, stderr=self._err, env=run_env(env), cwd=ROOT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def finish(self, timeout: float = 180) -> tuple[int, str, str]:
        """Wait for it; its exit code, stdout and stderr (never a traceback)."""
        code = self.proc.wait(timeout=timeout)
        texts = []
        for f in (self._out, self._err):
            f.seek(0)
            texts.append(f.read().decode(errors="replace"))
            f.close()
        out, err = texts
        assert "Traceback" not in out + err, f"exit {code}\n--- stdout\n{out}\n--- stderr\n{err}"
        return code, out, err


def launch(*args: str, kubeconfig: Path, env: dict[str, str] | None = None) -> Launched:
    """Start `python -m reconciler ARGS --kubeconfig K` in the background (to be killed or waited for)."""
    return Launched(args, kubeconfig, env)


def finish(run: Launched, timeout: float = 180) -> tuple[int, str, str]:
    """Wait for a launched run; its exit code, stdout and stderr (never a traceback)."""
    return run.finish(timeout)


def changes(plan: dict[str, Any]) -> int:
    """How many objects a plan (--output json) would write or delete."""
    return sum(1 for w in plan["workspaces"] for o in w["objects"] if o["action"] != "unchanged")


class Fleet:
    """`size` workspaces in `admin.ns`, the bystanders around them, and seeded changes to the repo."""

    def __init__(self, tmp: Path, admin: Admin, kubeconfig: Path, size: int, rng: random.Random) -> None:
        self.admin = admin
        self.kubeconfig = kubeconfig
        self.rng = rng
        self.repo = Repo(tmp / "repo", admin.ns)
        self.repo.edit("project.yaml", lambda d: d["spec"].pop("quota", None))
        for f in (self.repo.path / "workspaces").glob("*.yaml"):
            f.unlink()
        self._next = 0
        for _ in range(size):
            self._add()
        self.bystanders: dict[str, tuple[str, str]] = {}
        self.pvcs: dict[str, str] = {}

    # --- the repo ------------------------------------------------------------------------------
    def _add(self) -> str:
        owner = f"u{self._next:04d}"
        self._next += 1
        env = self.rng.choice(ENVIRONMENTS)
        name = f"{owner}-{'lab' if 'jupyter' in env else 'code'}"
        sources = (PVC,) if self.rng.random() < 0.8 else ()
        self.repo.add_workspace(name, owner, environment=env, compute="cpu-mid", data_sources=sources)
        return name

    def names(self) -> list[str]:
        return self.repo.workspaces()

    def mutate(self, *always: str) -> list[str]:
        """One or two seeded changes to the repo (a compute block, an env block, churn, states), plus `always`."""
        done = []
        ops = self.rng.sample(["compute", "env", "churn", "state"], k=self.rng.randint(1, 2))
        for op in [*always, *(o for o in ops if o not in always)]:
            if op == "compute":
                cur = self.repo.read("blocks/compute/cpu-mid.yaml")["spec"]["cpu"]
                cpu = self.rng.choice([c for c in ("2", "3", "4", "5", "6") if c != cur])
                self.repo.edit("blocks/compute/cpu-mid.yaml", lambda d, cpu=cpu: d["spec"].update(cpu=cpu))
                done.append(f"compute cpu={cpu}")
            elif op == "env":
                env = self.rng.choice(ENVIRONMENTS)
                value = str(self.rng.randrange(10**6))
                self.repo.edit(f"blocks/environments/{env}.yaml",
                               lambda d, value=value: d["spec"].update(env={"TRIAL": value}))
                done.append(f"env {env} TRIAL={value}")
            elif op == "churn":
                k = self.rng.randint(1, max(1, len(self.names()) // 5))
                for name in self.rng.sample(self.names(), k):
                    self.repo.remove(f"workspaces/{name}.yaml")
                for _ in range(k):
                    self._add()
                done.append(f"churn {k}")
            else:
                picked = self.rng.sample(self.names(), self.rng.randint(1, max(1, len(self.names()) // 4)))
                for name in picked:
                    self.repo.edit(f"workspaces/{name}.yaml", lambda d: d["spec"].update(
                        state="stopped" if d["spec"].get("state", "running") == "running" else "running"))
                done.append(f"state x{len(picked)}")
        return done

    # --- runs ----------------------------------------------------------------------------------
    def apply_args(self, *extra: str) -> list[str]:
        return ["--repo", str(self.repo.path), "--no-wait", "--allow-mass-delete", "--output", "json",
                "--timeout", "60", *extra]

    def plan(self) -> dict[str, Any]:
        r = reconcile("--repo", str(self.repo.path), "--dry-run", "--output", "json", kubeconfig=self.kubeconfig,
                      env={"WORKSPACE_RECONCILER_LEASE_SECONDS": str(LEASE_SECONDS)})
        assert r.code in (0, 1) and r.stdout.strip(), str(r)
        return r.json  # type: ignore[no-any-return]

    def apply(self, *extra: str, kubeconfig: Path | None = None,
              env: dict[str, str] | None = None) -> tuple[int, str, str]:
        return finish(launch(*self.apply_args(*extra), kubeconfig=kubeconfig or self.kubeconfig, env=env))

    # --- what must never move --------------------------------------------------------------------
    def add_bystanders(self) -> None:
        """A bound PVC the workspaces use, and objects that are not ours; remember their versions."""
        a = self.admin
        a.bound_pvc(PVC)
        a.core.create_namespaced_persistent_volume_claim(a.ns, {
            "metadata": {"name": "bystander-pvc"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "none",
                     "resources": {"requests": {"storage": "1Gi"}}}})
        for name, labels in (("bystander-app", {"app": "bystander"}),
                             ("other-project-app", {"app.kubernetes.io/managed-by": "workspace-reconciler",
                                                    "app.kubernetes.io/part-of": "other-project",
                                                    "app.kubernetes.io/instance": "other-project-app"})):
            a.apps.create_namespaced_deployment(a.ns, {
                "metadata": {"name": name, "labels": labels},
                "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                         "template": {"metadata": {"labels": labels},
                                      "spec": {"containers": [{"name": "c", "image": "registry.example/app:1"}]}}}})
        a.core.create_namespaced_service(a.ns, {"metadata": {"name": "bystander-svc"},
                                                "spec": {"ports": [{"port": 80}], "selector": {"app": "bystander"}}})
        a.net.create_namespaced_ingress(a.ns, {"metadata": {"name": "bystander-ing"}, "spec": {"rules": [{
            "host": "bystander.example", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
                "service": {"name": "bystander-svc", "port": {"number": 80}}}}]}}]}})
        a.core.create_namespaced_config_map(a.ns, {"metadata": {"name": "bystander-cm"}, "data": {"k": "v"}})
        a.core.create_namespaced_secret(a.ns, {"metadata": {"name": "bystander-secret"},
                                               "string_data": {"password": "bystander-password-value"}})
        self._settle()
        self.bystanders = self.snapshot_bystanders()
        self.pvcs = self.snapshot_pvcs()

    def _settle(self) -> None:
        """Wait until the controllers have written the bystander Deployments' status (their last own write)."""
        deadline = time.monotonic() + 30
        last: dict[str, tuple[str, str]] = {}
        while time.monotonic() < deadline:
            deps = {n: self.admin.get("Deployment", n) for n in ("bystander-app", "other-project-app")}
            done = all((d.get("status") or {}).get("observedGeneration") == d["metadata"]["generation"]
                       for d in deps.values())
            now = self.snapshot_bystanders()
            if done and now == last:
                return
            last = now
            time.sleep(1.0)
        raise AssertionError("the bystander Deployments did not settle")

    def snapshot_bystanders(self) -> dict[str, tuple[str, str]]:
        a = self.admin
        out = {}
        for kind, read, name in (("Deployment", a.apps.read_namespaced_deployment, "bystander-app"),
                                 ("Deployment", a.apps.read_namespaced_deployment, "other-project-app"),
                                 ("Service", a.core.read_namespaced_service, "bystander-svc"),
                                 ("Ingress", a.net.read_namespaced_ingress, "bystander-ing"),
                                 ("ConfigMap", a.core.read_namespaced_config_map, "bystander-cm"),
                                 ("Secret", a.core.read_namespaced_secret, "bystander-secret")):
            m = read(name, a.ns).metadata
            out[f"{kind}/{name}"] = (m.uid, m.resource_version)
        return out

    def snapshot_pvcs(self) -> dict[str, str]:
        return {p.metadata.name: p.metadata.uid
                for p in self.admin.core.list_namespaced_persistent_volume_claim(self.admin.ns).items}

    # --- convergence -----------------------------------------------------------------------------
    def live(self, kind: str) -> dict[str, dict[str, Any]]:
        """Our live objects of one kind, as plain JSON (one LIST by our label)."""
        a = self.admin
        lst = {"Deployment": a.apps.list_namespaced_deployment, "Service": a.core.list_namespaced_service,
               "Ingress": a.net.list_namespaced_ingress}[kind]
        raw = lst(a.ns, label_selector=SELECTOR, _preload_content=False)
        return {o["metadata"]["name"]: o for o in json.loads(raw.data)["items"]}

    def assert_converged(self, context: str) -> None:
        """Everything the repo wants is live and right, nothing else of ours is, and no bystander moved."""
        r = reconcile("--repo", str(self.repo.path), "--dry-run", "--detailed-exitcode", "--output", "json",
                      kubeconfig=self.kubeconfig)
        assert r.code == 0, f"{context}: the dry-run after convergence still has changes\n{r}"
        names = self.names()
        summary = r.json["summary"]
        assert summary == {"create": 0, "update": 0, "delete": 0, "unchanged": len(names), "conflict": 0}, \
            f"{context}: {summary}"
        desired = {(o["kind"], o["metadata"]["name"]): o
                   for w in render(load_repo(self.repo.path)) for o in w.objects}
        for kind in KINDS:
            live = self.live(kind)
            assert sorted(live) == names, f"{context}: our {kind}s are {sorted(set(live) ^ set(names))} off"
            for name, obj in live.items():
                mismatch = _not_within(desired[(kind, name)], obj)
                assert mismatch is None, f"{context}: {kind}/{name} differs from the repo at {mismatch}"
        if self.bystanders:
            assert self.snapshot_bystanders() == self.bystanders, f"{context}: an object that is not ours was written"
            assert self.snapshot_pvcs() == self.pvcs, f"{context}: a PVC was created or deleted"


def _not_within(desired: Any, live: Any, path: str = "") -> str | None:
    """The first path where `desired` is not part of `live` (the live object may carry more), or None."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return path or "."
        for k, v in desired.items():
            if path == "" and k in ("apiVersion", "kind"):
                continue  # LIST items leave them out
            if k not in live:
                if v in (False, None, [], {}, ""):
                    continue  # the apiserver leaves out empty and false fields (omitempty)
                return f"{path}.{k}"
            found = _not_within(v, live[k], f"{path}.{k}")
            if found:
                return found
        return None
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return path
        for i, (d, lv) in enumerate(zip(desired, live, strict=True)):
            found = _not_within(d, lv, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if desired == live else f"{path} (live {live!r}, desired {desired!r})"


# --- the Lease -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LeaseEvent:
    """One change of the Lease as a watch saw it."""

    type: str  # INITIAL, ADDED, MODIFIED, DELETED
    holder: str
    acquire: dt.datetime | None
    renew: dt.datetime | None
    seconds: int
    uid: str
    seen: float  # time.monotonic() of receipt

    @property
    def expires(self) -> dt.datetime | None:
        return None if self.renew is None else self.renew + dt.timedelta(seconds=self.seconds)


class LeaseWatch:
    """Every ADDED/MODIFIED/DELETED of the `workspace-reconciler` Lease while in the `with` block."""

    def __init__(self, admin: Admin) -> None:
        self.admin = admin
        self.events: list[LeaseEvent] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> LeaseWatch:
        lst = self.admin.coord.list_namespaced_lease(self.admin.ns, field_selector="metadata.name=workspace-reconciler")
        for lease in lst.items:
            self._add("INITIAL", lease)
        self._thread = threading.Thread(target=self._run, args=(lst.metadata.resource_version,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # let the last events arrive
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _add(self, kind: str, lease: Any) -> None:
        s = lease.spec
        ev = LeaseEvent(kind, s.holder_identity or "", s.acquire_time, s.renew_time, s.lease_duration_seconds or 0,
                        lease.metadata.uid, time.monotonic())
        with self._lock:
            self.events.append(ev)

    def _run(self, rv: str) -> None:
        while not self._stop.is_set():
            w = watch.Watch()
            try:
                for ev in w.stream(self.admin.coord.list_namespaced_lease, self.admin.ns, resource_version=rv,
                                   field_selector="metadata.name=workspace-reconciler", timeout_seconds=1):
                    rv = ev["object"].metadata.resource_version
                    self._add(ev["type"], ev["object"])
            except ApiException as e:
                if e.status != 410:
                    raise
                rv = self.admin.coord.list_namespaced_lease(self.admin.ns).metadata.resource_version

    def current(self) -> LeaseEvent | None:
        """The Lease as last seen (None when there is none)."""
        with self._lock:
            if not self.events or self.events[-1].type == "DELETED":
                return None
            return self.events[-1]

    def takeovers(self) -> list[tuple[LeaseEvent, LeaseEvent]]:
        """Each (last state of the old holder, first state of the new) where a new holder took a live Lease
        object over instead of creating it after a release; asserts that it happened only after expiry."""
        out = []
        with self._lock:
            events = list(self.events)
        for prev, ev in zip(events, events[1:], strict=False):
            if ev.type == "MODIFIED" and prev.type != "DELETED" and ev.holder != prev.holder:
                assert prev.expires is not None and ev.acquire is not None
                assert ev.acquire >= prev.expires, (
                    f"{ev.holder!r} took the Lease at {ev.acquire} from {prev.holder!r}, whose lease ran until "
                    f"{prev.expires}")
                out.append((prev, ev))
        return out

    def holders(self) -> list[str]:
        """The holders in the order they took the Lease."""
        out: list[str] = []
        with self._lock:
            for ev in self.events:
                if ev.type != "DELETED" and (not out or out[-1] != ev.holder):
                    out.append(ev.holder)
        return out
