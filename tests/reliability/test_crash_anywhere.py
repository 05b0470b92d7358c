"""Crash anywhere, converge after: SIGKILL the reconciler at seeded random moments, then rerun it.

Each trial changes the repo (seeded), starts an apply, kills it with SIGKILL after a random delay
between 0 and the typical run time (an apply creating the whole fleet, measured first), and runs
apply again; trials go on until the wanted number of kills landed before the run finished. The
second run must converge: the dry-run after it shows every object unchanged, the live objects
carry what the repo renders, no object that is not ours moved (resourceVersions of an unmanaged
Deployment, Service, Ingress, ConfigMap, Secret and another project's Deployment), no PVC was
created or deleted, and a Lease the killed run left behind was taken over only once it had expired.
"""

from __future__ import annotations

import collections
import random
import time
from pathlib import Path

import pytest

from tests.conftest import ControlPlane
from tests.e2e.helpers import Admin
from tests.reliability.conftest import record
from tests.reliability.fleet import Fleet, LeaseWatch, changes, launch

pytestmark = pytest.mark.cluster


def _typical_run_time(fleet: Fleet, control_plane: ControlPlane, tmp: Path) -> float:
    """How long an apply that creates the whole fleet takes, measured in a scratch namespace."""
    from kubernetes import client

    from tests.conftest import admin_client

    scratch = f"{fleet.admin.ns[:50]}-calib"
    core = client.CoreV1Api(admin_client(control_plane.kubeconfig))
    core.create_namespace({"metadata": {"name": scratch}})
    try:
        fleet.repo.edit("project.yaml", lambda d: d["spec"].update(namespace=scratch))
        t0 = time.monotonic()
        code, out, err = fleet.apply()
        took = time.monotonic() - t0
        assert code == 0, err
        return took
    finally:
        fleet.repo.edit("project.yaml", lambda d: d["spec"].update(namespace=fleet.admin.ns))
        core.delete_namespace(scratch)


def crash_trials(control_plane: ControlPlane, admin: Admin, tmp: Path, seed: int, size: int, kills: int,
                 name: str) -> None:
    """Trials until `kills` runs were killed before they finished (a run that finishes first is checked too)."""
    rng = random.Random(seed)
    fleet = Fleet(tmp, admin, control_plane.kubeconfig, size, rng)
    fleet.add_bystanders()
    typical = _typical_run_time(fleet, control_plane, tmp)
    phases: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    with LeaseWatch(admin) as lease:
        trial = 0
        while trial - phases["finished before the kill"] < kills:
            # About half the runs finish before their kill (an update is quicker than the create that set
            # the typical time): 8x the kills wanted leaves a shortfall vanishingly unlikely.
            assert trial < 8 * kills, f"seed {seed}: only {trial - phases['finished before the kill']} kills landed"
            context = f"seed {seed} trial {trial}"
            what = fleet.mutate() if trial else ["create all"]
            planned = changes(fleet.plan())
            delay = rng.uniform(0, typical)
            proc = launch(*fleet.apply_args(), kubeconfig=fleet.kubeconfig)
            time.sleep(delay)
            finished_first = proc.poll() is not None
            if finished_first:
                phase = "finished before the kill"
                code, out, err = proc.finish()
                assert code == 0, f"{context}: {err}"
            else:
                proc.kill()
                left = changes(fleet.plan())
                holder = lease.current()
                if holder is not None and f"(pid {proc.pid})" in holder.holder:
                    phase = ("killed holding the Lease, before any write" if left == planned else
                             "killed holding the Lease, after every write" if left == 0 else
                             "killed holding the Lease, mid-write")
                elif left == 0:
                    phase = "killed after releasing the Lease"  # writing its report
                else:
                    assert left == planned, f"{context}: {planned - left} of {planned} changes were written " \
                                            "by a run that held no Lease"
                    phase = "killed before taking the Lease"
            phases[phase] += 1
            code, out, err = fleet.apply()
            assert code == 0, f"{context} ({', '.join(what)}; {phase}): the rerun failed\n{err}"
            fleet.assert_converged(f"{context} ({', '.join(what)}; {phase}, killed after {delay:.2f}s)")
            print(f"{context}: {', '.join(what)}; {planned} object changes; {phase} after {delay:.2f}s")
            trial += 1
    takeovers = lease.takeovers()
    record(name, seed=seed, workspaces=size, trials=trial, typical_run_s=round(typical, 2),
           kills=trial - phases["finished before the kill"], phases=dict(phases),
           expired_leases_taken_over=len(takeovers), objects_lost=0, pvcs_deleted=0, bystanders_touched=0,
           wall_s=round(time.monotonic() - started, 1))


def test_a_reconciler_killed_at_random_moments_converges_on_the_next_run(
        control_plane: ControlPlane, admin: Admin, tmp_path: Path, seed: int) -> None:
    crash_trials(control_plane, admin, tmp_path, seed, size=30, kills=5, name="crash-anywhere (fast)")


@pytest.mark.soak
def test_soak_two_hundred_workspaces_killed_at_random_moments_converge_every_time(
        control_plane: ControlPlane, admin: Admin, tmp_path: Path, seed: int) -> None:
    crash_trials(control_plane, admin, tmp_path, seed, size=200, kills=25, name="crash-anywhere (soak)")
