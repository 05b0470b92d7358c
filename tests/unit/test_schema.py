"""The committed JSON Schemas: current with the models, and accepting every example file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.models import SCHEMA_FILES

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
FOLDER_KINDS = {
    "workspaces": "Workspace",
    "blocks/environments": "Environment",
    "blocks/compute": "ComputeResource",
    "blocks/data-sources": "DataSource",
}


def _example_files() -> list[tuple[str, str]]:
    files = [("project.yaml", "Project")]
    for base in (ROOT, ROOT / "tests" / "data" / "base"):
        for folder, kind in FOLDER_KINDS.items():
            for path in sorted((base / folder).glob("*.y*ml")):
                files.append((str(path.relative_to(ROOT)), kind))
    files.append(("tests/data/base/project.yaml", "Project"))
    return files


def test_the_committed_schemas_are_what_reconcile_schema_writes(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["schema", "--output-dir", str(tmp_path), "--repo", str(ROOT)])
    assert result.exit_code == 0, result.output
    for name in SCHEMA_FILES.values():
        committed = SCHEMAS / name
        assert committed.exists(), f"schemas/{name} is missing: run `reconcile schema --output-dir schemas`"
        assert committed.read_text() == (tmp_path / name).read_text(), (
            f"schemas/{name} is stale: run `reconcile schema --output-dir schemas` at the repo root"
        )
    assert sorted(p.name for p in SCHEMAS.glob("*.json")) == sorted(SCHEMA_FILES.values())


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES.values()))
def test_each_committed_schema_is_a_valid_draft_2020_12_schema(name: str) -> None:
    schema = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize(("rel", "kind"), _example_files())
def test_every_example_file_validates_against_its_committed_schema(rel: str, kind: str) -> None:
    schema = json.loads((SCHEMAS / SCHEMA_FILES[kind]).read_text())
    document = yaml.safe_load((ROOT / rel).read_text())
    jsonschema.Draft202012Validator(schema).validate(document)


@pytest.mark.parametrize(("rel", "kind"), [f for f in _example_files() if not f[0].startswith("tests/")])
def test_every_example_file_points_its_editor_at_its_schema(rel: str, kind: str) -> None:
    first = (ROOT / rel).read_text().splitlines()[0]
    match = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first)
    assert match, f"{rel} should start with a yaml-language-server $schema comment"
    target = ((ROOT / rel).parent / match[1]).resolve()
    assert target == (SCHEMAS / SCHEMA_FILES[kind]).resolve()


def test_the_schemas_reject_what_the_models_reject() -> None:
    schema = json.loads((SCHEMAS / "compute-resource.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    good = {"apiVersion": "workspaces/v1", "kind": "ComputeResource", "metadata": {"name": "x"}}
    assert validator.is_valid({**good, "spec": {"cpu": "500m", "memory": "16G"}})
    assert not validator.is_valid({**good, "spec": {"cpu": "4 cores", "memory": "16Gi"}})
    assert not validator.is_valid({**good, "spec": {"cpu": "4", "memory": "16GB"}})
    assert not validator.is_valid({**good, "spec": {"cpu": "4", "memory": "16Gi", "extra": 1}})
    assert not validator.is_valid({**good, "kind": "Workspace", "spec": {"cpu": "4", "memory": "16Gi"}})
    environment = jsonschema.Draft202012Validator(json.loads((SCHEMAS / "environment.json").read_text()))
    both = {
        "apiVersion": "workspaces/v1",
        "kind": "Environment",
        "metadata": {"name": "x"},
        "spec": {"image": "i", "tool": "vscode", "port": 1, "credentials": {"file": "/a", "logPattern": "b"}},
    }
    assert not environment.is_valid(both)
