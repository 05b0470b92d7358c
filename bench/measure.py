"""The measurements: one control plane, every size, every run, and what each command must print."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.audit import Audit
from bench.config import BENCH, SEPARATE_FROM, UA_KUBECTL, UA_RECONCILER, WRITE_VERBS, BenchError, Config, log
from bench.floor import FOREIGN_CONFIGMAPS, FOREIGN_SERVICES, add_foreign_objects, create_floor
from bench.kube import Admin, OneWorkspaceKubelet, create_namespaces, delete_namespaces
from bench.repo import CHANGED_BLOCK, GeneratedRepo, generate_repo
from bench.runner import Ran, cpu_seconds, kubectl_argv, python_argv, reconcile_argv, run
from bench.samples import SizeResult


def settle(admin: Admin, audit: Audit, ns: str, pods: int, timeout: float = 300) -> None:
    """After a create: wait for the controller-manager's Pods, then for the apiserver to go quiet."""
    start = time.monotonic()
    while pods and admin.count_pods(ns) < pods:
        if time.monotonic() > start + timeout:
            log(f"warning: fewer than {pods} pods in {ns} after {timeout:.0f}s")
            break
        time.sleep(0.5)
    log(f"  {pods} pods in {ns} after {time.monotonic() - start:.1f}s")
    audit.quiet()


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


class Bench:
    """One control plane, every size, every run."""

    def __init__(self, cfg: Config, work: Path, kubeconfig: Path, audit_log: Path, kubectl: Path,
                 pids: dict[str, int]) -> None:
        self.cfg = cfg
        self.server_pids = [pids[k] for k in ("kube-apiserver", "etcd") if k in pids]
        self.controller_pids = [pids[k] for k in ("kube-controller-manager", "kube-scheduler") if k in pids]
        self.work = work
        self.kc = kubeconfig
        self.admin = Admin(kubeconfig)
        self.audit = Audit(audit_log, self.admin.probe)
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
        argv = kubectl_argv(self.kubectl, self.kc, self.kubectl_cache, *args)
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
        runs = self.cfg.runs_for(n)
        res.runs = runs
        namespaces = [ns for i in range(1, runs + 1) for ns in self.run_namespaces(n, i)]
        if self.cfg.profile and n == self.cfg.workspaces:
            namespaces.append(self.profile_namespace(n))
        create_namespaces(self.admin, namespaces)
        self.audit.quiet()
        for i in range(1, runs + 1):
            log(f"n={n}: run {i}/{runs}")
            self.one_run(res, repo, i)
        return res

    def extended(self, n: int) -> bool:
        """Whether size `n` also measures the pull request and the floor: at the reported size and from
        1,000 up (a smaller size is there for growth; this keeps `BENCH_WORKSPACES=300` short)."""
        return n >= 1000 or n == self.cfg.workspaces

    @staticmethod
    def run_namespaces(n: int, i: int) -> tuple[str, str, str]:
        return f"bench-{n}-r{i}", f"bench-{n}-r{i}-kubectl", f"bench-{n}-r{i}-floor"

    @staticmethod
    def profile_namespace(n: int) -> str:
        return f"bench-{n}-profile"

    def one_run(self, res: SizeResult, repo: GeneratedRepo, i: int) -> None:
        n = repo.n
        ns_r, ns_k, ns_f = self.run_namespaces(n, i)
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

        def kubernetes_import() -> None:
            # What a command that talks to a cluster adds to the CLI's own imports: the cluster
            # module, i.e. the official client (kubernetes/__init__ imports all of it) and urllib3.
            r = run(python_argv("import time, reconciler.cli; t = time.perf_counter(); import reconciler.cluster; "
                                "print(time.perf_counter() - t)"), cwd=self.work)
            if r.rc != 0:
                raise BenchError(f"importing reconciler.cluster failed: {r.tail()}")
            res.time("kubernetes_import_s", float(r.stdout.strip()))

        self.measure(res, "startup", startup)
        self.measure(res, "kubernetes import", kubernetes_import)
        self.measure(res, "validate", validate)
        rendered = self.measure(res, "render", render)

        # Rotate which client goes first, so none always meets a colder or busier apiserver.
        # The references the pull request and the create are compared with (kubectl on the pull request,
        # the floor) are measured in every run from 1,000 up, below in a size's last run only: they
        # take minutes of BENCH_WORKSPACES=300's 10 (the Samples table shows how many runs each has).
        size_last = i == self.cfg.runs_for(n)
        references = self.extended(n) and (n >= SEPARATE_FROM or size_last)
        blocks: list[tuple[str, Callable[[], None]]] = [
            (ns_r, lambda: self.reconciler_block(res, repo, ns_r, foreign_too=size_last)),
            (ns_k, lambda: self.kubectl_block(res, repo, ns_k, render_dir, references) if rendered else None),
            (ns_f, lambda: self.floor_block(res, repo, ns_f, render_dir) if rendered and references else None)]
        k = (i - 1) % len(blocks)
        order = blocks[k:] + blocks[:k]
        last_run = n == max(self.cfg.sizes) and i == self.cfg.runs_for(n)
        # From 1,000 workspaces up, each block's namespace goes before the next block starts: every
        # client meets the same cluster, not thousands of Pods (which no node takes) of the Deployments
        # the blocks before it made. Below, the few hundred matter less than the time (the namespaces
        # then go together at the end of the run, which keeps BENCH_WORKSPACES=300 within 10 minutes).
        # Not in a `finally`: after Ctrl-C the whole control plane goes, no need to wait.
        one_by_one = n >= SEPARATE_FROM
        for j, (ns, block) in enumerate(order):
            block()
            if one_by_one and not (last_run and j == len(order) - 1):
                log(f"  deleting namespace {ns}")
                delete_namespaces(self.admin, [ns])
        left = [ns_r, ns_k, ns_f] if not one_by_one else [order[-1][0]]
        if last_run and not self.cfg.profile:  # the control plane is stopped next
            log(f"  the last run: namespace(s) {', '.join(left)} go with the control plane")
        elif last_run:  # the profile follows: the client's own CPU, which their deletion hardly disturbs
            log(f"  deleting namespace(s) {', '.join(left)} (not waiting: the profile follows)")
            delete_namespaces(self.admin, left, wait=False)
        elif not one_by_one:
            log(f"  deleting namespaces {', '.join(left)}")
            delete_namespaces(self.admin, left)
        shutil.rmtree(render_dir, ignore_errors=True)
        shutil.rmtree(render_dir.with_name(render_dir.name + "-pr"), ignore_errors=True)
        self.audit.quiet()

    def reconciler_block(self, res: SizeResult, repo: GeneratedRepo, ns: str, foreign_too: bool = False) -> None:
        """The reconciler's measurements in `ns`; with `foreign_too` (a size's last run: creating and
        deleting 22,000 objects takes minutes) also the no-op plan with others' objects."""
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

        pr = repo.pr_workspace

        def pr_plan() -> None:
            r, verbs = self.reconciler(res, "pr_plan_s", *base, "--dry-run", "--since", since)
            doc = plan_json(r, "plan (one workspace added)")
            if int(doc["summary"].get("create", 0)) != 1 or changes(doc["summary"]) != 1:
                res.note(f"the pull request's plan: summary {doc['summary']} (expected create=1 and nothing else)")
            res.time("pr_plan_s", r.seconds)
            res.count("pr_plan_requests", sum(verbs.values()))
            res.verbs["pr_plan"] = verbs
            log(f"  PR plan             {r.seconds:7.2f}s  {sum(verbs.values()):5d} requests  {r.maxrss_mb:6.0f} MB")

        def pr_apply() -> None:
            with OneWorkspaceKubelet(self.admin, ns, pr) as kubelet:
                r, verbs = self.reconciler(res, "pr_apply_s", *base, "--timeout", "300", "--since", since)
            doc = plan_json(r, "apply --wait (one workspace added)")
            mine = [w for w in doc.get("workspaces") or [] if w.get("name") == pr]
            if r.rc != 0 or not mine or mine[0].get("ready") is not True:
                raise BenchError(f"the pull request's workspace did not get ready (exit {r.rc}): "
                                 f"{(mine or [{}])[0].get('reason')}; harness kubelet: {kubelet.errors}")
            writes = sum(v for k, v in verbs.items() if k in WRITE_VERBS)
            objects = sum(v for k, v in verbs.items() if k == "patch")
            res.time("pr_apply_s", r.seconds)
            res.count("pr_apply_requests", sum(verbs.values()))
            res.count("pr_apply_writes", objects)
            res.verbs["pr_apply"] = verbs
            log(f"  PR apply --wait     {r.seconds:7.2f}s  {sum(verbs.values()):5d} requests ({objects} object "
                f"writes, {writes} with the Lease)  {r.maxrss_mb:6.0f} MB")

        def foreign() -> None:
            seconds, sent = add_foreign_objects(self.kc, ns)
            log(f"  others' objects     {seconds:7.2f}s  {sent} created ({FOREIGN_CONFIGMAPS} ConfigMaps, "
                f"{FOREIGN_SERVICES} Services)")
            r, verbs = self.reconciler(res, "plan_noop_foreign_s", *base, "--dry-run")
            doc = plan_json(r, "plan (no-op, with others' objects)")
            if changes(doc["summary"]):
                res.note(f"others' objects changed the no-op plan: summary {doc['summary']}; {first_diffs(doc)}")
            res.time("plan_noop_foreign_s", r.seconds)
            log(f"  plan (+others')     {r.seconds:7.2f}s  {sum(verbs.values()):5d} requests  {r.maxrss_mb:6.0f} MB")

        self.measure(res, "plan against an empty namespace", plan_empty)
        if not self.measure(res, "apply creating everything", apply_create):
            return
        settle(self.admin, self.audit, ns, n)
        self.measure(res, "no-op plan", plan_noop)
        self.measure(res, "no-op apply", apply_noop)
        self.measure(res, "plan after one block change", plan_one_change)
        if not self.extended(n):
            return
        since = repo.commit(f"{n} workspaces applied in {ns}")  # the pull request's base
        repo.set_pr_workspace(True)
        try:
            self.measure(res, "the pull request's plan", pr_plan)
            if self.measure(res, "the pull request's apply", pr_apply) and foreign_too:
                # Last: the namespace keeps them until it is deleted.
                self.measure(res, "the no-op plan with others' objects in the namespace", foreign)
        finally:
            repo.set_pr_workspace(False)

    def kubectl_block(self, res: SizeResult, repo: GeneratedRepo, ns: str, render_dir: Path,
                      pull_request: bool) -> None:
        """kubectl's create and no-op diff in `ns`; with `pull_request` also its diff and apply of the PR."""
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

        pr_dir = render_dir.with_name(render_dir.name + "-pr")

        def pr_render() -> None:
            repo.set_namespace(ns)
            repo.set_pr_workspace(True)
            try:
                r = run(reconcile_argv("render", "--repo", str(repo.path), "--output-dir", str(pr_dir)), cwd=self.work)
            finally:
                repo.set_pr_workspace(False)
                repo.set_namespace(self.run_namespaces(n, 1)[0])
            if r.rc != 0:
                raise BenchError(f"render (one workspace added) exited {r.rc}: {r.tail()}")

        def pr_diff() -> None:
            r, verbs = self.kubectl_run(res, "kubectl_pr_diff_s", "diff", "--server-side",
                                        "--field-manager=kubectl", "-n", ns, "-R", "-f", str(pr_dir))
            if r.rc != 1:
                res.note(f"kubectl diff of the pull request exited {r.rc} (1 expected: 3 new objects): {r.tail(300)}")
            res.time("kubectl_pr_diff_s", r.seconds)
            res.count("kubectl_pr_diff_requests", sum(verbs.values()))
            log(f"  kubectl diff (PR)   {r.seconds:7.2f}s  {sum(verbs.values()):5d} requests")

        def pr_apply() -> None:
            r, verbs = self.kubectl_run(res, "kubectl_pr_apply_s", "apply", "--server-side", "-n", ns,
                                        "-R", "-f", str(pr_dir))
            if r.rc != 0:
                raise BenchError(f"kubectl apply --server-side (PR) exited {r.rc}: {r.tail()}")
            res.time("kubectl_pr_apply_s", r.seconds)
            res.count("kubectl_pr_apply_requests", sum(verbs.values()))
            log(f"  kubectl apply (PR)  {r.seconds:7.2f}s  {sum(verbs.values()):5d} requests")

        if not self.measure(res, "kubectl apply --server-side", apply_create):
            return
        settle(self.admin, self.audit, ns, n)
        self.measure(res, "kubectl diff --server-side", diff_noop)
        if pull_request and self.measure(res, "render (one workspace added)", pr_render):
            self.measure(res, "kubectl diff --server-side (pull request)", pr_diff)
            self.measure(res, "kubectl apply --server-side (pull request)", pr_apply)

    def floor_block(self, res: SizeResult, repo: GeneratedRepo, ns: str, render_dir: Path) -> None:
        """The same server-side applies from a minimal client (bench/floor.py), into a third namespace."""

        def floor() -> None:
            server0, ctl0 = cpu_seconds(self.server_pids), cpu_seconds(self.controller_pids)
            seconds, sent = create_floor(self.kc, ns, render_dir)
            server, ctl = cpu_seconds(self.server_pids) - server0, cpu_seconds(self.controller_pids) - ctl0
            res.cpu.setdefault("create_floor_s", []).append((0.0, server, ctl))
            res.time("create_floor_s", seconds)
            res.count("create_floor_requests", sent)
            log(f"  create floor        {seconds:7.2f}s  {sent:5d} requests")

        if self.measure(res, "the create floor", floor):
            settle(self.admin, self.audit, ns, repo.n)

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
            settle(self.admin, self.audit, ns, n)
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
