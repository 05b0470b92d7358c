"""The performance benchmark (docs/TESTING.md#benchmark): the reconciler against kubectl on the same objects.

    make bench                                   # 100 and 1000 workspaces, 3 runs each
    BENCH_WORKSPACES=300 make bench              # 100 and 300
    BENCH_SIZES=100,1000,5000 make bench         # the sizes to show growth over (largest is reported)

Other knobs: BENCH_RUNS (repetitions per size, default 3; medians are reported), BENCH_PROFILE=0 (skip
the cProfile runs), BENCH_KEEP=1 (keep the temporary directory, for debugging).

For each size it generates a repo of N workspaces over 2 environments, 3 compute blocks and 1 data
source, starts the local control plane (tests/cluster/launcher.py) with an audit log, and measures,
each run in fresh namespaces: `reconcile validate`, the plan against an empty namespace, the apply
that creates everything, `kubectl apply --server-side` of `reconcile render` creating the same
objects, the no-op plan against `kubectl diff --server-side`, the no-op apply, and the plan after a
change to a compute block that 1% of the workspaces use. API requests are counted from the
apiserver's audit log (by User-Agent), peak RSS from wait4() of each reconciler process.

It writes bench/RESULTS.md and bench/scaling.png; progress goes to stderr, and the LAST line of
stdout is one JSON object with the numbers of the largest size (docs/TESTING.md#benchmark names its keys).
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import platform
import pstats
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT / "tests" / "cluster"))

PY = sys.executable
PROJECT = "bench"
DOMAIN = "bench.example.org"
DATA_SOURCE = "shared-data"
CHANGED_BLOCK = "cpu-large"
"""The compute block that 1% of the workspaces use; the one-change plan edits it."""
UA_RECONCILER = "workspace-reconciler"
UA_KUBECTL = "kubectl"
UA_HARNESS = "workspace-gitops-bench/0.1"
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
COMMAND_TIMEOUT = 1800.0

# Target thresholds (issue "Performance", at 1,000 workspaces).
TARGET_PLAN_SPEEDUP = 10.0
TARGET_PLAN_REQUESTS = 10
TARGET_APPLY_SPEEDUP = 2.0
TARGET_VALIDATE_S = 1.0
TARGET_RSS_MB = 300.0
TARGET_GROWTH_SLACK = 1.25
"""'About linear': time(N)/time(small) may exceed N/small by at most this factor."""

TIMED = (
    "startup_s", "validate_s", "render_s", "plan_empty_s", "apply_create_s", "kubectl_apply_create_s",
    "plan_noop_s", "kubectl_diff_noop_s", "apply_noop_s", "plan_one_change_s",
)
COUNTED = (
    "plan_empty_requests", "apply_create_requests", "apply_create_write_requests",
    "kubectl_apply_create_requests", "plan_noop_requests", "kubectl_diff_noop_requests",
    "apply_noop_requests", "apply_noop_write_requests", "plan_one_change_requests",
)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A measurement that could not be taken (the command failed or said something unexpected)."""


# --- configuration ---------------------------------------------------------------------------------

@dataclass
class Config:
    """What to run, from the environment."""

    workspaces: int
    sizes: list[int]
    runs: int
    profile: bool
    keep: bool

    @classmethod
    def from_env(cls) -> Config:
        raw_sizes = os.environ.get("BENCH_SIZES", "").strip()
        explicit_n = os.environ.get("BENCH_WORKSPACES", "").strip()
        sizes = sorted({int(s) for s in re.split(r"[,\s]+", raw_sizes) if s}) if raw_sizes else []
        if explicit_n:
            n = int(explicit_n)
        elif sizes:
            n = max(sizes)
        else:
            n = 1000
        if not sizes:
            sizes = sorted({min(100, n), n})
        sizes = sorted(set(sizes) | {n})
        runs = int(os.environ.get("BENCH_RUNS", "3"))
        if n < 1 or min(sizes) < 1 or runs < 1:
            raise SystemExit("BENCH_WORKSPACES, BENCH_SIZES and BENCH_RUNS must be positive")
        return cls(workspaces=n, sizes=sizes, runs=runs,
                   profile=os.environ.get("BENCH_PROFILE", "1") not in ("0", "", "false", "no"),
                   keep=os.environ.get("BENCH_KEEP", "0") not in ("0", "", "false", "no"))


# --- the generated repo ----------------------------------------------------------------------------

ENVIRONMENTS = {
    "vscode": """apiVersion: workspaces/v1
kind: Environment
metadata:
  name: vscode-4-16-1
spec:
  image: registry.example.org/mlops/vscode-server:4.16.1
  tool: vscode
  port: 8080
  args: ["--bind-addr", "0.0.0.0:8080", "{workdir}"]
  env: {}
  credentials:
    file: /home/coder/.config/code-server/config.yaml
""",
    "jupyterlab": """apiVersion: workspaces/v1
kind: Environment
metadata:
  name: jupyterlab-0-1-0
spec:
  image: registry.example.org/mlops/jupyterlab-server:0.1.0
  tool: jupyterlab
  port: 8888
  args: ["jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser"]
  env: {}
  credentials:
    logPattern: "lab?token"
""",
}
ENV_NAMES = {"vscode": "vscode-4-16-1", "jupyterlab": "jupyterlab-0-1-0"}
COMPUTE = {"cpu-small": ("2", "8Gi"), "cpu-mid": ("4", "16Gi"), CHANGED_BLOCK: ("8", "32Gi")}
CHANGED_MEMORY = "48Gi"


def compute_block(name: str, cpu: str, memory: str) -> str:
    return (f"apiVersion: workspaces/v1\nkind: ComputeResource\nmetadata:\n  name: {name}\n"
            f"spec:\n  cpu: \"{cpu}\"\n  memory: {memory}\n  gpu: 0\n")


def project_yaml(namespace: str) -> str:
    # No quota: 1,000 running workspaces are the point here, not the quota check.
    return (f"apiVersion: workspaces/v1\nkind: Project\nmetadata:\n  name: {PROJECT}\nspec:\n"
            f"  namespace: {namespace}\n  domain: {DOMAIN}\n  ownerPrefix: true\n  hints: kubectl\n"
            f"  admins: []\n")


@dataclass
class GeneratedRepo:
    """A repo of `n` workspaces; `changed` is how many use CHANGED_BLOCK (1%, at least one)."""

    path: Path
    n: int
    changed: int

    def set_namespace(self, namespace: str) -> None:
        (self.path / "project.yaml").write_text(project_yaml(namespace))

    def set_block_changed(self, changed: bool) -> None:
        cpu, memory = COMPUTE[CHANGED_BLOCK]
        (self.path / "blocks" / "compute" / f"{CHANGED_BLOCK}.yaml").write_text(
            compute_block(CHANGED_BLOCK, cpu, CHANGED_MEMORY if changed else memory))


def generate_repo(path: Path, n: int) -> GeneratedRepo:
    """Workspaces u0001-vscode, u0002-jupyterlab, ... (owner u0001, ...), every one on the data source."""
    for sub in ("workspaces", "blocks/environments", "blocks/compute", "blocks/data-sources"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    for tool, text in ENVIRONMENTS.items():
        (path / "blocks" / "environments" / f"{ENV_NAMES[tool]}.yaml").write_text(text)
    for name, (cpu, memory) in COMPUTE.items():
        (path / "blocks" / "compute" / f"{name}.yaml").write_text(compute_block(name, cpu, memory))
    (path / "blocks" / "data-sources" / f"{DATA_SOURCE}.yaml").write_text(
        f"apiVersion: workspaces/v1\nkind: DataSource\nmetadata:\n  name: {DATA_SOURCE}\nspec:\n"
        f"  pvc: {DATA_SOURCE}\n  mountPath: /data\n  readOnly: false\n")
    width = max(4, len(str(n)))
    changed = 0
    for i in range(1, n + 1):
        tool = "vscode" if i % 2 else "jupyterlab"
        owner = f"u{i:0{width}d}"
        name = f"{owner}-{tool}"
        if i % 100 == 1:  # 1% of the workspaces, at least one
            compute = CHANGED_BLOCK
            changed += 1
        else:
            compute = "cpu-small" if i % 3 else "cpu-mid"
        (path / "workspaces" / f"{name}.yaml").write_text(
            f"apiVersion: workspaces/v1\nkind: Workspace\nmetadata:\n  name: {name}\nspec:\n"
            f"  owner: {owner}\n  environment: {ENV_NAMES[tool]}\n  compute: {compute}\n"
            f"  dataSources: [{DATA_SOURCE}]\n  state: running\n")
    repo = GeneratedRepo(path, n, changed)
    repo.set_namespace(PROJECT)
    return repo


# --- a tiny admin client for the harness (its own User-Agent, so it is never counted) --------------

class Api:
    """Just enough of the Kubernetes API for setup, teardown and settling, over http.client."""

    def __init__(self, kubeconfig: Path) -> None:
        cfg = json.loads(kubeconfig.read_text())
        cluster = cfg["clusters"][0]["cluster"]
        user = cfg["users"][0]["user"]
        self.ctx = ssl.create_default_context(cafile=cluster["certificate-authority"])
        self.ctx.load_cert_chain(user["client-certificate"], user["client-key"])
        m = re.match(r"https://([^:/]+):(\d+)", cluster["server"])
        if not m:
            raise BenchError(f"unexpected server URL {cluster['server']}")
        self.host, self.port = m.group(1), int(m.group(2))
        self._conn: http.client.HTTPSConnection | None = None

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json", "User-Agent": UA_HARNESS}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(3):
            if self._conn is None:
                self._conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=60)
            try:
                self._conn.request(method, path, body=data, headers=headers)
                r = self._conn.getresponse()
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
            except (OSError, http.client.HTTPException):
                self._conn.close()
                self._conn = None
                if attempt == 2:
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")

    def must(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201)) -> Any:
        status, doc = self.request(method, path, body)
        if status not in ok:
            raise BenchError(f"{method} {path}: HTTP {status}: {(doc or {}).get('message', doc)}")
        return doc

    def count(self, path: str) -> int:
        """How many objects a LIST would return, from one `limit=1` page (remainingItemCount)."""
        doc = self.must("GET", f"{path}?limit=1")
        return len(doc.get("items") or []) + int((doc.get("metadata") or {}).get("remainingItemCount") or 0)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def pv_name(namespace: str) -> str:
    return f"{namespace}-{DATA_SOURCE}"


def create_namespaces(api: Api, namespaces: list[str]) -> None:
    """Fresh namespaces, each with a Bound claim for the data source (so the plan has no capacity warning).

    Created up front for all the runs of a size: volume and claim events make the scheduler retry
    every Pending pod, which must not happen during a measurement.
    """
    for ns in namespaces:
        api.must("POST", "/api/v1/persistentvolumes", {
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name(ns)},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                     "persistentVolumeReclaimPolicy": "Retain",
                     "hostPath": {"path": "/tmp/workspace-gitops-bench"},
                     "claimRef": {"namespace": ns, "name": DATA_SOURCE}}})
    # A claim the volume controller sees before its volume waits for the next resync (15 s).
    time.sleep(1.0)
    for ns in namespaces:
        api.must("POST", "/api/v1/namespaces",
                 {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        api.must("POST", f"/api/v1/namespaces/{ns}/persistentvolumeclaims", {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": DATA_SOURCE},
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv_name(ns),
                     "resources": {"requests": {"storage": "1Gi"}}}})
    wait_bound(api, namespaces)


def wait_bound(api: Api, namespaces: list[str], timeout: float = 60) -> None:
    start = time.monotonic()
    deadline = start + timeout
    for ns in namespaces:
        while True:
            pvc = api.must("GET", f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{DATA_SOURCE}")
            if (pvc.get("status") or {}).get("phase") == "Bound":
                break
            if time.monotonic() > deadline:
                log(f"warning: claim {ns}/{DATA_SOURCE} not Bound after {timeout:.0f}s; the plan will warn")
                break
            time.sleep(0.2)
    log(f"  claims Bound after {time.monotonic() - start:.1f}s")


def delete_namespaces(api: Api, namespaces: list[str], timeout: float = 600) -> None:
    """Delete the namespaces and their volumes, and wait until they are gone."""
    for ns in namespaces:
        api.must("DELETE", f"/api/v1/namespaces/{ns}", ok=(200, 202, 404))
        api.must("DELETE", f"/api/v1/persistentvolumes/{pv_name(ns)}", ok=(200, 202, 404))
    start = time.monotonic()
    for ns in namespaces:
        while api.request("GET", f"/api/v1/namespaces/{ns}")[0] != 404:
            if time.monotonic() > start + timeout:
                log(f"warning: namespace {ns} still terminating after {timeout:.0f}s")
                return
            time.sleep(0.5)
    log(f"  namespaces gone after {time.monotonic() - start:.1f}s")


# --- the audit log ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class LogPos:
    """A point in the audit log: the file (by inode, the log rotates) and an offset in it."""

    inode: int
    offset: int


class Audit:
    """Counts requests in the apiserver's audit log between two points, by User-Agent.

    The apiserver rotates its audit log at 100 MB even with --audit-log-maxsize=0 (lumberjack's
    default): `audit.log` is renamed to `audit-<time>.log` and started again. A position is therefore
    an inode and an offset, and reading from it continues through the rotated files.
    """

    def __init__(self, path: Path, api: Api) -> None:
        self.path = path
        self.api = api

    def pos(self) -> LogPos:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return LogPos(0, 0)
        return LogPos(st.st_ino, st.st_size)

    def _files(self) -> list[Path]:
        """The rotated logs, oldest first, then the current one."""
        rotated = sorted(self.path.parent.glob(f"{self.path.stem}-*{self.path.suffix}"),
                         key=lambda p: p.stat().st_mtime)
        return [*rotated, self.path]

    def read_since(self, start: LogPos) -> Iterator[bytes]:
        """Every line written after `start`, across rotations."""
        files = self._files()
        inodes = []
        for p in files:
            try:
                inodes.append(p.stat().st_ino)
            except FileNotFoundError:
                inodes.append(-1)
        first = inodes.index(start.inode) if start.inode in inodes else len(files) - 1
        for i in range(first, len(files)):
            try:
                with open(files[i], "rb") as f:
                    if i == first and inodes[i] == start.inode:
                        f.seek(start.offset)
                    yield from f
            except FileNotFoundError:
                continue

    def flush(self) -> None:
        """Wait until everything the apiserver handled so far is in the log (a marker request's event)."""
        marker = f"bench-marker-{uuid.uuid4().hex[:12]}"
        start = self.pos()
        self.api.request("GET", f"/api/v1/namespaces/{marker}")
        deadline = time.monotonic() + 15
        needle = marker.encode()
        while time.monotonic() < deadline:
            if any(needle in line for line in self.read_since(start)):
                return
            time.sleep(0.05)
        log("warning: the audit marker did not appear within 15s; counts may be short")

    def verbs(self, start: LogPos, agent: str) -> Counter[str]:
        """Verbs of the admin's completed requests since `start` whose User-Agent starts with `agent`."""
        self.flush()
        out: Counter[str] = Counter()
        needle = f'"userAgent":"{agent}'.encode()
        for line in self.read_since(start):
            if needle not in line:
                continue
            ev = json.loads(line)
            if (ev.get("stage") == "ResponseComplete" and ev.get("user", {}).get("username") == "admin"
                    and ev.get("userAgent", "").startswith(agent)):
                out[ev.get("verb", "?")] += 1
        return out

    def quiet(self, max_rate: float = 20.0, timeout: float = 90.0) -> None:
        """Wait until the controllers and scheduler have (mostly) stopped writing to the apiserver."""
        start = time.monotonic()
        calm = 0
        last = self.pos()
        while time.monotonic() < start + timeout:
            time.sleep(0.5)
            now = self.pos()
            events = sum(1 for _ in self.read_since(last))
            last = now
            calm = calm + 1 if events <= max_rate * 0.5 else 0
            if calm >= 3:
                log(f"  apiserver quiet after {time.monotonic() - start:.1f}s")
                return
        log(f"warning: the control plane was still busy after {timeout:.0f}s; measuring anyway")


def settle(api: Api, audit: Audit, ns: str, pods: int, timeout: float = 300) -> None:
    """After a create: wait for the controller-manager's Pods, then for the apiserver to go quiet."""
    start = time.monotonic()
    while pods and api.count(f"/api/v1/namespaces/{ns}/pods") < pods:
        if time.monotonic() > start + timeout:
            log(f"warning: fewer than {pods} pods in {ns} after {timeout:.0f}s")
            break
        time.sleep(0.5)
    log(f"  {pods} pods in {ns} after {time.monotonic() - start:.1f}s")
    audit.quiet()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far (from /proc/<pid>/stat)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- running the commands --------------------------------------------------------------------------

@dataclass
class Ran:
    """One finished command."""

    argv: list[str]
    rc: int
    seconds: float
    maxrss_mb: float
    cpu_s: float
    stdout: str
    stderr: str

    def tail(self, n: int = 800) -> str:
        text = (self.stderr.strip() or self.stdout.strip())
        return text[-n:]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    env.pop("KUBECONFIG", None)
    env["NO_COLOR"] = "1"
    return env


def run(argv: list[str], *, cwd: Path, timeout: float = COMMAND_TIMEOUT) -> Ran:
    """Run a command, timing it; its own peak RSS comes from wait4(), so kubectl never counts as ours."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        p = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=cwd, env=child_env())
        killer = threading.Timer(timeout, p.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(p.pid, 0)
        except BaseException:
            p.kill()
            p.wait()
            raise
        finally:
            killer.cancel()
        seconds = time.perf_counter() - start
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Ran(argv, p.returncode, seconds, usage.ru_maxrss / 1024.0, usage.ru_utime + usage.ru_stime,
                   out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def reconcile_argv(*args: str, profile_to: Path | None = None) -> list[str]:
    if profile_to:  # cProfile, but in every thread (bench/profile_threads.py)
        return [PY, str(BENCH / "profile_threads.py"), str(profile_to), "reconciler", *args]
    return [PY, "-m", "reconciler", *args]


def plan_json(r: Ran, what: str) -> dict[str, Any]:
    if r.rc != 0:
        raise BenchError(f"{what} exited {r.rc}: {r.tail()}")
    try:
        doc = json.loads(r.stdout)
    except json.JSONDecodeError:
        raise BenchError(f"{what} did not print one JSON object: {r.stdout[:300]!r}") from None
    if not isinstance(doc, dict) or "summary" not in doc:
        raise BenchError(f"{what}: JSON without a summary: {r.stdout[:300]!r}")
    return doc


def changes(summary: dict[str, int]) -> int:
    return sum(int(summary.get(k, 0)) for k in ("create", "update", "delete", "conflict"))


def first_diffs(doc: dict[str, Any], action: str = "update", limit: int = 3) -> str:
    """The first field diffs of the first workspace with `action`, to say what an unexpected change was."""
    for w in doc.get("workspaces") or []:
        if w.get("action") != action:
            continue
        diffs = [f"{o.get('kind')}: {d.get('path')}: {d.get('live')!r} -> {d.get('desired')!r}"
                 for o in w.get("objects") or [] for d in o.get("diff") or []]
        return f"e.g. {w.get('name')}: " + ("; ".join(diffs[:limit]) or "(no field diff given)")
    return ""


# --- the measurements ------------------------------------------------------------------------------

@dataclass
class SizeResult:
    """Every sample taken at one size."""

    n: int
    objects: int = 0
    times: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, list[int]] = field(default_factory=dict)
    verbs: dict[str, Counter[str]] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    """Per command: CPU seconds of the client, of kube-apiserver + etcd, of controller-manager + scheduler."""
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def time(self, key: str, seconds: float) -> None:
        self.times.setdefault(key, []).append(seconds)

    def count(self, key: str, n: int) -> None:
        self.counts.setdefault(key, []).append(n)

    def rss(self, key: str, mb: float) -> None:
        self.rss_mb[key] = max(self.rss_mb.get(key, 0.0), mb)

    def note(self, msg: str) -> None:
        if msg not in self.notes:
            self.notes.append(msg)
            log(f"note: {msg}")

    def error(self, msg: str) -> None:
        self.errors.append(msg)
        log(f"ERROR: {msg}")

    def median(self, key: str) -> float | None:
        v = self.times.get(key) or self.counts.get(key)
        return round(statistics.median(v), 4) if v else None

    def median_int(self, key: str) -> int | None:
        v = self.counts.get(key)
        return int(statistics.median(v)) if v else None

    def cpu_median(self, key: str, which: int = 0) -> float | None:
        """Median CPU seconds of a command: 0 the client, 1 kube-apiserver + etcd, 2 the controllers."""
        v = self.cpu.get(key)
        return round(statistics.median(x[which] for x in v), 3) if v else None

    def peak_rss_mb(self) -> float | None:
        return round(max(self.rss_mb.values()), 1) if self.rss_mb else None


class Bench:
    """One control plane, every size, every run."""

    def __init__(self, cfg: Config, work: Path, kubeconfig: Path, audit_log: Path, kubectl: Path,
                 pids: dict[str, int]) -> None:
        self.cfg = cfg
        self.server_pids = [pids[k] for k in ("kube-apiserver", "etcd") if k in pids]
        self.controller_pids = [pids[k] for k in ("kube-controller-manager", "kube-scheduler") if k in pids]
        self.work = work
        self.kc = kubeconfig
        self.api = Api(kubeconfig)
        self.audit = Audit(audit_log, self.api)
        self.kubectl = kubectl
        self.kubectl_cache = work / "kubectl-cache"
        self.results: dict[int, SizeResult] = {}
        self.profiles: dict[str, Path] = {}

    # -- helpers
    def timed(self, res: SizeResult, key: str, argv: list[str], agent: str | None) -> tuple[Ran, Counter[str]]:
        """Run one measured command: wall time, its requests in the audit log, CPU on both sides."""
        start = self.audit.pos()
        server0, ctl0 = cpu_seconds(self.server_pids), cpu_seconds(self.controller_pids)
        r = run(argv, cwd=self.work)
        server, ctl = cpu_seconds(self.server_pids) - server0, cpu_seconds(self.controller_pids) - ctl0
        res.cpu.setdefault(key, []).append((r.cpu_s, server, ctl))
        return r, (self.audit.verbs(start, agent) if agent else Counter())

    def reconciler(self, res: SizeResult, key: str, *args: str, kube: bool = True) -> tuple[Ran, Counter[str]]:
        argv = reconcile_argv(*args, *(["--kubeconfig", str(self.kc)] if kube else []))
        r, verbs = self.timed(res, key, argv, UA_RECONCILER if kube else None)
        res.rss(key, r.maxrss_mb)
        if "Traceback" in r.stderr:
            res.note(f"`{key}`: the reconciler printed a traceback: {r.tail(300)}")
        return r, verbs

    def kubectl_run(self, res: SizeResult, key: str, *args: str) -> tuple[Ran, Counter[str]]:
        argv = [str(self.kubectl), "--kubeconfig", str(self.kc), "--cache-dir", str(self.kubectl_cache), *args]
        return self.timed(res, key, argv, UA_KUBECTL)

    def measure(self, res: SizeResult, what: str, fn: Callable[[], None]) -> bool:
        try:
            fn()
            return True
        except BenchError as e:
            res.error(f"n={res.n} {what}: {e}")
            return False

    # -- one size
    def size(self, n: int) -> SizeResult:
        res = SizeResult(n)
        self.results[n] = res
        repo = generate_repo(self.work / f"repo-{n}", n)
        log(f"n={n}: generated {n} workspace files ({repo.changed} use {CHANGED_BLOCK}) in {repo.path}")
        namespaces = [ns for i in range(1, self.cfg.runs + 1) for ns in self.run_namespaces(n, i)]
        if self.cfg.profile and n == self.cfg.workspaces:
            namespaces.append(self.profile_namespace(n))
        create_namespaces(self.api, namespaces)
        self.audit.quiet()
        for i in range(1, self.cfg.runs + 1):
            log(f"n={n}: run {i}/{self.cfg.runs}")
            self.one_run(res, repo, i)
        return res

    @staticmethod
    def run_namespaces(n: int, i: int) -> tuple[str, str]:
        return f"bench-{n}-r{i}", f"bench-{n}-r{i}-kubectl"

    @staticmethod
    def profile_namespace(n: int) -> str:
        return f"bench-{n}-profile"

    def one_run(self, res: SizeResult, repo: GeneratedRepo, i: int) -> None:
        n = repo.n
        ns_r, ns_k = self.run_namespaces(n, i)
        render_dir = self.work / f"render-{n}-{i}"

        def startup() -> None:
            r, _ = self.reconciler(res, "startup_s", "--version", kube=False)
            if r.rc != 0:
                raise BenchError(f"reconcile --version exited {r.rc}: {r.tail()}")
            res.time("startup_s", r.seconds)

        def validate() -> None:
            r, _ = self.reconciler(res, "validate_s", "validate", "--repo", str(repo.path), kube=False)
            if r.rc != 0:
                raise BenchError(f"validate exited {r.rc}: {r.tail()}")
            res.time("validate_s", r.seconds)
            log(f"  validate            {r.seconds:7.2f}s  {r.maxrss_mb:6.0f} MB")

        def render() -> None:
            repo.set_namespace(ns_k)
            try:
                r, _ = self.reconciler(res, "render_s", "render", "--repo", str(repo.path),
                                       "--output-dir", str(render_dir), kube=False)
            finally:
                repo.set_namespace(ns_r)
            if r.rc != 0:
                raise BenchError(f"render exited {r.rc}: {r.tail()}")
            files = sorted(render_dir.glob("*.yaml"))
            res.objects = len(files)
            res.time("render_s", r.seconds)
            wrong = [f.name for f in files if f"\n  namespace: {ns_k}\n" not in f.read_text()]
            if wrong:
                raise BenchError(f"rendered objects without metadata.namespace {ns_k}: {wrong[:3]}")
            log(f"  render              {r.seconds:7.2f}s  ({len(files)} objects)")

        self.measure(res, "startup", startup)
        self.measure(res, "validate", validate)
        rendered = self.measure(res, "render", render)

        # Alternate which tool goes first, so neither always meets a colder or busier apiserver.
        blocks = [lambda: self.reconciler_block(res, repo, ns_r),
                  lambda: self.kubectl_block(res, repo, ns_k, render_dir) if rendered else None]
        for block in (blocks if i % 2 else blocks[::-1]):
            block()
        # Not in a `finally`: after Ctrl-C the whole control plane goes, no need to wait for namespaces.
        log(f"  deleting namespaces {ns_r}, {ns_k}")
        delete_namespaces(self.api, [ns_r, ns_k])
        shutil.rmtree(render_dir, ignore_errors=True)
        self.audit.quiet()

    def reconciler_block(self, res: SizeResult, repo: GeneratedRepo, ns: str) -> None:
        n = repo.n
        repo.set_namespace(ns)
        base = ["--repo", str(repo.path), "--output", "json"]

        def plan_empty() -> None:
            r, verbs = self.reconciler(res, "plan_empty_s", *base, "--dry-run")
            doc = plan_json(r, "plan (empty namespace)")
            if int(doc["summary"].get("create", 0)) != n:
                res.note(f"plan against an empty namespace: summary {doc['summary']} (expected create={n})")
            res.time("plan_empty_s", r.seconds)
            res.count("plan_empty_requests", sum(verbs.values()))
            res.verbs["plan_empty"] = verbs
            log(f"  plan (empty ns)     {r.seconds:7.2f}s  {sum(verbs.values()):5d} requests  {r.maxrss_mb:6.0f} MB")

        def apply_create() -> None:
            r, verbs = self.reconciler(res, "apply_create_s", *base, "--no-wait")
            doc = plan_json(r, "apply (create)")
            if int(doc["summary"].get("create", 0)) != n:
                res.note(f"apply creating everything: summary {doc['summary']} (expected create={n})")
            writes = sum(v for k, v in verbs.items() if k in WRITE_VERBS)
            res.time("apply_create_s", r.seconds)
            res.count("apply_create_requests", sum(verbs.values()))
            res.count("apply_create_write_requests", writes)
            res.verbs["apply_create"] = verbs
            log(f"  apply (create)      {r.seconds:7.2f}s  {sum(verbs.values()):5d} requests "
                f"({writes} writes)  {r.maxrss_mb:6.0f} MB")

        def plan_noop() -> None:
            r, verbs = self.reconciler(res, "plan_noop_s", *base, "--dry-run")
            doc = plan_json(r, "plan (no-op)")
            if changes(doc["summary"]):
                res.note(f"the no-op plan is not empty: summary {doc['summary']}; {first_diffs(doc)}")
            res.time("plan_noop_s", r.seconds)
            res.count("plan_noop_requests", sum(verbs.values()))
            res.verbs["plan_noop"] = verbs
            log(f"  plan (no-op)        {r.seconds:7.2f}s  {sum(verbs.values()):5d} requests  {r.maxrss_mb:6.0f} MB")

        def apply_noop() -> None:
            r, verbs = self.reconciler(res, "apply_noop_s", *base, "--no-wait")
            doc = plan_json(r, "apply (no-op)")
            if changes(doc["summary"]):
                res.note(f"the no-op apply changed something: summary {doc['summary']}; {first_diffs(doc)}")
            writes = sum(v for k, v in verbs.items() if k in WRITE_VERBS)
            res.time("apply_noop_s", r.seconds)
            res.count("apply_noop_requests", sum(verbs.values()))
            res.count("apply_noop_write_requests", writes)
            res.verbs["apply_noop"] = verbs
            log(f"  apply (no-op)       {r.seconds:7.2f}s  {sum(verbs.values()):5d} requests "
                f"({writes} writes)  {r.maxrss_mb:6.0f} MB")

        def plan_one_change() -> None:
            repo.set_block_changed(True)
            try:
                r, verbs = self.reconciler(res, "plan_one_change_s", *base, "--dry-run")
            finally:
                repo.set_block_changed(False)
            doc = plan_json(r, "plan (one block changed)")
            if int(doc["summary"].get("update", 0)) != repo.changed or changes(doc["summary"]) != repo.changed:
                res.note(f"plan after changing {CHANGED_BLOCK}: summary {doc['summary']} "
                         f"(expected update={repo.changed})")
            res.time("plan_one_change_s", r.seconds)
            res.count("plan_one_change_requests", sum(verbs.values()))
            log(f"  plan (1% changed)   {r.seconds:7.2f}s  {sum(verbs.values()):5d} requests  "
                f"{r.maxrss_mb:6.0f} MB")

        self.measure(res, "plan against an empty namespace", plan_empty)
        if not self.measure(res, "apply creating everything", apply_create):
            return
        settle(self.api, self.audit, ns, n)
        self.measure(res, "no-op plan", plan_noop)
        self.measure(res, "no-op apply", apply_noop)
        self.measure(res, "plan after one block change", plan_one_change)

    def kubectl_block(self, res: SizeResult, repo: GeneratedRepo, ns: str, render_dir: Path) -> None:
        n = repo.n

        def apply_create() -> None:
            r, verbs = self.kubectl_run(res, "kubectl_apply_create_s", "apply", "--server-side", "-n", ns,
                                        "-R", "-f", str(render_dir))
            if r.rc != 0:
                raise BenchError(f"kubectl apply --server-side exited {r.rc}: {r.tail()}")
            res.time("kubectl_apply_create_s", r.seconds)
            res.count("kubectl_apply_create_requests", sum(verbs.values()))
            res.verbs["kubectl_apply_create"] = verbs
            log(f"  kubectl apply       {r.seconds:7.2f}s  {sum(verbs.values()):5d} requests")

        def diff_noop() -> None:
            # The same field manager as the apply above (kubectl diff defaults to another one).
            r, verbs = self.kubectl_run(res, "kubectl_diff_noop_s", "diff", "--server-side",
                                        "--field-manager=kubectl", "-n", ns, "-R", "-f", str(render_dir))
            if r.rc not in (0, 1):
                raise BenchError(f"kubectl diff --server-side exited {r.rc}: {r.tail()}")
            if r.rc == 1:
                res.note(f"kubectl diff --server-side was not a no-op (exit 1): {r.stdout[:400]!r}")
            res.time("kubectl_diff_noop_s", r.seconds)
            res.count("kubectl_diff_noop_requests", sum(verbs.values()))
            res.verbs["kubectl_diff_noop"] = verbs
            log(f"  kubectl diff        {r.seconds:7.2f}s  {sum(verbs.values()):5d} requests")

        if not self.measure(res, "kubectl apply --server-side", apply_create):
            return
        settle(self.api, self.audit, ns, n)
        self.measure(res, "kubectl diff --server-side", diff_noop)

    # -- profile
    def profile(self, n: int) -> None:
        """The no-op plan and the apply that creates everything, once each, under cProfile."""
        repo = GeneratedRepo(self.work / f"repo-{n}", n, 0)
        ns = self.profile_namespace(n)
        out = BENCH / "work"
        out.mkdir(exist_ok=True)
        try:
            repo.set_namespace(ns)
            self.audit.quiet()
            base = ["--repo", str(repo.path), "--output", "json"]
            apply_prof = out / f"apply_create-{n}.prof"
            log(f"n={n}: profiling the apply that creates everything -> {apply_prof}")
            r = run(reconcile_argv(*base, "--no-wait", "--kubeconfig", str(self.kc), profile_to=apply_prof),
                    cwd=self.work)
            if r.rc != 0 or not apply_prof.exists():
                raise BenchError(f"profiled apply exited {r.rc}: {r.tail()}")
            self.profiles["apply (create)"] = apply_prof
            settle(self.api, self.audit, ns, n)
            plan_prof = out / f"plan_noop-{n}.prof"
            log(f"n={n}: profiling the no-op plan -> {plan_prof}")
            r = run(reconcile_argv(*base, "--dry-run", "--kubeconfig", str(self.kc), profile_to=plan_prof),
                    cwd=self.work)
            if r.rc != 0 or not plan_prof.exists():
                raise BenchError(f"profiled plan exited {r.rc}: {r.tail()}")
            self.profiles["plan (no-op)"] = plan_prof
        finally:
            repo.set_namespace(self.run_namespaces(n, 1)[0])
        # The namespace stays: the control plane is stopped right after this.


# --- results ---------------------------------------------------------------------------------------

def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def summary_json(cfg: Config, results: dict[int, SizeResult], errors: list[str]) -> dict[str, Any]:
    main = results.get(cfg.workspaces) or SizeResult(cfg.workspaces)
    out: dict[str, Any] = {"workspaces": cfg.workspaces, "objects": main.objects or 3 * cfg.workspaces}
    for key in ("validate_s", "plan_empty_s", "apply_create_s", "kubectl_apply_create_s", "plan_noop_s",
                "kubectl_diff_noop_s"):
        out[key] = main.median(key)
    out["plan_noop_requests"] = main.median_int("plan_noop_requests")
    out["kubectl_diff_noop_requests"] = main.median_int("kubectl_diff_noop_requests")
    out["apply_noop_s"] = main.median("apply_noop_s")
    out["apply_noop_write_requests"] = main.median_int("apply_noop_write_requests")
    out["plan_one_change_s"] = main.median("plan_one_change_s")
    out["peak_rss_mb"] = main.peak_rss_mb()
    out["runs"] = cfg.runs
    out["startup_s"] = main.median("startup_s")
    out["render_s"] = main.median("render_s")
    out["apply_create_requests"] = main.median_int("apply_create_requests")
    out["kubectl_apply_create_requests"] = main.median_int("kubectl_apply_create_requests")
    out["apply_noop_requests"] = main.median_int("apply_noop_requests")
    out["plan_speedup_vs_kubectl"] = ratio(out["kubectl_diff_noop_s"], out["plan_noop_s"])
    out["apply_speedup_vs_kubectl"] = ratio(out["kubectl_apply_create_s"], out["apply_create_s"])
    small = min(results) if results else cfg.workspaces
    if small != cfg.workspaces and small in results:
        s = results[small]
        out["growth"] = {"from": small, "to": cfg.workspaces, "workspaces": round(cfg.workspaces / small, 2),
                         **{k: ratio(main.median(k), s.median(k)) for k in
                            ("plan_noop_s", "apply_create_s", "kubectl_diff_noop_s", "kubectl_apply_create_s")},
                         # The reconciler's own CPU, without the control plane's share of the wall time.
                         "plan_noop_client_cpu": ratio(main.cpu_median("plan_noop_s"), s.cpu_median("plan_noop_s")),
                         "apply_create_client_cpu": ratio(main.cpu_median("apply_create_s"),
                                                          s.cpu_median("apply_create_s"))}
    else:
        out["growth"] = None
    out["sizes"] = {str(n): {k: r.median(k) for k in ("validate_s", "plan_noop_s", "apply_create_s",
                                                        "kubectl_diff_noop_s", "kubectl_apply_create_s")}
                    for n, r in sorted(results.items())}
    out["targets"] = {name: verdict for name, verdict, _ in targets(out)}
    out["errors"] = errors
    return out


def targets(s: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(name, PASS | MISS | n/a, what was measured) for each target of the issue."""
    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("PASS" if ok else "MISS")

    def known(*v: Any) -> bool:
        return all(x is not None for x in v)

    speed, reqs = s.get("plan_speedup_vs_kubectl"), s.get("plan_noop_requests")
    aspeed = s.get("apply_speedup_vs_kubectl")
    writes, val, rss = s.get("apply_noop_write_requests"), s.get("validate_s"), s.get("peak_rss_mb")
    g = s.get("growth") or {}
    gw = g.get("workspaces")
    gp, ga = g.get("plan_noop_s"), g.get("apply_create_s")
    return [
        ("no-op plan >= 10x faster than kubectl diff, <= 10 requests",
         verdict(speed >= TARGET_PLAN_SPEEDUP and reqs <= TARGET_PLAN_REQUESTS if known(speed, reqs) else None),
         f"{speed}x, {reqs} requests"),
        ("apply-create >= 2x faster than kubectl apply",
         verdict(aspeed >= TARGET_APPLY_SPEEDUP if known(aspeed) else None), f"{aspeed}x"),
        ("no-op apply makes 0 write requests", verdict(writes == 0 if known(writes) else None), f"{writes}"),
        ("validate < 1 s", verdict(val < TARGET_VALIDATE_S if known(val) else None), f"{val} s"),
        ("peak RSS < 300 MB", verdict(rss < TARGET_RSS_MB if known(rss) else None), f"{rss} MB"),
        ("grows about linearly (time ratio <= 1.25 x workspace ratio)",
         verdict(gp <= TARGET_GROWTH_SLACK * gw and ga <= TARGET_GROWTH_SLACK * gw
                 if known(gw, gp, ga) else None),
         f"x{gw} workspaces: plan x{gp}, apply x{ga} (kubectl apply x{g.get('kubectl_apply_create_s')}; "
         f"reconciler CPU: plan x{g.get('plan_noop_client_cpu')}, apply x{g.get('apply_create_client_cpu')})"
         if gw else "one size only"),
    ]


def machine() -> dict[str, str]:
    def first(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "n/a"

    cpu = "n/a"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = "n/a"
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    others = 0
    for stat in Path("/proc").glob("[0-9]*/comm"):
        with suppress(OSError):
            others += stat.read_text().strip() == "kube-apiserver"
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return {"nproc": str(os.cpu_count()), "memory": mem, "cpu": cpu, "load": load,
            "apiservers": str(others),
            "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
            "python": platform.python_version(), "go": first(["go", "version"])}


def command_line() -> str:
    knobs = " ".join(f"{k}={os.environ[k]}" for k in ("BENCH_WORKSPACES", "BENCH_SIZES", "BENCH_RUNS",
                                                       "BENCH_PROFILE") if os.environ.get(k))
    cmd = "make bench" if os.environ.get("MAKELEVEL") else ".venv/bin/python bench/run.py"
    return f"{knobs} {cmd}".strip()


def fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if unit in ("x", " MB"):
            return f"{v:.1f}{unit}" if v >= 10 or unit == " MB" else f"{v:.2f}{unit}"
        return f"{v:.3f}{unit}" if v < 10 else f"{v:.2f}{unit}" if v < 100 else f"{v:.1f}{unit}"
    return f"{v}{unit}"


def plot(results: dict[int, SizeResult], path: Path) -> str | None:
    """Time against workspaces for both tools; returns why not when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    sizes = sorted(results)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = [("no-op plan", [("reconcile --dry-run", "plan_noop_s", "C0"),
                              ("kubectl diff --server-side", "kubectl_diff_noop_s", "C3")]),
              ("apply creating everything", [("reconcile --no-wait", "apply_create_s", "C0"),
                                             ("kubectl apply --server-side", "kubectl_apply_create_s", "C3")])]
    for ax, (title, lines) in zip(axes, panels, strict=True):
        for label, key, color in lines:
            pts = [(n, results[n].median(key)) for n in sizes if results[n].median(key) is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label, color=color)
            if len(pts) > 1 and color == "C0":  # what linear growth from the smallest size would look like
                n0, t0 = pts[0]
                ax.plot([p[0] for p in pts], [t0 * p[0] / n0 for p in pts], ":", color="grey",
                        label="linear from the smallest size")
        ax.set_title(title)
        ax.set_xlabel("workspaces (3 objects each)")
        ax.set_ylabel("seconds (median)")
        if len(sizes) > 1 and max(sizes) / min(sizes) >= 10:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("workspace-gitops reconciler vs kubectl (local kube-apiserver + etcd)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def area(filename: str, func: str) -> str:
    """Which part of the program a profiled function belongs to."""
    m = re.search(r"/reconciler/(\w+)\.py$", filename)
    if m:
        return f"reconciler.{m.group(1)}"
    m = re.search(r"/site-packages/([A-Za-z0-9_]+)", filename)
    if m:
        return {"_yaml": "yaml", "pydantic_core": "pydantic", "six": "kubernetes"}.get(m.group(1), m.group(1))
    if filename == "~":
        if re.search(r"_ssl|socket|select|poll", func):
            return "network (ssl/socket)"
        if "_thread.lock" in func or "acquire" in func:
            return "waiting on threads/locks"
        if re.search(r"marshal|_imp\.|compile|builtins.exec|loads of|posix", func):
            return "imports and file I/O"
        if "json" in func:
            return "json"
        return "builtins"
    if "importlib" in filename:
        return "imports and file I/O"
    m = re.search(r"/lib/python3\.\d+/(\w+)", filename)
    if m:
        mod = m.group(1)
        return {"ssl": "network (ssl/socket)", "socket": "network (ssl/socket)", "http": "network (ssl/socket)",
                "selectors": "network (ssl/socket)", "threading": "waiting on threads/locks",
                "concurrent": "waiting on threads/locks", "queue": "waiting on threads/locks"}.get(mod, f"stdlib {mod}")
    return "other"


def _short_name(filename: str, line: int, func: str) -> str:
    if filename == "~":
        return f"`{func}`"
    short = re.sub(r".*/(site-packages|lib/python3[.][0-9]+)/", "", filename)
    short = re.sub(r".*/(reconciler/)", r"\1", short)
    return f"`{short}:{line} {func}`"


def profile_markdown(name: str, prof: Path) -> list[str]:
    """Where one profiled command spent its time: by area, the reconciler's functions, the hottest functions."""
    st = pstats.Stats(str(prof))
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = st.stats  # type: ignore[attr-defined]
    main_file = Path(str(prof) + ".main")
    main_raw = pstats.Stats(str(main_file)).stats if main_file.exists() else raw  # type: ignore[attr-defined]
    wall = max((ct for (_, _, _, ct, _) in main_raw.values()), default=0.0)
    thread_s = sum(tt for (_, _, tt, _, _) in raw.values())
    imports = sum(ct for (f, _, fn), (_, _, _, ct, _) in main_raw.items()
                  if fn == "_find_and_load" and "importlib" in f)
    by_area: Counter[str] = Counter()
    for (filename, _, func), (_, _, tt, _, _) in raw.items():
        by_area[area(filename, func)] += tt
    lines = [f"#### {name}", "",
             f"{wall:.2f} s in the main thread (imports {imports:.2f} s); {thread_s:.2f} thread-seconds "
             "in all threads.", "",
             "Self time by area, all threads:", "", "| area | self s | share |", "|---|---:|---:|"]
    for a, t in by_area.most_common(12):
        lines.append(f"| {a} | {t:.3f} | {100 * t / thread_s if thread_s else 0:.0f}% |")
    lines += ["", "The reconciler's own functions by cumulative time (all threads; the CLI frame left out):", "",
              "| function | calls | cumulative s | self s |", "|---|---:|---:|---:|"]
    rows = [(ct, nc, tt, _short_name(f, ln, fn)) for (f, ln, fn), (_, nc, tt, ct, _) in raw.items()
            if "/reconciler/" in f and fn not in ("<module>", "main") and "__main__" not in f]
    for ct, nc, tt, label in sorted(rows, reverse=True)[:15]:
        lines.append(f"| {label} | {nc} | {ct:.3f} | {tt:.3f} |")
    lines += ["", "Top self time, all threads:", "", "| function | calls | self s |", "|---|---:|---:|"]
    selfs = sorted(((tt, nc, _short_name(f, ln, fn)) for (f, ln, fn), (_, nc, tt, _, _) in raw.items()),
                   reverse=True)[:12]
    for tt, nc, label in selfs:
        lines.append(f"| {label} | {nc} | {tt:.3f} |")
    lines.append("")
    return lines


def write_results(cfg: Config, results: dict[int, SizeResult], summary: dict[str, Any],
                  profiles: dict[str, Path], plot_error: str | None, meta: dict[str, Any]) -> None:
    s = summary
    n = cfg.workspaces
    m = meta["machine"]
    started = dt.datetime.fromisoformat(meta["started"])
    elapsed, load_start = float(meta["elapsed"]), meta["load_start"]
    tv = {name: (v, measured) for name, v, measured in targets(s)}
    main = results.get(n) or SizeResult(n)

    def t(name: str) -> str:
        v, measured = tv[name]
        return f"**{v}** ({measured})"

    names = [name for name, _, _ in targets(s)]
    md = [
        "# Benchmark results", "",
        f"`{meta['command']}` on {started:%Y-%m-%d %H:%M} UTC ({elapsed / 60:.1f} min in all). "
        f"Generated by `bench/run.py`; do not edit by hand.", "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} memory, {m['os']}; Python {m['python']}; "
        f"{m['go']}; kube-apiserver, kubectl v1.34.4 and etcd v3.6.16 built from their Go modules "
        "(`tests/cluster/`), all on this machine (loopback, audit log on, blocking). "
        f"Load average (1/5/15 min) at the start: {load_start}, at the end: {m['load']}; other "
        f"kube-apiserver processes running at the end: {m['apiservers']} (a shared machine: other work "
        "adds noise, which the medians only partly absorb).", "",
        f"Each number is the median of {cfg.runs} runs, each in fresh namespaces; requests are counted from "
        "the apiserver's audit log (stage ResponseComplete, user admin, by User-Agent). "
        f"Workspaces at the largest size: {n} ({s['objects']} objects: a Deployment, Service and Ingress each).",
        "",
        f"## {n} workspaces: reconciler against kubectl", "",
        "| measurement | reconciler | kubectl | kubectl / reconciler | target | result |",
        "|---|---:|---:|---:|---|---|",
        f"| validate {n} files | {fmt(s['validate_s'], ' s')} | | | < 1 s | {tv[names[3]][0]} |",
        f"| plan against an empty namespace | {fmt(s['plan_empty_s'], ' s')} | | | | |",
        f"| apply creating everything | {fmt(s['apply_create_s'], ' s')} | {fmt(s['kubectl_apply_create_s'], ' s')} "
        f"| {fmt(s['apply_speedup_vs_kubectl'], 'x')} | >= 2x | {tv[names[1]][0]} |",
        f"| requests of that apply | {fmt(s['apply_create_requests'])} | {fmt(s['kubectl_apply_create_requests'])} "
        f"| {fmt(ratio(s['kubectl_apply_create_requests'], s['apply_create_requests']), 'x')} | | |",
        f"| no-op plan (`--dry-run` / `kubectl diff --server-side`) | {fmt(s['plan_noop_s'], ' s')} "
        f"| {fmt(s['kubectl_diff_noop_s'], ' s')} | {fmt(s['plan_speedup_vs_kubectl'], 'x')} | >= 10x "
        f"| {tv[names[0]][0]} |",
        f"| requests of the no-op plan | {fmt(s['plan_noop_requests'])} | {fmt(s['kubectl_diff_noop_requests'])} "
        f"| {fmt(ratio(s['kubectl_diff_noop_requests'], s['plan_noop_requests']), 'x')} | <= 10 | |",
        f"| no-op apply | {fmt(s['apply_noop_s'], ' s')} | | | | |",
        f"| write requests of the no-op apply | {fmt(s['apply_noop_write_requests'])} "
        f"(of {fmt(s['apply_noop_requests'])}) | | | 0 | {tv[names[2]][0]} |",
        f"| plan after a block change hitting 1% of workspaces | {fmt(s['plan_one_change_s'], ' s')} | | | | |",
        f"| peak RSS of a reconciler process | {fmt(s['peak_rss_mb'], ' MB')} | | | < 300 MB | {tv[names[4]][0]} |",
        f"| growth {((s.get('growth') or {}).get('from'))} → {n} workspaces | {tv[names[5]][1]} | | | about linear "
        f"| {tv[names[5]][0]} |",
        "",
        "Targets are defined at 1,000 workspaces" + ("." if n == 1000 else f"; this run's largest size is {n}."),
        "", "## Every size", "",
        "| workspaces | objects | startup | validate | render | plan (empty) | apply (create) | kubectl apply "
        "| plan (no-op) | kubectl diff | apply (no-op) | plan (1% changed) | plan req | diff req | peak RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, r in sorted(results.items()):
        md.append("| " + " | ".join([
            str(size), str(r.objects or "—"),
            *(fmt(r.median(k), " s") for k in TIMED),
            fmt(r.median_int("plan_noop_requests")), fmt(r.median_int("kubectl_diff_noop_requests")),
            fmt(r.peak_rss_mb(), " MB")]) + " |")
    md += ["", "Times are wall-clock seconds of the whole command (process start, imports, TLS, requests). "
           "`startup` is `python -m reconciler --version`: the fixed cost of every reconciler command.", ""]
    if plot_error:
        md += [f"(No plot: {plot_error}.)", ""]
    else:
        md += ["![time against workspaces](scaling.png)", ""]
    md += ["## Where the wall time goes (largest size, medians)", "",
           "CPU seconds used during each command by the command itself and by the control plane (from "
           f"`wait4()` and `/proc/<pid>/stat`). This machine has {m['nproc']} cores: when the apiserver and "
           "etcd use about that many CPU-seconds per wall second, the command waits on the server, not on "
           "itself.", "",
           "| command | wall s | client CPU s | kube-apiserver + etcd CPU s | controller-manager + scheduler CPU s |",
           "|---|---:|---:|---:|---:|"]
    for key, label in (("validate_s", "reconcile validate"), ("render_s", "reconcile render"),
                       ("plan_empty_s", "reconcile --dry-run, empty namespace"),
                       ("apply_create_s", "reconcile --no-wait, creating"),
                       ("kubectl_apply_create_s", "kubectl apply --server-side, creating"),
                       ("plan_noop_s", "reconcile --dry-run, no-op"),
                       ("kubectl_diff_noop_s", "kubectl diff --server-side, no-op"),
                       ("apply_noop_s", "reconcile --no-wait, no-op"),
                       ("plan_one_change_s", "reconcile --dry-run, 1% changed")):
        samples = main.cpu.get(key)
        if samples:
            med = [statistics.median(x[i] for x in samples) for i in range(3)]
            md.append(f"| {label} | {fmt(main.median(key), ' s')} | {med[0]:.2f} | {med[1]:.2f} | {med[2]:.2f} |")
    md += ["", "## Requests by verb (one run at the largest size)", "", "| command | requests by verb |", "|---|---|"]
    for key, label in (("plan_empty", "reconcile --dry-run, empty namespace"),
                       ("apply_create", "reconcile --no-wait, creating"),
                       ("plan_noop", "reconcile --dry-run, no-op"), ("apply_noop", "reconcile --no-wait, no-op"),
                       ("kubectl_apply_create", "kubectl apply --server-side, creating"),
                       ("kubectl_diff_noop", "kubectl diff --server-side, no-op")):
        verbs = main.verbs.get(key)
        if verbs:
            md.append(f"| {label} | " + ", ".join(f"{v} {k}" for k, v in verbs.most_common()) + " |")
    md += ["", "## Samples", "", "| workspaces | measurement | runs |", "|---:|---|---|"]
    for size, r in sorted(results.items()):
        for k in TIMED:
            if r.times.get(k):
                md.append(f"| {size} | {k} | " + ", ".join(f"{x:.3f}" for x in r.times[k]) + " |")
        for k in COUNTED:
            if r.counts.get(k):
                md.append(f"| {size} | {k} | " + ", ".join(str(x) for x in r.counts[k]) + " |")
    notes = [f"n={size}: {note}" for size, r in sorted(results.items()) for note in r.notes]
    if notes or s["errors"]:
        md += ["", "## Anomalies", ""] + [f"- {x}" for x in notes] + [f"- ERROR: {x}" for x in s["errors"]]
    md += ["", "## Profile", ""]
    if profiles:
        md += [f"One run of each command at {n} workspaces under cProfile in every thread "
               "(`bench/profile_threads.py`: `python -m cProfile` sees the main thread only, and the apply writes "
               "on a thread pool). The `.prof` files are kept in `bench/work/` (not committed; "
               "`python -m pstats bench/work/<file>`). Self time in `_ssl` reads is waiting for the apiserver; "
               "time waiting on threads/locks is the main thread waiting for the pool.", ""]
        for name, prof in profiles.items():
            md += profile_markdown(name, prof)
        analysis = BENCH / "PROFILE_NOTES.md"
        if analysis.exists():
            md += ["### Where the time goes, and what to do next", "", analysis.read_text().strip(), ""]
    else:
        md += ["(Not profiled in this run: BENCH_PROFILE=0 or an earlier step failed.)", ""]
    md += ["## Method", "",
           f"- The repo: {n} workspace files `u0001-vscode`, `u0002-jupyterlab`, ... (owner `u0001`, ...) over two "
           "environments (vscode, jupyterlab), three compute blocks (`cpu-small`, `cpu-mid`, and `cpu-large` "
           "used by 1% of the workspaces) and one data source whose claim is Bound in every namespace "
           "(a hostPath PersistentVolume), all `state: running`; the project sets no quota.",
           "- Per run, per size: `reconcile --version`, `reconcile validate`, `reconcile render` (for kubectl), "
           "then in one fresh namespace `reconcile --dry-run --output json` (empty), `reconcile --no-wait "
           "--output json` (create), `--dry-run` again (no-op), `--no-wait` again (no-op apply), and `--dry-run` "
           "with `cpu-large`'s memory changed; in another fresh namespace `kubectl apply --server-side -R -f "
           "<render dir>` then `kubectl diff --server-side --field-manager=kubectl -R -f <render dir>` (the "
           "same field manager the apply used; kubectl diff's default is another one). Which tool goes first "
           "alternates between runs. Both namespaces are deleted (and waited for) at the end of the run.",
           "- After each create the harness waits for the controller-manager's Pods (they stay Pending: there "
           "are no nodes) and for the apiserver's audit log to go quiet, so the following no-op measurement "
           "does not compete with that load. kubectl keeps its discovery cache in the work directory "
           "(warm after its first command, as on a user's machine).",
           "- Peak RSS is `ru_maxrss` from `wait4()` of each reconciler process (kubectl's never counts).",
           f"- The control plane is `tests/cluster/launcher.py`'s, with one change made from the outside: the "
           f"apiserver's `--service-cluster-ip-range` is {SERVICE_CIDR} instead of the launcher's /24, which "
           "holds about 250 ClusterIPs (a run needs one per workspace and tool). The audit log rotates at "
           "100 MB; the counts follow it across rotations.",
           "- Growth: the ratio of the median times at the largest and the smallest size; 'about linear' "
           f"means at most {TARGET_GROWTH_SLACK}x the ratio of the workspace counts (fixed costs such as "
           "imports make it sublinear).", ""]
    (BENCH / "RESULTS.md").write_text("\n".join(md))


STATE = BENCH / "work" / "last-run.json"
"""Everything measured by the last run, so `bench/run.py --report` can write RESULTS.md again."""


def save_state(cfg: Config, results: dict[int, SizeResult], profiles: dict[str, Path], meta: dict[str, Any]) -> None:
    def size(r: SizeResult) -> dict[str, Any]:
        d = asdict(r)
        d["verbs"] = {k: dict(v) for k, v in r.verbs.items()}
        return d

    STATE.parent.mkdir(exist_ok=True)
    STATE.write_text(json.dumps({"config": asdict(cfg), "results": [size(r) for r in results.values()],
                                 "profiles": {k: str(v) for k, v in profiles.items()}, "meta": meta}, indent=1))


def load_state() -> tuple[Config, dict[int, SizeResult], dict[str, Path], dict[str, Any]]:
    doc = json.loads(STATE.read_text())
    results: dict[int, SizeResult] = {}
    for d in doc["results"]:
        d["verbs"] = {k: Counter(v) for k, v in d["verbs"].items()}
        d["cpu"] = {k: [(a, b, c) for a, b, c in v] for k, v in d["cpu"].items()}
        r = SizeResult(**d)
        results[r.n] = r
    profiles = {k: Path(v) for k, v in doc["profiles"].items() if Path(v).exists()}
    return Config(**doc["config"]), results, profiles, doc["meta"]


def report(cfg: Config, results: dict[int, SizeResult], profiles: dict[str, Path], meta: dict[str, Any],
           extra_errors: list[str]) -> int:
    """Write RESULTS.md and the plot, log the targets, print the JSON line; the exit code."""
    errors = list(extra_errors)
    for r in results.values():
        errors.extend(r.errors)
    summary = summary_json(cfg, results, errors)
    plot_error = plot(results, BENCH / "scaling.png")
    if plot_error:
        log(f"warning: no plot: {plot_error}")
    write_results(cfg, results, summary, profiles, plot_error, meta)
    log(f"wrote {BENCH / 'RESULTS.md'}" + ("" if plot_error else f" and {BENCH / 'scaling.png'}"))
    for name, verdict, measured in targets(summary):
        log(f"target {verdict:4s} {name}: {measured}")
    print(json.dumps(summary), flush=True)
    return 1 if errors else 0


# --- main ------------------------------------------------------------------------------------------

SERVICE_CIDR = "10.0.0.0/16"
"""The launcher's /24 holds ~250 ClusterIPs; a run needs one per workspace and tool (2N)."""


@contextmanager
def control_plane(d: Path) -> Iterator[Any]:
    import launcher
    spawn = launcher._spawn

    def wide_service_range(name: str, argv: list[str], logdir: Path, attached: bool) -> Any:
        # tests/cluster/launcher.py is not ours to change and has no option for the range: widen it here.
        if name == "kube-apiserver":
            argv = [f"--service-cluster-ip-range={SERVICE_CIDR}" if a.startswith("--service-cluster-ip-range=")
                    else a for a in argv]
        return spawn(name, argv, logdir, attached)

    launcher._spawn = wide_service_range
    log("starting etcd, kube-apiserver, controller-manager and scheduler (audit log on, no nodes, "
        f"service range {SERVICE_CIDR})")
    try:
        c = launcher.start(d, audit=True, attached=True, fake_nodes=0)
    except BaseException:
        launcher.stop(d)
        raise
    finally:
        launcher._spawn = spawn
    try:
        yield c
    finally:
        log("stopping the control plane")
        launcher.stop(d)


def main() -> int:
    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    if sys.argv[1:] == ["--report"]:  # write RESULTS.md again from the last run (e.g. after PROFILE_NOTES.md)
        cfg, results, profiles, meta = load_state()
        return report(cfg, results, profiles, meta, meta.get("errors", []))
    cfg = Config.from_env()
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    load_start = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    log(f"sizes {cfg.sizes}, {cfg.runs} runs each; reported size {cfg.workspaces}")
    if cfg.runs < 3:
        log("warning: BENCH_RUNS < 3: the medians are not the ones docs/TESTING.md#benchmark asks for")
    work = Path(tempfile.mkdtemp(prefix="workspace-gitops-bench-"))
    errors: list[str] = []
    results: dict[int, SizeResult] = {}
    profiles: dict[str, Path] = {}
    try:
        import launcher
        kubectl = launcher.binary_dir() / "kubectl"
        with control_plane(work / "cluster") as c:
            bench = Bench(cfg, work, c.kubeconfig, c.audit_log, kubectl, c.pids)
            results = bench.results
            try:
                for n in cfg.sizes:
                    bench.size(n)
                if cfg.profile and cfg.workspaces in results and not results[cfg.workspaces].errors:
                    try:
                        bench.profile(cfg.workspaces)
                    except BenchError as e:
                        errors.append(f"profile: {e}")
                        log(f"ERROR: profile: {e}")
                profiles = bench.profiles
            finally:
                bench.api.close()
    except KeyboardInterrupt:
        log("interrupted; the control plane is stopped and the work directory removed")
        if not cfg.keep:
            shutil.rmtree(work, ignore_errors=True)
        return 130
    finally:
        if cfg.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    meta = {"command": command_line(), "machine": machine(), "started": started.isoformat(),
            "elapsed": time.monotonic() - t0, "load_start": load_start, "errors": errors}
    save_state(cfg, results, profiles, meta)
    return report(cfg, results, profiles, meta, errors)


if __name__ == "__main__":
    sys.exit(main())
