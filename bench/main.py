"""The entry point: start the local control plane, measure every size, write the results."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import runner
from bench.config import ROOT, BenchError, Config, log
from bench.measure import Bench
from bench.results import command_line, load_state, machine, report, save_state
from bench.samples import SizeResult

sys.path.insert(0, str(ROOT / "tests" / "cluster"))
import launcher  # type: ignore[import-not-found]  # noqa: E402  (tests/cluster/launcher.py, as the tests use it)


@contextmanager
def control_plane(d: Path) -> Iterator[Any]:
    log("starting etcd, kube-apiserver, controller-manager and scheduler (audit log on, no nodes)")
    try:
        c = launcher.start(d, audit=True, attached=True, fake_nodes=0)
        import fakekubelet  # type: ignore[import-not-found]  # tests/cluster/fakekubelet.py

        # One node the scheduler never uses (tainted); the pull request's workspace is bound to it.
        fakekubelet.register_nodes(c.kubeconfig, 1, schedulable=False)
    except BaseException:
        launcher.stop(d)
        raise
    try:
        yield c
    finally:
        log("stopping the control plane")
        launcher.stop(d)


def report_again() -> int:
    cfg, results, profiles, meta = load_state()
    return report(cfg, results, profiles, meta, meta.get("errors", []))


def main() -> int:
    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    if sys.argv[1:] == ["--report"]:  # write RESULTS.md again from the last run (e.g. after PROFILE_NOTES.md)
        return report_again()
    cfg = Config.from_env()
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    load_start = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    log(f"sizes {cfg.sizes}, runs {[cfg.runs_for(n) for n in cfg.sizes]}; reported size {cfg.workspaces}")
    if min(cfg.runs_for(n) for n in cfg.sizes) < 3:
        log("warning: BENCH_RUNS < 3: the medians are not the ones docs/TESTING.md#benchmark asks for")
    work = Path(tempfile.mkdtemp(prefix="workspace-gitops-bench-"))
    errors: list[str] = []
    results: dict[int, SizeResult] = {}
    profiles: dict[str, Path] = {}
    try:
        kubectl = launcher.binary_dir() / "kubectl"
        with control_plane(work / "cluster") as c:
            bench = Bench(cfg, work, c.kubeconfig, c.audit_log, kubectl, c.pids)
            results = bench.results
            try:
                for n in cfg.sizes:
                    bench.size(n)
                    # What is measured so far survives a run stopped later (`bench/run.py --report`).
                    save_state(cfg, results, {}, {"command": command_line(), "machine": machine(),
                                                  "started": started.isoformat(), "elapsed": time.monotonic() - t0,
                                                  "load_start": load_start, "errors": errors})
                if cfg.profile and cfg.workspaces in results and not results[cfg.workspaces].errors:
                    try:
                        bench.profile(cfg.workspaces)
                    except BenchError as e:
                        errors.append(f"profile: {e}")
                        log(f"ERROR: profile: {e}")
                profiles = bench.profiles
            finally:
                bench.admin.close()
                runner.close()
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

