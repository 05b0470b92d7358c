"""Fixtures shared by the end-to-end tests of the reconcile loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ControlPlane
from tests.e2e.helpers import Admin, Repo


@pytest.fixture
def admin(control_plane: ControlPlane, namespace: str) -> Admin:
    """The test namespace's administrator, with the example's PVC created and Bound."""
    a = Admin(control_plane.kubeconfig, namespace)
    a.bound_pvc("sample-project-pvc")
    return a


@pytest.fixture
def repo(tmp_path: Path, namespace: str) -> Repo:
    """A copy of the example repo pointed at the test namespace."""
    return Repo(tmp_path / "repo", namespace)
