"""The results: the JSON line, the targets' verdicts, RESULTS.md, and the saved state for `--report`."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
from collections import Counter
from contextlib import suppress
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.config import (
    BENCH,
    COUNTED,
    PR_COUNTED,
    PR_TIMED,
    TARGET_APPLY_SPEEDUP,
    TARGET_FLOOR_RATIO,
    TARGET_FOREIGN_MB,
    TARGET_GROWTH_SLACK,
    TARGET_PLAN_REQUESTS,
    TARGET_PLAN_SPEEDUP,
    TARGET_PR_PLAN_REQUESTS,
    TARGET_PR_PLAN_S,
    TARGET_PR_SPEEDUP,
    TARGET_PR_WRITES,
    TARGET_RSS_5000_MB,
    TARGET_RSS_MB,
    TARGET_VALIDATE_S,
    TIMED,
    Config,
    log,
)
from bench.floor import FOREIGN_CONFIGMAPS, FOREIGN_SERVICES
from bench.plot import plot
from bench.profiles import profile_markdown
from bench.samples import SizeResult


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
    # The one-workspace pull request, the create floor and the fixed cost (#15).
    for key in ("pr_plan_s", "pr_apply_s", "kubectl_pr_apply_s", "kubectl_pr_diff_s", "create_floor_s",
                "kubernetes_import_s"):
        out[key] = main.median(key)
    for key in ("pr_plan_requests", "pr_apply_writes", "pr_apply_requests", "kubectl_pr_diff_requests",
                "kubectl_pr_apply_requests"):
        out[key] = main.median_int(key)
    out["create_floor_ratio"] = ratio(out["apply_create_s"], out["create_floor_s"])
    # Memory per command: the PR's plan (--since), the full no-op plan, and what others' objects add to it.
    out["pr_plan_rss_mb"] = round(main.rss_mb["pr_plan_s"], 1) if "pr_plan_s" in main.rss_mb else None
    out["plan_noop_rss_mb"] = round(main.rss_mb["plan_noop_s"], 1) if "plan_noop_s" in main.rss_mb else None
    out["plan_noop_foreign_s"] = main.median("plan_noop_foreign_s")
    foreign = main.rss_mb.get("plan_noop_foreign_s")
    out["foreign_rss_added_mb"] = (round(foreign - out["plan_noop_rss_mb"], 1)
                                   if foreign is not None and out["plan_noop_rss_mb"] is not None else None)
    out["pr_plan_speedup_vs_kubectl"] = ratio(out["kubectl_pr_diff_s"], out["pr_plan_s"])
    out["pr_apply_speedup_vs_kubectl"] = ratio(out["kubectl_pr_apply_s"], out["pr_apply_s"])
    out["runs_at_size"] = main.runs or cfg.runs
    out["sizes"] = {str(n): {k: r.median(k) for k in ("validate_s", "plan_noop_s", "apply_create_s",
                                                        "kubectl_diff_noop_s", "kubectl_apply_create_s",
                                                        "pr_plan_s", "pr_apply_s", "kubectl_pr_apply_s",
                                                        "create_floor_s")}
                       | {"peak_rss_mb": r.peak_rss_mb(), "runs": r.runs or cfg.runs,
                          "pr_plan_requests": r.median_int("pr_plan_requests"),
                          "pr_apply_writes": r.median_int("pr_apply_writes")}
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

    # Any: each comparison below runs only when known() says its operands are not None.
    speed: Any = s.get("plan_speedup_vs_kubectl")
    reqs: Any = s.get("plan_noop_requests")
    aspeed: Any = s.get("apply_speedup_vs_kubectl")
    writes: Any = s.get("apply_noop_write_requests")
    val: Any = s.get("validate_s")
    rss: Any = s.get("peak_rss_mb")
    g = s.get("growth") or {}
    gw: Any = g.get("workspaces")
    gp: Any = g.get("plan_noop_s")
    ga: Any = g.get("apply_create_s")
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
        *pr_targets(s),
    ]


def pr_targets(s: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The targets of #15, judged at the reported size (they are set at 5,000 workspaces)."""
    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("PASS" if ok else "MISS")

    plan_s: Any = s.get("pr_plan_s")
    reqs: Any = s.get("pr_plan_requests")
    writes: Any = s.get("pr_apply_writes")
    ps: Any = s.get("pr_plan_speedup_vs_kubectl")
    aps: Any = s.get("pr_apply_speedup_vs_kubectl")
    floor: Any = s.get("create_floor_ratio")
    rss: Any = s.get("peak_rss_mb")
    added: Any = s.get("foreign_rss_added_mb")
    n = s.get("workspaces")
    return [
        (f"one-workspace PR: plan < {TARGET_PR_PLAN_S:g} s in <= {TARGET_PR_PLAN_REQUESTS} requests",
         verdict(plan_s < TARGET_PR_PLAN_S and reqs <= TARGET_PR_PLAN_REQUESTS
                 if plan_s is not None and reqs is not None else None), f"{plan_s} s, {reqs} requests"),
        (f"one-workspace PR: the apply writes exactly {TARGET_PR_WRITES} objects",
         verdict(writes == TARGET_PR_WRITES if writes is not None else None), f"{writes}"),
        (f"one-workspace PR: plan and apply >= {TARGET_PR_SPEEDUP:g}x faster than kubectl diff / apply",
         verdict(ps >= TARGET_PR_SPEEDUP and aps >= TARGET_PR_SPEEDUP if ps is not None and aps is not None
                 else None), f"plan {ps}x, apply {aps}x"),
        (f"create <= {TARGET_FLOOR_RATIO}x the server's floor",
         verdict(floor <= TARGET_FLOOR_RATIO if floor is not None else None), f"{floor}x"),
        (f"peak RSS < {TARGET_RSS_5000_MB:g} MB at 5,000 workspaces",
         verdict(rss < TARGET_RSS_5000_MB if rss is not None and n == 5000 else None),
         f"{rss} MB at {n} (the PR's plan: {s.get('pr_plan_rss_mb')} MB)"),
        (f"others' objects in the namespace add < {TARGET_FOREIGN_MB:g} MB",
         verdict(added < TARGET_FOREIGN_MB if added is not None else None), f"{added} MB"),
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
                                                       "BENCH_LARGE_RUNS", "BENCH_PROFILE") if os.environ.get(k))
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
        "Each number is the median of "
        + ", ".join(f"{r.runs or cfg.runs} run{'s' if (r.runs or cfg.runs) != 1 else ''} at {size}"
                    for size, r in sorted(results.items()))
        + " (a single run is one sample, not a median), each in fresh namespaces; requests are counted from "
        "the apiserver's audit log (stage ResponseComplete, user admin, by User-Agent). "
        f"Workspaces at the largest size: {n} ({s['objects']} objects: a Deployment, Service and Ingress each).",
        "",
        f"## The one-workspace pull request, in a repo of {n} applied workspaces", "",
        "One workspace file added to the repo whose workspaces are all applied: the plan the pull request's "
        "check waits for (`--dry-run --since BASE`, BASE being the applied commit, as `plan.yml` runs it), and "
        "the apply after the merge until the new workspace is ready (`--wait --since BASE`); kubectl on the same "
        "change, in its namespace holding the same objects (it diffs and applies every rendered object).", "",
        "| measurement | reconciler | kubectl | kubectl / reconciler | target | result |",
        "|---|---:|---:|---:|---|---|",
        f"| plan (`--dry-run` / `kubectl diff --server-side`) | {fmt(s['pr_plan_s'], ' s')} "
        f"| {fmt(s['kubectl_pr_diff_s'], ' s')} | {fmt(s['pr_plan_speedup_vs_kubectl'], 'x')} "
        f"| < {TARGET_PR_PLAN_S:g} s, >= {TARGET_PR_SPEEDUP:g}x | {tv[names[6]][0]} / {tv[names[8]][0]} |",
        f"| requests of that plan | {fmt(s['pr_plan_requests'])} | {fmt(s['kubectl_pr_diff_requests'])} "
        f"| {fmt(ratio(s['kubectl_pr_diff_requests'], s['pr_plan_requests']), 'x')} "
        f"| <= {TARGET_PR_PLAN_REQUESTS} | |",
        f"| merge to ready (`reconcile --wait` / `kubectl apply --server-side`, which does not wait) "
        f"| {fmt(s['pr_apply_s'], ' s')} | {fmt(s['kubectl_pr_apply_s'], ' s')} "
        f"| {fmt(s['pr_apply_speedup_vs_kubectl'], 'x')} | >= {TARGET_PR_SPEEDUP:g}x | |",
        f"| objects written by that apply | {fmt(s['pr_apply_writes'])} (of {fmt(s['pr_apply_requests'])} "
        f"requests) | {fmt(s['kubectl_pr_apply_requests'])} requests | | {TARGET_PR_WRITES} | {tv[names[7]][0]} |",
        f"| creating everything, against the server's floor | {fmt(s['apply_create_s'], ' s')} "
        f"| floor {fmt(s['create_floor_s'], ' s')} | {fmt(s['create_floor_ratio'], 'x')} of the floor "
        f"| <= {TARGET_FLOOR_RATIO}x | {tv[names[9]][0]} |",
        f"| peak RSS of a reconciler process (any command) | {fmt(s['peak_rss_mb'], ' MB')} | | "
        f"| < {TARGET_RSS_5000_MB:g} MB at 5,000 | {tv[names[10]][0]} |",
        f"| peak RSS: the pull request's plan; the full no-op plan | {fmt(s['pr_plan_rss_mb'], ' MB')}; "
        f"{fmt(s['plan_noop_rss_mb'], ' MB')} | | | | |",
        f"| what {FOREIGN_CONFIGMAPS:,} ConfigMaps and {FOREIGN_SERVICES:,} Services of someone else add to the "
        f"no-op plan's peak RSS | {fmt(s['foreign_rss_added_mb'], ' MB')} "
        f"(plan {fmt(s['plan_noop_foreign_s'], ' s')}) | | | < {TARGET_FOREIGN_MB:g} MB | {tv[names[11]][0]} |",
        f"| fixed cost: `reconcile --version`; importing the cluster module (the `kubernetes` client) "
        f"| {fmt(s['startup_s'], ' s')}; {fmt(s['kubernetes_import_s'], ' s')} | | | | |",
        "",
        "The floor: the same server-side apply requests, bodies serialized before the clock starts, sent with "
        "the reconciler's concurrency (8) over one keep-alive pool by a minimal client (`bench/floor.py`) into "
        "a fresh namespace; the ratio is the reconciler's whole `--no-wait` command (start, read, plan, Lease, "
        "writes, report) over that.", "",
        "| workspaces | runs | PR plan | PR plan req | kubectl diff (PR) | PR apply --wait | PR object writes "
        "| kubectl apply (PR) | apply (create) | floor | ratio | peak RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[f"| {size} | {r.runs or cfg.runs} | {fmt(r.median('pr_plan_s'), ' s')} "
          f"| {fmt(r.median_int('pr_plan_requests'))} | {fmt(r.median('kubectl_pr_diff_s'), ' s')} "
          f"| {fmt(r.median('pr_apply_s'), ' s')} | {fmt(r.median_int('pr_apply_writes'))} "
          f"| {fmt(r.median('kubectl_pr_apply_s'), ' s')} | {fmt(r.median('apply_create_s'), ' s')} "
          f"| {fmt(r.median('create_floor_s'), ' s')} "
          f"| {fmt(ratio(r.median('apply_create_s'), r.median('create_floor_s')), 'x')} "
          f"| {fmt(r.peak_rss_mb(), ' MB')} |" for size, r in sorted(results.items())],
        "",
        *run_notes(),
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
                       ("plan_one_change_s", "reconcile --dry-run, 1% changed"),
                       ("pr_plan_s", "reconcile --dry-run, one workspace added"),
                       ("kubectl_pr_diff_s", "kubectl diff --server-side, one workspace added"),
                       ("pr_apply_s", "reconcile --wait, one workspace added"),
                       ("kubectl_pr_apply_s", "kubectl apply --server-side, one workspace added"),
                       ("create_floor_s", "the floor's server-side applies, creating")):
        samples = main.cpu.get(key)
        if samples:
            med = [statistics.median(x[i] for x in samples) for i in range(3)]
            md.append(f"| {label} | {fmt(main.median(key), ' s')} | {med[0]:.2f} | {med[1]:.2f} | {med[2]:.2f} |")
    md += ["", "## Requests by verb (one run at the largest size)", "", "| command | requests by verb |", "|---|---|"]
    for key, label in (("plan_empty", "reconcile --dry-run, empty namespace"),
                       ("apply_create", "reconcile --no-wait, creating"),
                       ("plan_noop", "reconcile --dry-run, no-op"), ("apply_noop", "reconcile --no-wait, no-op"),
                       ("kubectl_apply_create", "kubectl apply --server-side, creating"),
                       ("kubectl_diff_noop", "kubectl diff --server-side, no-op"),
                       ("pr_plan", "reconcile --dry-run, one workspace added"),
                       ("pr_apply", "reconcile --wait, one workspace added")):
        verbs = main.verbs.get(key)
        if verbs:
            md.append(f"| {label} | " + ", ".join(f"{v} {k}" for k, v in verbs.most_common()) + " |")
    md += ["", "## Samples", "", "| workspaces | measurement | runs |", "|---:|---|---|"]
    for size, r in sorted(results.items()):
        for k in TIMED + PR_TIMED:
            if r.times.get(k):
                md.append(f"| {size} | {k} | " + ", ".join(f"{x:.3f}" for x in r.times[k]) + " |")
        for k in COUNTED + PR_COUNTED:
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
           "alternates between runs.",
           "- Then, in the reconciler's namespace, one workspace file is added (the pull request): `--dry-run` "
           "(its plan) and `reconcile --output json --timeout 300` (apply and wait until ready); in kubectl's, "
           "the repo with that file is rendered again and `kubectl diff --server-side` and `kubectl apply "
           "--server-side` run on the whole render directory. The control plane has one node, tainted so the "
           "scheduler places nothing there: while `--wait` runs, the harness binds only the new workspace's Pod "
           "to it and reports it Running and Ready, as the suite's fake kubelet does (polling every 0.1 s), so the "
           "thousands of other Pods stay Pending and cost nothing. Object writes are the PATCHes in the audit "
           "log (the Lease's own create/update/delete are counted apart).",
           "- In a third fresh namespace, the create floor (`bench/floor.py`). The three clients' order rotates "
           "between runs. From 1,000 workspaces up, each client's namespace is deleted, and waited for, before "
           "the next client starts: none meets the thousands of Pending Pods of the Deployments another created "
           "(below, the three go together at the end of the run; the last run's go with the control plane). "
           "Below 1,000 workspaces the references (kubectl on the pull request, the floor) are measured in "
           "the size's last run only, which keeps `BENCH_WORKSPACES=300` within 10 minutes.",
           "- After each create the harness waits for the controller-manager's Pods (they stay Pending: the "
           "one node is tainted) and for the apiserver's audit log to go quiet, so the following no-op measurement "
           "does not compete with that load. kubectl keeps its discovery cache in the work directory "
           "(warm after its first command, as on a user's machine).",
           "- Peak RSS is `ru_maxrss` from `wait4()` of each reconciler process (kubectl's never counts).",
           "- The control plane is `tests/cluster/launcher.py`'s as it is (its service range, a /16, holds the "
           "ClusterIP a run needs per workspace and tool). The audit log rotates at 100 MB; the counts follow "
           "it across rotations.",
           "- Growth: the ratio of the median times at the largest and the smallest size; 'about linear' "
           f"means at most {TARGET_GROWTH_SLACK}x the ratio of the workspace counts (fixed costs such as "
           "imports make it sublinear).", ""]
    (BENCH / "RESULTS.md").write_text("\n".join(md))


def run_notes() -> list[str]:
    """bench/RUN_NOTES.md, a hand-written reading of the latest run, when present."""
    notes = BENCH / "RUN_NOTES.md"
    if not notes.exists():
        return []
    return ["### Reading this run", "", "*Hand-written after the run (`bench/RUN_NOTES.md`); "
            "`bench/run.py --report` copies it in.*", "", notes.read_text().strip(), ""]


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
