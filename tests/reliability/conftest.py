"""Fixtures of the reliability suite, and the figures it measured (printed at the end of the run).

Every trial that draws random numbers takes its seed from `RELIABILITY_SEED` when set, else a
fresh one; the seed is printed with the figures and in every assertion message, so a failure
can be replayed with `RELIABILITY_SEED=<seed> pytest -m soak tests/reliability -k <test>`.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ControlPlane
from tests.e2e.helpers import Admin

FIGURES: list[dict[str, Any]] = []


def record(test: str, **figures: Any) -> None:
    """Keep one test's measured figures for the end-of-run summary (and `RELIABILITY_FIGURES`, a JSON-lines file)."""
    entry = {"test": test, **figures}
    FIGURES.append(entry)
    out = os.environ.get("RELIABILITY_FIGURES")
    if out:
        with open(out, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for entry in FIGURES:
        terminalreporter.write_line(json.dumps(entry, sort_keys=True))


@pytest.fixture
def seed() -> int:
    """The seed of this test's random choices (RELIABILITY_SEED, else fresh)."""
    value = int(os.environ.get("RELIABILITY_SEED") or secrets.randbits(32))
    print(f"RELIABILITY_SEED={value}")
    return value


@pytest.fixture
def kc(control_plane: ControlPlane) -> Path:
    return control_plane.kubeconfig


@pytest.fixture
def admin(control_plane: ControlPlane, namespace: str) -> Admin:
    return Admin(control_plane.kubeconfig, namespace)
