"""What to run (the environment's knobs), the targets, the measured keys, and logging."""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PY = sys.executable

UA_RECONCILER = "workspace-reconciler"
UA_KUBECTL = "kubectl"
UA_HARNESS = "workspace-gitops-bench/0.1"
"""The harness's own requests (setup, teardown, settling, the audit marker): never counted."""
UA_FLOOR = "workspace-gitops-bench-floor/0.1"
"""The minimal client of the create floor (bench/floor.py)."""
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
COMMAND_TIMEOUT = 1800.0
SEPARATE_FROM = 1000
"""From this many workspaces up, each client's namespace is deleted before the next client starts."""

# Target thresholds (issue "Performance", at 1,000 workspaces).
TARGET_PLAN_SPEEDUP = 10.0
TARGET_PLAN_REQUESTS = 10
TARGET_APPLY_SPEEDUP = 2.0
TARGET_VALIDATE_S = 1.0
TARGET_RSS_MB = 300.0
TARGET_GROWTH_SLACK = 1.25
"""'About linear': time(N)/time(small) may exceed N/small by at most this factor."""
# Issue "Scale" (#15), at 5,000 workspaces (the largest size measured).
TARGET_PR_PLAN_S = 2.0
TARGET_PR_PLAN_REQUESTS = 10
TARGET_PR_WRITES = 3
TARGET_PR_SPEEDUP = 50.0
TARGET_FLOOR_RATIO = 1.1
TARGET_RSS_5000_MB = 150.0
TARGET_FOREIGN_MB = 20.0

TIMED = (
    "startup_s", "validate_s", "render_s", "plan_empty_s", "apply_create_s", "kubectl_apply_create_s",
    "plan_noop_s", "kubectl_diff_noop_s", "apply_noop_s", "plan_one_change_s",
)
PR_TIMED = ("pr_plan_s", "pr_apply_s", "kubectl_pr_diff_s", "kubectl_pr_apply_s", "create_floor_s",
            "kubernetes_import_s", "plan_noop_foreign_s")
"""The one-workspace pull request, the create floor and the fixed cost (#15)."""
PR_COUNTED = ("pr_plan_requests", "pr_apply_requests", "pr_apply_writes", "kubectl_pr_diff_requests",
              "kubectl_pr_apply_requests", "create_floor_requests")
COUNTED = (
    "plan_empty_requests", "apply_create_requests", "apply_create_write_requests",
    "kubectl_apply_create_requests", "plan_noop_requests", "kubectl_diff_noop_requests",
    "apply_noop_requests", "apply_noop_write_requests", "plan_one_change_requests",
)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A measurement that could not be taken (the command failed or said something unexpected)."""


@dataclass
class Config:
    """What to run, from the environment."""

    workspaces: int
    sizes: list[int]
    runs: int
    profile: bool
    keep: bool
    large_runs: int = 0
    """Runs at sizes above 1,000 (BENCH_LARGE_RUNS; 0: as many as `runs`)."""

    def runs_for(self, n: int) -> int:
        return self.large_runs if n > 1000 and self.large_runs else self.runs

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
        large_runs = int(os.environ.get("BENCH_LARGE_RUNS", "0") or 0)
        if n < 1 or min(sizes) < 1 or runs < 1 or large_runs < 0:
            raise SystemExit("BENCH_WORKSPACES, BENCH_SIZES and BENCH_RUNS must be positive")
        return cls(workspaces=n, sizes=sizes, runs=runs, large_runs=large_runs,
                   profile=os.environ.get("BENCH_PROFILE", "1") not in ("0", "", "false", "no"),
                   keep=os.environ.get("BENCH_KEEP", "0") not in ("0", "", "false", "no"))
