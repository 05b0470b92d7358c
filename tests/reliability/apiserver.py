"""Kill (or freeze) the kube-apiserver of a private control plane, and start it again with the same command line.

The command line is read from /proc/<pid>/cmdline just before the kill, so the restarted
apiserver listens on the same port with the same certificates and etcd; its pid replaces the old
one in the control plane's state.json, so `launcher.stop` still stops it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from tests.conftest import launcher  # tests/cluster/launcher.py


class Apiserver:
    """The kube-apiserver process of `cluster` (started by launcher.start in this process)."""

    def __init__(self, cluster: launcher.Cluster) -> None:
        self.cluster = cluster
        self.argv: list[str] = []

    @property
    def pid(self) -> int:
        return self.cluster.pids["kube-apiserver"]

    def kill(self) -> float:
        """SIGKILL it (remembering its command line); the time.monotonic() of the kill."""
        raw = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        self.argv = [a.decode() for a in raw.split(b"\0") if a]
        os.kill(self.pid, signal.SIGKILL)
        killed = time.monotonic()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)  # our child: reap it, or it stays a zombie
        return killed

    def freeze(self) -> float:
        """SIGSTOP it: connections are accepted by the kernel but never answered (a hung apiserver)."""
        os.kill(self.pid, signal.SIGSTOP)
        return time.monotonic()

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def start(self, timeout: float = 60) -> None:
        """Start it again with the remembered command line and wait until /readyz answers."""
        assert self.argv, "kill() it first"
        logs = self.cluster.dir / "logs"
        proc = launcher._spawn("kube-apiserver", self.argv, logs, attached=True)
        self.cluster.pids["kube-apiserver"] = proc.pid
        self.cluster.save()
        pki = self.cluster.pki
        launcher._wait_ready(f"{self.cluster.server}/readyz", pki / "ca.crt", pki / "admin.crt", pki / "admin.key",
                             timeout, proc, "kube-apiserver", logs / "kube-apiserver.log")
