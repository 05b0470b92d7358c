"""`python -m cProfile -o OUT -m reconciler ...`, but profiling every thread, not only the main one.

    python bench/profile_threads.py OUT reconciler [ARGS...]

The apply writes on a thread pool; plain cProfile would show those seconds only as the main thread
waiting on a lock. Here each new thread gets its own profiler (threading.setprofile), and all of them
are merged into one pstats file at exit, so cumulative times are thread-seconds, not wall seconds.
"""

from __future__ import annotations

import cProfile
import pstats
import runpy
import sys
import threading
from typing import Any

_profiles: list[cProfile.Profile] = []


def _start_in_thread(_frame: Any, _event: str, _arg: Any) -> None:
    profile = cProfile.Profile()
    _profiles.append(profile)
    profile.enable()  # replaces this hook for the rest of the thread's life


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 64
    out, module = sys.argv[1], sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    main_profile = cProfile.Profile()
    threading.setprofile(_start_in_thread)
    code = 0
    main_profile.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        main_profile.disable()
        threading.setprofile(None)  # type: ignore[arg-type]
        stats = pstats.Stats(main_profile)
        stats.dump_stats(out + ".main")  # the main thread alone: its total is the command's wall time
        for profile in _profiles:
            stats.add(profile)
        stats.dump_stats(out)
    return code


if __name__ == "__main__":
    sys.exit(main())
