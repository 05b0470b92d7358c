"""Issue #11 item 3: CI installs pinned, hashed dependencies, and runs the reconciler from source."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
LOCK_INSTALL = re.compile(
    r'python -m pip install --require-hashes --no-deps -r ("\$RUNNER_TEMP/base/)?requirements\.lock"?'
)


def pins() -> dict[str, tuple[Version, list[str]]]:
    """name -> (version, hashes) of every requirement in the lock file."""
    text = LOCK.read_text(encoding="utf-8").replace("\\\n", " ")
    found: dict[str, tuple[Version, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *options = line.split(" --hash=")
        name, _, version = spec.split(";")[0].strip().partition("==")
        found[name.lower().replace("_", "-")] = (Version(version), [o.strip() for o in options])
    return found


def test_the_lock_pins_every_dependency_with_hashes_and_satisfies_pyproject() -> None:
    locked = pins()
    assert locked, "requirements.lock is empty"
    for name, (_version, hashes) in locked.items():
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for dependency in project["dependencies"]:
        requirement = Requirement(dependency)
        name = requirement.name.lower().replace("_", "-")
        assert name in locked, f"{name} is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(locked[name][0]), f"{name} {locked[name][0]} vs {requirement}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_workflow_installs_only_the_hashed_lock_and_runs_the_reconciler_from_source(path: Path) -> None:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    for name, job in doc["jobs"].items():
        scripts = [s["run"] for s in job["steps"] if "run" in s]
        installs = [s for s in scripts if "pip" in s]
        assert installs and all(LOCK_INSTALL.fullmatch(s.strip()) for s in installs), f"{path.name}:{name}"
        for script in scripts:
            assert not re.search(r"(^|[\s;&|(])reconcile\s", script), f"{path.name}:{name}: runs an installed copy"
            assert "pip install ." not in script
        if any("-m reconciler" in s for s in scripts):
            assert any(LOCK_INSTALL.fullmatch(s.strip()) for s in installs)
