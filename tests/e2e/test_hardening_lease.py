"""Issue #11 item 4, against the real kube-apiserver: a Lease that really fences, whatever the
runners' wall clocks say.

Runs reach the apiserver through the recording proxy of tests/reliability (each with its own
token), so every request is attributed to its run with the time it was sent. A "skewed" run is
the real CLI in a Python whose ``datetime.datetime.now`` is an hour ahead: the renewTime and
acquireTime it writes, and any expiry it would compute from timestamps, are an hour off, as on a
CI runner whose clock is wrong.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reconciler.cluster import ApplyOptions, Cluster, ClusterOptions
from tests.conftest import ControlPlane
from tests.e2e.helpers import ROOT, Admin, Repo
from tests.reliability.fleet import run_env
from tests.reliability.proxy import FaultProxy

pytestmark = pytest.mark.cluster

LEASE = r"/leases(/workspace-reconciler)?$"
OBJECTS = r"/(deployments|services|ingresses)(/|$)"
SKEW = dt.timedelta(hours=1)
SKEWED_CLOCK = """
import datetime, sys
_real = datetime.datetime
class _Ahead(_real):
    @classmethod
    def now(cls, tz=None):
        return _real.now(tz) + datetime.timedelta(hours=1)
datetime.datetime = _Ahead
from reconciler.cli import main
sys.argv[0] = "reconcile"
main()
"""


def start(repo: Repo, kubeconfig: Path, *args: str, skewed: bool = False) -> subprocess.Popen[str]:
    """`reconcile --repo R --no-wait ARGS` in the background; with `skewed`, its clock is an hour ahead."""
    head = [sys.executable, "-c", SKEWED_CLOCK] if skewed else [sys.executable, "-m", "reconciler"]
    return subprocess.Popen([*head, "--repo", str(repo.path), "--no-wait", "--kubeconfig", str(kubeconfig), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=run_env(), cwd=ROOT)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in out + err, err
    return proc.returncode, err


def wait_for_lease(admin: Admin, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while not admin.coord.list_namespaced_lease(admin.ns).items:
        assert proc.poll() is None and time.monotonic() < deadline, "the first run never took the Lease"
        time.sleep(0.01)


def test_a_runner_whose_clock_is_an_hour_ahead_never_takes_a_lease_that_is_being_renewed(
        control_plane: ControlPlane, admin: Admin, repo: Repo, tmp_path: Path) -> None:
    with FaultProxy(control_plane.kubeconfig) as proxy:
        # Three 429s (Retry-After: 3) keep the first run writing, and renewing its 3 s Lease, for ~9 s.
        proxy.inject("PATCH", OBJECTS, 429, times=3, headers={"Retry-After": "3"}, client_name="first")
        first = start(repo, proxy.kubeconfig(tmp_path, "first"))
        wait_for_lease(admin, first)
        ahead = start(repo, proxy.kubeconfig(tmp_path, "ahead"), "--timeout", "4", skewed=True)
        code, err = finish(ahead)
        assert finish(first)[0] == 0
    assert code == 1 and "is held by" in err and f"(pid {first.pid})" in err, err
    assert not proxy.seen(client_name="ahead", path=LEASE, writes=True), "it never wrote the Lease"
    assert not proxy.seen(client_name="ahead", path=OBJECTS, writes=True), "it never wrote an object"


def test_the_lease_of_a_dead_runner_whose_clock_was_an_hour_ahead_is_taken_over_after_its_duration(
        admin: Admin, repo: Repo, control_plane: ControlPlane) -> None:
    ahead = (dt.datetime.now(dt.UTC) + SKEW).isoformat()
    admin.coord.create_namespaced_lease(admin.ns, {
        "metadata": {"name": "workspace-reconciler"},
        "spec": {"holderIdentity": "a run whose clock is an hour ahead (pid 1)", "leaseDurationSeconds": 3,
                 "acquireTime": ahead, "renewTime": ahead}})
    t0 = time.monotonic()
    code, err = finish(start(repo, control_plane.kubeconfig, "--timeout", "30"))
    took = time.monotonic() - t0
    assert code == 0, err
    assert 3 <= took < 20, f"taken over after {took:.1f}s: its duration, not its (future) renewTime"
    assert admin.names("Deployment") == ["jane-doe-vscode", "john-tan-jupyterlab"]


def test_a_stale_holders_release_does_not_delete_its_successors_lease(
        control_plane: ControlPlane, admin: Admin, tmp_path: Path) -> None:
    with FaultProxy(control_plane.kubeconfig) as proxy:
        stale = Cluster(admin.ns, ClusterOptions(kubeconfig=str(proxy.kubeconfig(tmp_path, "stale"))))
        lease = stale.acquire_lease(ApplyOptions(timeout=5, lease_seconds=2, holder="stale run"))
        proxy.inject("PUT", LEASE, 503, times=None, client_name="stale")  # its renewals fail from now on
        successor = Cluster(admin.ns, ClusterOptions(kubeconfig=str(control_plane.kubeconfig)))
        taken = successor.acquire_lease(ApplyOptions(timeout=15, lease_seconds=30, holder="successor"))
        try:
            lease.release()  # the stale holder's release, after the takeover (same Lease object, same uid)
            current = admin.coord.read_namespaced_lease("workspace-reconciler", admin.ns)
            assert current.spec.holder_identity == "successor"
            deletes = proxy.seen(client_name="stale", method="DELETE", path=LEASE)
            assert [d.status for d in deletes] == [409], "refused by its resourceVersion precondition"
        finally:
            taken.release()
    assert admin.coord.list_namespaced_lease(admin.ns).items == []


def test_an_apply_that_cannot_renew_its_lease_stops_writing_within_its_duration_and_exits_1_in_one_line(
        control_plane: ControlPlane, admin: Admin, repo: Repo, tmp_path: Path) -> None:
    with FaultProxy(control_plane.kubeconfig) as proxy:
        proxy.inject("PUT", LEASE, 503, times=None)  # every renewal fails
        proxy.inject("PATCH", OBJECTS, 429, times=4, headers={"Retry-After": "4"})  # ~8 s of writing
        code, err = finish(start(repo, proxy.kubeconfig(tmp_path, "cut-off")))
        acquired = [r for r in proxy.seen(path=LEASE, method="POST") if r.status == 201]
        writes = [r for r in proxy.seen(path=OBJECTS, writes=True) if not r.injected]
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith("error: apply stopped: Lease/") and "was not renewed within its 3s" in lines[0]
    assert len(acquired) == 1
    assert all(w.start < acquired[0].start + 3 for w in writes), "no write after the Lease's duration"
    assert admin.coord.list_namespaced_lease(admin.ns).items == [], "released (its resourceVersion still matched)"
