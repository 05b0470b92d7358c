"""What one size measured: every sample, the notes and errors, and their medians."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field

from bench.config import log


@dataclass
class SizeResult:
    """Every sample taken at one size."""

    n: int
    objects: int = 0
    runs: int = 0
    times: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, list[int]] = field(default_factory=dict)
    verbs: dict[str, Counter[str]] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    """Per command: CPU seconds of the client, of kube-apiserver + etcd, of controller-manager + scheduler."""
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def time(self, key: str, seconds: float) -> None:
        self.times.setdefault(key, []).append(seconds)

    def count(self, key: str, n: int) -> None:
        self.counts.setdefault(key, []).append(n)

    def rss(self, key: str, mb: float) -> None:
        self.rss_mb[key] = max(self.rss_mb.get(key, 0.0), mb)

    def note(self, msg: str) -> None:
        if msg not in self.notes:
            self.notes.append(msg)
            log(f"note: {msg}")

    def error(self, msg: str) -> None:
        self.errors.append(msg)
        log(f"ERROR: {msg}")

    def median(self, key: str) -> float | None:
        v = self.times.get(key) or self.counts.get(key)
        return round(statistics.median(v), 4) if v else None

    def median_int(self, key: str) -> int | None:
        v = self.counts.get(key)
        return int(statistics.median(v)) if v else None

    def cpu_median(self, key: str, which: int = 0) -> float | None:
        """Median CPU seconds of a command: 0 the client, 1 kube-apiserver + etcd, 2 the controllers."""
        v = self.cpu.get(key)
        return round(statistics.median(x[which] for x in v), 3) if v else None

    def peak_rss_mb(self) -> float | None:
        return round(max(self.rss_mb.values()), 1) if self.rss_mb else None
