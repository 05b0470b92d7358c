"""The fields the seed guide's users set by hand before: home on the volume, VS Code extensions, Run:ai
scheduling (GPU fractions, node pools), /dev/shm, and the ingress class and TLS secret.

The repo under tests/data/seed sets every one of them; its golden files hold the exact objects.
"""

from __future__ import annotations

from pathlib import Path

from reconciler.validate import load_repo
from tests.unit.test_render import _check_golden

SEED = Path(__file__).resolve().parents[1] / "data" / "seed"


def test_the_seed_fields_repo_renders_exactly_as_its_golden_files() -> None:
    _check_golden(load_repo(SEED), "seed")
