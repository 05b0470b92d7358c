"""Apiserver faults: the apiserver dies in the middle of an apply; transient and permanent error answers.

The kill trials run against a private control plane (its own etcd and kube-apiserver, no nodes),
so the session's shared one is never disturbed: the apply is started, its Lease is seen, the
kube-apiserver is killed with SIGKILL, and the run must exit 1 with one line saying why, within
its `--timeout`; after the apiserver is started again with the same command line, the next run
converges.

The retry tests put a loopback proxy (tests/reliability/proxy.py) in front of the shared
apiserver that answers 503, 429 or a dropped connection to the first N matching requests, or a
422/403 once, and count the attempts the reconciler made.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from reconciler.cluster import ClusterOptions
from tests.conftest import ControlPlane, admin_client, launcher
from tests.e2e.helpers import Admin, Repo, reconcile
from tests.reliability.apiserver import Apiserver
from tests.reliability.conftest import record
from tests.reliability.fleet import Fleet, Launched, finish, launch, run_env
from tests.reliability.proxy import FaultProxy

pytestmark = pytest.mark.cluster

ATTEMPTS = ClusterOptions().retries + 1
"""Every request is tried this often before a transient failure becomes an error."""
RUN_TIMEOUT = 20
"""--timeout of the run whose apiserver dies: it must be over by then."""
RECOVERY_ENV = {"WORKSPACE_RECONCILER_LEASE_SECONDS": "30"}
"""The run after the apiserver came back: a Lease that a slow first answer or two cannot lapse."""


# --- the apiserver dies ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def private_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[launcher.Cluster]:
    d = tmp_path_factory.mktemp("faulty-control-plane")
    try:
        c = launcher.start(d, attached=True, fake_nodes=0)
    except Exception as e:  # noqa: BLE001 - a missing control plane is a failure, never a skip
        pytest.fail(f"could not start the private control plane: {e}", pytrace=False)
    try:
        yield c
    finally:
        launcher.stop(d)


@pytest.fixture(scope="module")
def apiserver(private_plane: launcher.Cluster) -> Apiserver:
    return Apiserver(private_plane)


@pytest.fixture
def private_admin(private_plane: launcher.Cluster, apiserver: Apiserver,
                  request: pytest.FixtureRequest) -> Iterator[Admin]:
    name = f"{request.node.name.lower().replace('_', '-')[:40].strip('-')}-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(admin_client(private_plane.kubeconfig))
    core.create_namespace({"metadata": {"name": name}})
    yield Admin(private_plane.kubeconfig, name)
    if not apiserver.alive():  # a failed trial left it dead
        apiserver.start()
    client.CoreV1Api(admin_client(private_plane.kubeconfig)).delete_namespace(name)


def _wait_for_lease(admin: Admin, proc: Launched, timeout: float = 30) -> bool:
    """Until the run holds the Lease (it is about to write); False if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if admin.coord.list_namespaced_lease(admin.ns).items:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    raise AssertionError("the run never took the Lease")


def apiserver_kill_trials(plane: launcher.Cluster, apiserver: Apiserver, admin: Admin, tmp: Path, seed: int,
                          size: int, trials: int, name: str) -> None:
    rng = random.Random(seed)
    fleet = Fleet(tmp, admin, plane.kubeconfig, size, rng)
    fleet.add_bystanders()
    landed = {"while reading": 0, "while writing": 0, "after the last write": 0, "finished before the kill": 0}
    exits: list[float] = []
    kills = attempt = 0
    while kills < trials:
        assert attempt < 4 * trials, f"seed {seed}: only {kills} of {attempt} kills landed during a run"
        context = f"seed {seed} trial {attempt}"
        # A compute change rewrites every Deployment, so the kill finds the run busy.
        what = fleet.mutate("compute") if attempt else ["create all"]
        attempt += 1
        # The first kill lands while the run writes; later ones at a random moment, reading or writing.
        when = "while writing" if kills == 0 or rng.random() < 0.6 else "while reading"
        proc = launch(*fleet.apply_args("--timeout", str(RUN_TIMEOUT)), kubeconfig=plane.kubeconfig)
        if when == "while writing":
            if _wait_for_lease(admin, proc):
                time.sleep(rng.uniform(0, 0.1))
        else:
            time.sleep(rng.uniform(0, 0.25))  # about the interpreter's start: the reads come next
        if proc.poll() is not None:  # it was quicker than the kill: check it, and try again
            code, out, err = proc.finish()
            assert code == 0, f"{context}: {err}"
            landed["finished before the kill"] += 1
            fleet.assert_converged(f"{context} ({', '.join(what)}; finished before the kill)")
            continue
        killed = apiserver.kill()
        kills += 1
        code, out, err = finish(proc, timeout=RUN_TIMEOUT + 30)
        took = time.monotonic() - killed
        exits.append(took)
        lines = [line for line in err.splitlines() if line.strip()]
        if code == 0:
            # Every write had landed; only the Lease release (best effort: it expires) met the dead apiserver.
            assert lines == [], f"{context}: {err}"
            when = "after the last write"
        else:
            assert code == 1, f"{context}: exit {code}\n{err}"
            assert took <= RUN_TIMEOUT, f"{context}: the run went on for {took:.1f}s after the apiserver died " \
                                        f"(--timeout {RUN_TIMEOUT}); {len(lines)} lines:\n" + "\n".join(lines[:5])
            assert len(lines) == 1 and lines[0].startswith("error: ") and "cannot reach the API server" in lines[0], \
                f"{context}: wanted one line saying why, got {len(lines)}:\n" + "\n".join(lines[:5])
        landed[when] += 1
        apiserver.start()
        # A just-restarted apiserver on 2 cores can take seconds per answer while its caches and the
        # controllers catch up: a 3 s Lease may lapse then, and the run stops writing, as it must.
        # What is checked here is convergence, so this run's Lease is a production-like one (the
        # killed run's 3 s Lease is still taken over after 3 s: its holder's duration counts).
        code, out, err = fleet.apply(env=RECOVERY_ENV)
        assert code == 0, f"{context}: the run after the restart failed\n{err}"
        fleet.assert_converged(f"{context} ({', '.join(what)}; apiserver killed {when})")
        print(f"{context}: {', '.join(what)}; apiserver killed {when}; the run exited {took:.1f}s later")
    record(name, seed=seed, workspaces=size, apiserver_kills=kills, landed=landed,
           max_exit_after_kill_s=round(max(exits), 2), run_timeout_s=RUN_TIMEOUT, objects_lost=0, pvcs_deleted=0,
           bystanders_touched=0)


def test_an_apiserver_killed_mid_apply_fails_the_run_in_one_line_and_the_next_run_converges(
        private_plane: launcher.Cluster, apiserver: Apiserver, private_admin: Admin, tmp_path: Path,
        seed: int) -> None:
    apiserver_kill_trials(private_plane, apiserver, private_admin, tmp_path, seed, size=60, trials=2,
                          name="apiserver killed mid-apply (fast)")


@pytest.mark.soak
def test_soak_an_apiserver_killed_at_random_moments_of_large_applies(
        private_plane: launcher.Cluster, apiserver: Apiserver, private_admin: Admin, tmp_path: Path,
        seed: int) -> None:
    apiserver_kill_trials(private_plane, apiserver, private_admin, tmp_path, seed, size=200, trials=8,
                          name="apiserver killed mid-apply (soak)")


@pytest.mark.soak
def test_soak_a_hung_apiserver_ends_the_run_in_one_line_within_the_request_timeout(
        private_plane: launcher.Cluster, apiserver: Apiserver, private_admin: Admin, tmp_path: Path,
        seed: int) -> None:
    """SIGSTOP instead of SIGKILL: nothing answers, so each request ends by its own timeout (30s), not --timeout."""
    rng = random.Random(seed)
    fleet = Fleet(tmp_path, private_admin, private_plane.kubeconfig, 200, rng)
    bound = ClusterOptions().request_timeout + 15
    took_by_phase: dict[str, float] = {}
    try:
        for trial, when in enumerate(("while writing", "while reading")):
            context = f"seed {seed} trial {trial}"
            if trial:
                fleet.mutate("compute")
            proc = launch(*fleet.apply_args("--timeout", str(RUN_TIMEOUT)), kubeconfig=private_plane.kubeconfig)
            if when == "while writing":
                assert _wait_for_lease(private_admin, proc), f"{context}: the run ended before it took the Lease"
                time.sleep(0.2)
            else:
                time.sleep(0.1)
            assert proc.poll() is None, context
            frozen = apiserver.freeze()
            code, out, err = finish(proc, timeout=bound + 60)
            took = time.monotonic() - frozen
            apiserver.thaw()
            lines = [line for line in err.splitlines() if line.strip()]
            assert code == 1 and len(lines) == 1 and "cannot reach the API server" in lines[0], f"{context}: {err}"
            assert took <= bound, f"{context}: the run went on for {took:.1f}s after the apiserver hung"
            took_by_phase[when] = round(took, 1)
            code, out, err = fleet.apply(env=RECOVERY_ENV)
            assert code == 0, f"{context}: the run after the thaw failed\n{err}"
            fleet.assert_converged(f"{context} (apiserver hung {when})")
    finally:
        apiserver.thaw()
    record("apiserver hung mid-apply (soak)", seed=seed, workspaces=200, hangs=2, exit_after_hang_s=took_by_phase,
           bound_s=bound, run_timeout_s=RUN_TIMEOUT)


# --- error answers: what is retried and what is not ---------------------------------------------

VSCODE = "jane-doe-vscode"
JUPYTER = "john-tan-jupyterlab"


@pytest.fixture
def repo(tmp_path: Path, namespace: str) -> Repo:
    return Repo(tmp_path / "repo", namespace)  # its PVC is missing: a plan warning only, and we never --wait


@pytest.fixture
def proxy(control_plane: ControlPlane) -> Iterator[FaultProxy]:
    with FaultProxy(control_plane.kubeconfig) as p:
        yield p


def _run(repo: Repo, proxy: FaultProxy, tmp: Path, *args: str) -> tuple[int, str, str]:
    r = reconcile("--repo", str(repo), *args, kubeconfig=proxy.kubeconfig(tmp), env=run_env())
    return r.code, r.stdout, r.stderr


def _converges(repo: Repo, kc: Path) -> None:
    r = reconcile("--repo", str(repo), "--no-wait", "--output", "json", kubeconfig=kc, env=run_env())
    assert r.code == 0, str(r)
    r = reconcile("--repo", str(repo), "--dry-run", "--detailed-exitcode", kubeconfig=kc)
    assert r.code == 0, str(r)


def _gaps(attempts: list) -> list[float]:  # type: ignore[type-arg]
    return [b.start - a.end for a, b in zip(attempts, attempts[1:], strict=False)]


def test_503_answers_to_a_list_are_retried_with_growing_backoff(repo: Repo, proxy: FaultProxy,
                                                                tmp_path: Path) -> None:
    proxy.inject("GET", r"/deployments$", 503, times=2)
    code, out, err = _run(repo, proxy, tmp_path, "--dry-run")
    assert code == 0, err
    attempts = proxy.seen(method="GET", path=r"/deployments$")
    assert [a.status for a in attempts] == [503, 503, 200]
    gaps = _gaps(attempts)
    assert gaps[0] >= 0.45 and gaps[1] >= 0.9, f"backoff 0.5s then 1s, got {gaps}"
    record("503 on a LIST", injected=2, attempts=len(attempts), backoff_s=[round(g, 2) for g in gaps])


def test_429_answers_are_retried_after_the_retry_after_delay(repo: Repo, proxy: FaultProxy, tmp_path: Path,
                                                             admin: Admin, kc: Path) -> None:
    proxy.inject("PATCH", rf"/deployments/{VSCODE}$", 429, times=3, headers={"Retry-After": "1"})
    code, out, err = _run(repo, proxy, tmp_path, "--no-wait")
    assert code == 0, err
    attempts = proxy.seen(method="PATCH", path=rf"/deployments/{VSCODE}$")
    assert [a.status for a in attempts] == [429, 429, 429, 201]
    gaps = _gaps(attempts)
    assert all(g >= 0.95 for g in gaps), f"Retry-After: 1 was not waited for: {gaps}"
    assert len(proxy.seen(method="PATCH", path=rf"/services/{VSCODE}$")) == 1, "other objects are written once"
    assert admin.names("Deployment") == [VSCODE, JUPYTER]
    _converges(repo, kc)
    record("429 with Retry-After on an apply", injected=3, attempts=len(attempts), waits_s=[round(g, 2) for g in gaps])


def test_a_dropped_connection_is_retried(repo: Repo, proxy: FaultProxy, tmp_path: Path, kc: Path) -> None:
    proxy.inject("PATCH", rf"/ingresses/{JUPYTER}$", 0, times=1)
    code, out, err = _run(repo, proxy, tmp_path, "--no-wait")
    assert code == 0, err
    attempts = proxy.seen(method="PATCH", path=rf"/ingresses/{JUPYTER}$")
    assert [a.status for a in attempts] == [0, 201]
    _converges(repo, kc)
    record("dropped connection on an apply", injected=1, attempts=len(attempts))


def test_a_503_that_persists_is_tried_a_bounded_number_of_times_and_named(
        repo: Repo, proxy: FaultProxy, tmp_path: Path, admin: Admin, kc: Path) -> None:
    proxy.inject("PATCH", rf"/services/{VSCODE}$", 503, times=None)
    code, out, err = _run(repo, proxy, tmp_path, "--no-wait")
    assert code == 1, err
    attempts = proxy.seen(method="PATCH", path=rf"/services/{VSCODE}$")
    assert len(attempts) == ATTEMPTS, [str(a) for a in attempts]
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"error: Service/{repo.namespace}/{VSCODE} apply failed: failed (503): "
                     "injected by the fault proxy (503)"], err
    assert JUPYTER in admin.names("Service") and JUPYTER in admin.names("Ingress"), "other workspaces go on"
    _converges(repo, kc)
    record("503 that persists on an apply", attempts=len(attempts), expected_attempts=ATTEMPTS)


def test_a_422_is_not_retried_and_the_other_workspaces_are_still_applied(
        repo: Repo, proxy: FaultProxy, tmp_path: Path, admin: Admin, kc: Path) -> None:
    message = f'Deployment.apps "{VSCODE}" is invalid: spec.template.spec.containers[0].image: Required value'
    proxy.inject("PATCH", rf"/deployments/{VSCODE}$", 422, times=1, message=message)
    code, out, err = _run(repo, proxy, tmp_path, "--no-wait")
    assert code == 1, err
    attempts = proxy.seen(method="PATCH", path=rf"/deployments/{VSCODE}$")
    assert len(attempts) == 1, [str(a) for a in attempts]
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"error: Deployment/{repo.namespace}/{VSCODE} apply failed: invalid (422): {message}"], err
    assert not proxy.seen(method="PATCH", path=rf"/(services|ingresses)/{VSCODE}$"), \
        "a workspace stops at its first failed object"
    assert admin.names("Deployment") == [JUPYTER]
    _converges(repo, kc)
    record("422 on an apply", injected=1, attempts=len(attempts))


def test_a_403_on_a_read_is_not_retried_and_nothing_is_written(repo: Repo, proxy: FaultProxy, tmp_path: Path,
                                                               admin: Admin) -> None:
    proxy.inject("GET", r"/services$", 403, times=1, message='services is forbidden: User "x" cannot list')
    code, out, err = _run(repo, proxy, tmp_path, "--no-wait")
    assert code == 1, err
    assert len(proxy.seen(method="GET", path=r"/services$")) == 1
    assert proxy.seen(writes=True) == [], "a failed read aborts before any write"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "forbidden (403)" in lines[0], err
    assert admin.names("Deployment") == []
    record("403 on a read", injected=1, attempts=1, writes=0)
