"""Runs the measured commands for bench/runner.py from a small process of its own.

Why: a child's `ru_maxrss` also counts the address space it was forked from, up to its exec (the kernel
records the old memory's peak when it execs), so a command forked from the harness, which holds the
`kubernetes` client, the launcher's crypto and audit-log reads, would report at least the harness's own
peak. Forked from this process (a bare interpreter, about 10 MB), a command's peak RSS is its own.

Standard library only, and nothing imported that the protocol does not need. One JSON object per line
on stdin, {"argv", "cwd", "env", "timeout"}; one per line on stdout, {"rc", "seconds", "maxrss_kb",
"cpu_s", "stdout", "stderr"}. It exits at the end of its input, and kills its command on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

current: subprocess.Popen[bytes] | None = None


def on_term(_signum: int, _frame: Any) -> None:
    if current is not None:
        current.kill()
    os._exit(143)


def run(req: dict[str, Any]) -> dict[str, Any]:
    global current
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        p = subprocess.Popen(req["argv"], stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=req["cwd"],
                             env=req["env"])
        current = p
        killer = threading.Timer(req["timeout"], p.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(p.pid, 0)
        finally:
            killer.cancel()
        seconds = time.perf_counter() - start
        current = None
        out.seek(0)
        err.seek(0)
        return {"rc": os.waitstatus_to_exitcode(status), "seconds": seconds, "maxrss_kb": usage.ru_maxrss,
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "stdout": out.read().decode(errors="replace"), "stderr": err.read().decode(errors="replace")}


def main() -> None:
    signal.signal(signal.SIGTERM, on_term)
    for line in sys.stdin:
        sys.stdout.write(json.dumps(run(json.loads(line))) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
