"""One writer at a time: two applies of the same repo started together.

Both runs reach the apiserver through the recording proxy, each with its own token, so every
request is attributed to its run with the time it was sent and answered. The proof: each run's
writes (PATCH/PUT/DELETE of Deployments, Services, Ingresses) lie inside its own Lease window (from
the answer to its successful Lease create/update to its Lease delete), the two windows do not
overlap, a Lease is never taken from a holder whose lease had not expired (watched on the
apiserver), and the namespace ends converged. A run told not to wait (`--timeout 0`) while the
other holds the Lease (kept busy for ~4s by two injected 429s) fails with exit 1 and one line
naming that holder, and writes nothing.
"""

from __future__ import annotations

import collections
import random
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ControlPlane
from tests.e2e.helpers import Admin
from tests.reliability.conftest import record
from tests.reliability.fleet import Fleet, LeaseWatch, finish, launch
from tests.reliability.proxy import FaultProxy, Seen

pytestmark = pytest.mark.cluster

LEASE = r"/leases(/workspace-reconciler)?$"
OBJECTS = r"/(deployments|services|ingresses)(/|$)"


@dataclass
class Window:
    """What one run did under the Lease, as the proxy saw it."""

    acquired: Seen | None
    released: Seen | None
    writes: list[Seen]


def _window(proxy: FaultProxy, client_name: str) -> Window:
    lease_ok = [r for r in proxy.seen(path=LEASE, client_name=client_name) if 200 <= r.status < 300]
    acquired = next((r for r in lease_ok if r.method in ("POST", "PUT")), None)
    released = next((r for r in lease_ok if r.method == "DELETE"), None)
    writes = [r for r in proxy.seen(path=OBJECTS, client_name=client_name, writes=True)]
    return Window(acquired, released, writes)


def _assert_one_writer(a: Window, b: Window, context: str) -> None:
    for name, w in (("a", a), ("b", b)):
        if w.writes:
            assert w.acquired is not None and w.released is not None, f"{context}: run {name} wrote without the Lease"
            assert all(r.start >= w.acquired.end and r.end <= w.released.start for r in w.writes), \
                f"{context}: run {name} wrote outside its Lease window"
    if a.acquired and b.acquired:
        first, second = (a, b) if a.acquired.end <= b.acquired.end else (b, a)
        assert first.released is not None and second.acquired is not None
        assert second.acquired.end >= first.released.start, f"{context}: both runs held the Lease at once"


def concurrency_trials(control_plane: ControlPlane, admin: Admin, tmp: Path, seed: int, size: int,
                       together: int, impatient: int, name: str) -> None:
    rng = random.Random(seed)
    fleet = Fleet(tmp, admin, control_plane.kubeconfig, size, rng)
    outcomes: collections.Counter[str] = collections.Counter()
    with FaultProxy(control_plane.kubeconfig) as proxy, LeaseWatch(admin) as lease:
        for trial in range(together):
            context = f"seed {seed} trial {trial}"
            what = fleet.mutate("compute") if trial else ["create all"]
            proxy.reset()
            runs = [launch(*fleet.apply_args(), kubeconfig=proxy.kubeconfig(tmp, f"t{trial}-{x}")) for x in "ab"]
            results = [finish(p) for p in runs]
            for code, _out, err in results:
                assert code == 0, f"{context}: {err}"
            a, b = _window(proxy, f"t{trial}-a"), _window(proxy, f"t{trial}-b")
            _assert_one_writer(a, b, context)
            fleet.assert_converged(f"{context} ({', '.join(what)})")
            outcomes["both succeeded, one after the other" if a.acquired and b.acquired else
                     "both succeeded, the second found nothing to do"] += 1
        for trial in range(together, together + impatient):
            context = f"seed {seed} trial {trial}"
            fleet.mutate("compute")
            # Two 429s (Retry-After: 2) on its first writes keep the first run inside its Lease for ~4s.
            proxy.reset()
            proxy.inject("PATCH", OBJECTS, 429, times=2, headers={"Retry-After": "2"}, client_name="first")
            first = launch(*fleet.apply_args(), kubeconfig=proxy.kubeconfig(tmp, "first"))
            deadline = time.monotonic() + 30
            while not admin.coord.list_namespaced_lease(admin.ns).items:
                assert first.poll() is None and time.monotonic() < deadline, f"{context}: never took the Lease"
                time.sleep(0.01)
            second = launch(*fleet.apply_args("--timeout", "0"), kubeconfig=proxy.kubeconfig(tmp, "second"))
            code, out, err = finish(second)
            assert finish(first)[0] == 0, context
            assert not proxy.seen(client_name="second", path=OBJECTS, writes=True), f"{context}: the second wrote"
            if code == 0:
                outcomes["the second found the Lease released"] += 1
            else:
                lines = [line for line in err.splitlines() if line.strip()]
                assert code == 1 and len(lines) == 1, f"{context}: {err}"
                assert "is held by" in lines[0] and f"(pid {first.pid})" in lines[0], f"{context}: {lines[0]}"
                outcomes["the second failed naming the holder"] += 1
            fleet.assert_converged(context)
    takeovers = lease.takeovers()
    assert not takeovers, "no run here dies, so no Lease may be taken over"
    record(name, seed=seed, workspaces=size, trials=together + impatient, outcomes=dict(outcomes),
           lease_holders=len(lease.holders()), overlapping_writers=0)


def test_two_applies_started_together_take_turns_and_one_that_cannot_wait_names_the_holder(
        control_plane: ControlPlane, admin: Admin, tmp_path: Path, seed: int) -> None:
    concurrency_trials(control_plane, admin, tmp_path, seed, size=30, together=3, impatient=2,
                       name="concurrent applies (fast)")


@pytest.mark.soak
def test_soak_concurrent_applies_of_a_hundred_workspaces(control_plane: ControlPlane, admin: Admin, tmp_path: Path,
                                                         seed: int) -> None:
    concurrency_trials(control_plane, admin, tmp_path, seed, size=100, together=10, impatient=5,
                       name="concurrent applies (soak)")
