"""The benchmark's entry point: `python bench/run.py [--report]` (what `make bench` runs).

The benchmark itself is the `bench` package next to this file (see bench/__init__.py for its modules).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# `python bench/run.py` puts bench/ first on sys.path; the package is imported from the repository root instead,
# so that none of its modules can shadow a standard one.
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
else:
    sys.path.insert(0, str(ROOT))

from bench.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
