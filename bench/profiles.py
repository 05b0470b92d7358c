"""The profile section of RESULTS.md: where one cProfile'd command spent its time."""

from __future__ import annotations

import pstats
import re
from collections import Counter
from pathlib import Path
from typing import Any


def area(filename: str, func: str) -> str:
    """Which part of the program a profiled function belongs to."""
    m = re.search(r"/reconciler/(\w+)\.py$", filename)
    if m:
        return f"reconciler.{m.group(1)}"
    m = re.search(r"/site-packages/([A-Za-z0-9_]+)", filename)
    if m:
        return {"_yaml": "yaml", "pydantic_core": "pydantic", "six": "kubernetes"}.get(m.group(1), m.group(1))
    if filename == "~":
        if re.search(r"_ssl|socket|select|poll", func):
            return "network (ssl/socket)"
        if "_thread.lock" in func or "acquire" in func:
            return "waiting on threads/locks"
        if re.search(r"marshal|_imp\.|compile|builtins.exec|loads of|posix", func):
            return "imports and file I/O"
        if "json" in func:
            return "json"
        return "builtins"
    if "importlib" in filename:
        return "imports and file I/O"
    m = re.search(r"/lib/python3\.\d+/(\w+)", filename)
    if m:
        mod = m.group(1)
        return {"ssl": "network (ssl/socket)", "socket": "network (ssl/socket)", "http": "network (ssl/socket)",
                "selectors": "network (ssl/socket)", "threading": "waiting on threads/locks",
                "concurrent": "waiting on threads/locks", "queue": "waiting on threads/locks"}.get(mod, f"stdlib {mod}")
    return "other"


def _short_name(filename: str, line: int, func: str) -> str:
    if filename == "~":
        return f"`{func}`"
    short = re.sub(r".*/(site-packages|lib/python3[.][0-9]+)/", "", filename)
    short = re.sub(r".*/(reconciler/)", r"\1", short)
    return f"`{short}:{line} {func}`"


def profile_markdown(name: str, prof: Path) -> list[str]:
    """Where one profiled command spent its time: by area, the reconciler's functions, the hottest functions."""
    st = pstats.Stats(str(prof))
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = st.stats  # type: ignore[attr-defined]
    main_file = Path(str(prof) + ".main")
    main_raw = pstats.Stats(str(main_file)).stats if main_file.exists() else raw  # type: ignore[attr-defined]
    wall = max((ct for (_, _, _, ct, _) in main_raw.values()), default=0.0)
    thread_s = sum(tt for (_, _, tt, _, _) in raw.values())
    imports = sum(ct for (f, _, fn), (_, _, _, ct, _) in main_raw.items()
                  if fn == "_find_and_load" and "importlib" in f)
    by_area: Counter[str] = Counter()
    for (filename, _, func), (_, _, tt, _, _) in raw.items():
        by_area[area(filename, func)] += tt
    lines = [f"#### {name}", "",
             f"{wall:.2f} s in the main thread (imports {imports:.2f} s); {thread_s:.2f} thread-seconds "
             "in all threads.", "",
             "Self time by area, all threads:", "", "| area | self s | share |", "|---|---:|---:|"]
    for a, t in by_area.most_common(12):
        lines.append(f"| {a} | {t:.3f} | {100 * t / thread_s if thread_s else 0:.0f}% |")
    lines += ["", "The reconciler's own functions by cumulative time (all threads; the CLI frame left out):", "",
              "| function | calls | cumulative s | self s |", "|---|---:|---:|---:|"]
    rows = [(ct, nc, tt, _short_name(f, ln, fn)) for (f, ln, fn), (_, nc, tt, ct, _) in raw.items()
            if "/reconciler/" in f and fn not in ("<module>", "main") and "__main__" not in f]
    for ct, nc, tt, label in sorted(rows, reverse=True)[:15]:
        lines.append(f"| {label} | {nc} | {ct:.3f} | {tt:.3f} |")
    lines += ["", "Top self time, all threads:", "", "| function | calls | self s |", "|---|---:|---:|"]
    selfs = sorted(((tt, nc, _short_name(f, ln, fn)) for (f, ln, fn), (_, nc, tt, _, _) in raw.items()),
                   reverse=True)[:12]
    for tt, nc, label in selfs:
        lines.append(f"| {label} | {nc} | {tt:.3f} |")
    lines.append("")
    return lines
