"""Request counting from the apiserver's audit log, by User-Agent, across its rotations."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.config import log


@dataclass(frozen=True)
class LogPos:
    """A point in the audit log: the file (by inode, the log rotates) and an offset in it."""

    inode: int
    offset: int


class Audit:
    """Counts requests in the apiserver's audit log between two points, by User-Agent.

    The apiserver rotates its audit log at 100 MB even with --audit-log-maxsize=0 (lumberjack's
    default): `audit.log` is renamed to `audit-<time>.log` and started again. A position is therefore
    an inode and an offset, and reading from it continues through the rotated files.
    """

    def __init__(self, path: Path, probe: Callable[[str], None]) -> None:
        self.path = path
        self.probe = probe
        # probe(s) makes one request whose audit event contains s (see `flush`).

    def pos(self) -> LogPos:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return LogPos(0, 0)
        return LogPos(st.st_ino, st.st_size)

    def _files(self) -> list[Path]:
        """The rotated logs, oldest first, then the current one."""
        rotated = sorted(self.path.parent.glob(f"{self.path.stem}-*{self.path.suffix}"),
                         key=lambda p: p.stat().st_mtime)
        return [*rotated, self.path]

    def read_since(self, start: LogPos) -> Iterator[bytes]:
        """Every line written after `start`, across rotations."""
        files = self._files()
        inodes = []
        for p in files:
            try:
                inodes.append(p.stat().st_ino)
            except FileNotFoundError:
                inodes.append(-1)
        first = inodes.index(start.inode) if start.inode in inodes else len(files) - 1
        for i in range(first, len(files)):
            try:
                with open(files[i], "rb") as f:
                    if i == first and inodes[i] == start.inode:
                        f.seek(start.offset)
                    yield from f
            except FileNotFoundError:
                continue

    def flush(self) -> None:
        """Wait until everything the apiserver handled so far is in the log (a marker request's event)."""
        marker = f"bench-marker-{uuid.uuid4().hex[:12]}"
        start = self.pos()
        self.probe(marker)
        deadline = time.monotonic() + 15
        needle = marker.encode()
        while time.monotonic() < deadline:
            if any(needle in line for line in self.read_since(start)):
                return
            time.sleep(0.05)
        log("warning: the audit marker did not appear within 15s; counts may be short")

    def verbs(self, start: LogPos, agent: str) -> Counter[str]:
        """Verbs of the admin's completed requests since `start` whose User-Agent starts with `agent`."""
        self.flush()
        out: Counter[str] = Counter()
        needle = f'"userAgent":"{agent}'.encode()
        for line in self.read_since(start):
            if needle not in line:
                continue
            ev = json.loads(line)
            if (ev.get("stage") == "ResponseComplete" and ev.get("user", {}).get("username") == "admin"
                    and ev.get("userAgent", "").startswith(agent)):
                out[ev.get("verb", "?")] += 1
        return out

    def quiet(self, max_rate: float = 20.0, timeout: float = 90.0) -> None:
        """Wait until the controllers and scheduler have (mostly) stopped writing to the apiserver."""
        start = time.monotonic()
        calm = 0
        last = self.pos()
        while time.monotonic() < start + timeout:
            time.sleep(0.5)
            now = self.pos()
            events = sum(1 for _ in self.read_since(last))
            last = now
            calm = calm + 1 if events <= max_rate * 0.5 else 0
            if calm >= 3:
                log(f"  apiserver quiet after {time.monotonic() - start:.1f}s")
                return
        log(f"warning: the control plane was still busy after {timeout:.0f}s; measuring anyway")
