"""The write pool's size against the create floor: which `ClusterOptions.workers` to ship.

Not part of `make bench` (it runs the reconciler with another pool size, which no flag sets): for
each pool size, in a fresh namespace of the same control plane (`tests/cluster/launcher.py`, one
tainted node), the reconciler creates N workspaces (`reconcile --no-wait`) and the minimal client
of bench/floor.py sends the same server-side applies with the same concurrency; each namespace is
deleted before the next step, so every step meets the same cluster.

    .venv/bin/python bench/experiments/pool_size.py [N] [SIZES]    # default: 1000 "4,8,16"
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "cluster"))

from bench.config import log  # noqa: E402
from bench.floor import create_floor  # noqa: E402
from bench.kube import Admin, create_namespaces, delete_namespaces  # noqa: E402
from bench.main import control_plane  # noqa: E402
from bench.repo import generate_repo  # noqa: E402

# The reconciler with another write pool: the CLI builds ClusterOptions (imported when it runs) with its default.
RUN = """import functools, sys, reconciler.cluster as cluster
workers = int(sys.argv.pop(1))
cluster.ClusterOptions = functools.partial(cluster.ClusterOptions, workers=workers)
from reconciler.cli import main
main()
"""


def reconciler_create(repo: Path, kubeconfig: Path, workers: int) -> float:
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", RUN, str(workers), "--repo", str(repo), "--no-wait", "--output", "json",
                        "--kubeconfig", str(kubeconfig)], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "NO_COLOR": "1"}, check=False)
    seconds = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"reconcile exited {r.returncode}: {r.stderr[-800:]}")
    return seconds


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    sizes = [int(s) for s in (sys.argv[2] if len(sys.argv) > 2 else "4,8,16").split(",")]
    with tempfile.TemporaryDirectory(prefix="pool-size-") as tmp, control_plane(Path(tmp) / "cluster") as c:
        work = Path(tmp)
        repo = generate_repo(work / "repo", n)
        render_dir = work / "render"
        admin = Admin(c.kubeconfig)
        rows: list[tuple[int, float, float]] = []
        for workers in sizes:
            ns_r, ns_f = f"pool-{workers}", f"pool-{workers}-floor"
            create_namespaces(admin, [ns_r, ns_f])
            repo.set_namespace(ns_f)
            subprocess.run([sys.executable, "-m", "reconciler", "render", "--repo", str(repo.path), "--output-dir",
                            str(render_dir)], check=True, capture_output=True, cwd=ROOT)
            repo.set_namespace(ns_r)
            ours = reconciler_create(repo.path, c.kubeconfig, workers)
            delete_namespaces(admin, [ns_r])
            floor, _ = create_floor(c.kubeconfig, ns_f, render_dir, workers=workers)
            delete_namespaces(admin, [ns_f])
            log(f"workers={workers:3d}: reconciler {ours:7.2f}s, floor {floor:7.2f}s, ratio {ours / floor:.2f}")
            rows.append((workers, ours, floor))
        admin.close()
    print(f"| workers | reconciler create (s) | floor (s) | ratio |  (N={n})")
    print("|---:|---:|---:|---:|")
    for workers, ours, floor in rows:
        print(f"| {workers} | {ours:.1f} | {floor:.1f} | {ours / floor:.2f} |")


if __name__ == "__main__":
    main()
