"""Running one measured command (the reconciler or kubectl): wall time, peak RSS from wait4(), CPU.

The commands are forked by bench/spawner.py, a small process of their own, not by the harness.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.config import BENCH, COMMAND_TIMEOUT, PY, BenchError

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far (from /proc/<pid>/stat)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


@dataclass
class Ran:
    """One finished command."""

    argv: list[str]
    rc: int
    seconds: float
    maxrss_mb: float
    cpu_s: float
    stdout: str
    stderr: str

    def tail(self, n: int = 800) -> str:
        text = (self.stderr.strip() or self.stdout.strip())
        return text[-n:]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    env.pop("KUBECONFIG", None)
    env["NO_COLOR"] = "1"
    return env


class Spawner:
    """The process that forks the measured commands (bench/spawner.py says why it is not the harness)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([PY, str(BENCH / "spawner.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def run(self, argv: list[str], cwd: Path, timeout: float) -> Ran:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps({"argv": argv, "cwd": str(cwd), "env": child_env(),
                                              "timeout": timeout}) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BaseException:
            self.close()  # Ctrl-C or SIGTERM: the spawner kills the command on its way out
            raise
        if not line:
            raise BenchError(f"the command spawner exited ({self.proc.poll()}) running {argv[:3]}")
        r = json.loads(line)
        return Ran(argv, r["rc"], r["seconds"], r["maxrss_kb"] / 1024.0, r["cpu_s"], r["stdout"], r["stderr"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


_spawner: Spawner | None = None


def run(argv: list[str], *, cwd: Path, timeout: float = COMMAND_TIMEOUT) -> Ran:
    """Run a command, timing it; its own peak RSS comes from wait4(), so kubectl never counts as ours."""
    global _spawner
    if _spawner is None or _spawner.proc.poll() is not None:
        _spawner = Spawner()
    return _spawner.run(argv, cwd, timeout)


def close() -> None:
    """Stop the spawner (it also stops by itself when the harness exits)."""
    global _spawner
    if _spawner is not None:
        _spawner.close()
        _spawner = None


def reconcile_argv(*args: str, profile_to: Path | None = None) -> list[str]:
    if profile_to:  # cProfile, but in every thread (bench/profile_threads.py)
        return [PY, str(BENCH / "profile_threads.py"), str(profile_to), "reconciler", *args]
    return [PY, "-m", "reconciler", *args]


def kubectl_argv(kubectl: Path, kubeconfig: Path, cache_dir: Path, *args: str) -> list[str]:
    """kubectl with the bench's kubeconfig and a discovery cache in the work directory (warm after the first)."""
    return [str(kubectl), "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache_dir), *args]


def python_argv(code: str) -> list[str]:
    """The harness's Python (the same venv as the reconciler's) running `code`."""
    return [PY, "-c", code]
