"""Shared helpers for the foundation's unit tests: throwaway copies of small config repos."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
BASE_REPO = DATA / "base"
EXAMPLE_PARTS = ("project.yaml", "blocks", "workspaces")


def copy_repo(source: Path, target: Path) -> Path:
    """Copy a config repo's files (not its Git metadata) into `target`."""
    target.mkdir(parents=True, exist_ok=True)
    for part in EXAMPLE_PARTS:
        src = source / part
        if src.is_dir():
            shutil.copytree(src, target / part)
        elif src.exists():
            shutil.copy(src, target / part)
    return target


@pytest.fixture
def repo_copier() -> Callable[[Path, Path], Path]:
    """`copy_repo(source, target)`, for tests that build repos of their own."""
    return copy_repo


@pytest.fixture
def base_repo(tmp_path: Path) -> Path:
    """A copy of tests/data/base, outside any Git checkout."""
    return copy_repo(BASE_REPO, tmp_path / "repo")


@pytest.fixture
def example_repo(tmp_path: Path) -> Path:
    """A copy of the example content at the root of this repository, outside any Git checkout."""
    return copy_repo(ROOT, tmp_path / "example")


@pytest.fixture
def write(base_repo: Path) -> Callable[[str, str], Path]:
    """Write (or overwrite) one file of the `base_repo` copy."""

    def _write(rel: str, text: str) -> Path:
        path = base_repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return _write
