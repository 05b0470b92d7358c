"""Every module of the package is in the import-linter contracts, so a new one cannot slip past them."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The one module each forbidden contract allows to import what it forbids to the others.
OWNER = {
    "kubernetes": "reconciler.cluster",
    "git": "reconciler.policy",
    "urllib": "reconciler.github_api",
    "runai": "reconciler.runai_client",
}


def _modules() -> set[str]:
    files = (ROOT / "reconciler").glob("*.py")
    return {f"reconciler.{p.stem}" for p in files if p.stem not in ("__init__", "__main__")}


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def test_every_module_has_a_place_in_the_layers() -> None:
    (layers,) = [c for c in _contracts() if c["type"] == "layers"]
    placed = {m.strip() for layer in layers["layers"] for m in str(layer).split("|")}  # type: ignore[attr-defined]
    assert _modules() - placed == set(), "add the new module to the layers contract in pyproject.toml"


def test_every_module_but_the_owner_is_forbidden_each_client() -> None:
    forbidden = [c for c in _contracts() if c["type"] == "forbidden"]
    assert {str(m) for c in forbidden for m in c["forbidden_modules"]} >= set(OWNER)  # type: ignore[attr-defined]
    for contract in forbidden:
        (owner,) = {OWNER[m] for m in contract["forbidden_modules"] if m in OWNER}  # type: ignore[attr-defined]
        sources = set(contract["source_modules"])  # type: ignore[arg-type]
        assert sources == _modules() - {owner}, f"{contract['name']}: list every module but {owner}"
