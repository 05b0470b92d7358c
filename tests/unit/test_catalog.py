"""`reconcile blocks` (the catalog), `reconcile new` (a workspace file from the project's defaults),
the JSON Schemas' completion of block names, and block descriptions."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml
from click.testing import CliRunner, Result

from reconciler.cli import main
from reconciler.validate import load_repo

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_blocks_lists_every_block_with_its_description_and_how_many_workspaces_use_it(example_repo: Path) -> None:
    result = cli("blocks", "--repo", str(example_repo))
    assert result.exit_code == 0, result.output
    out = result.stdout
    for title in ("Environments (blocks/environments/)", "Compute sizes (blocks/compute/)",
                  "Data sources (blocks/data-sources/)"):
        assert title in out
    assert "cpu-small   1 CPU, 4Gi memory; used by 2 workspaces" in out
    assert "gpu-a100-1  8 CPU, 64Gi memory, 1 GPU; used by 0 workspaces" in out
    assert "training and fine-tuning" in out  # gpu-a100-1's metadata.description
    assert "aisg-vscode-server-v4-16-1    vscode, image registry.aisingapore.net/mlops/vscode-server:4.16.1" in out
    assert "(no description" not in out  # every example block is described
    data = json.loads(cli("blocks", "--repo", str(example_repo), "--output", "json").stdout)
    assert [e["name"] for e in data["compute"]] == ["cpu-mid", "cpu-small", "gpu-a100-1"]
    small = data["compute"][1]
    assert small["workspaces"] == 2 and small["usedBy"] == ["jane-doe-vscode", "john-tan-jupyterlab"]
    assert small["path"] == "blocks/compute/cpu-small.yaml"
    assert data["dataSources"][0]["summary"] == "claim sample-project-pvc at /sample-project-pvc"


def test_a_block_without_description_says_how_to_add_one_and_an_invalid_repo_exits_1(base_repo: Path) -> None:
    result = cli("blocks", "--repo", str(base_repo))
    assert result.exit_code == 0 and "(no description: add metadata.description)" in result.stdout
    (base_repo / "workspaces" / "alice-code.yaml").write_text("kind: [\n")
    broken = CliRunner().invoke(main, ["blocks", "--repo", str(base_repo)])
    assert broken.exit_code == 1 and "workspaces/alice-code.yaml:" in broken.stderr


def test_a_description_must_be_a_short_string(example_repo: Path) -> None:
    path = example_repo / "blocks" / "compute" / "cpu-mid.yaml"
    lines = [("  description: " + "x" * 501) if line.startswith("  description:") else line
             for line in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(main, ["validate", "--repo", str(example_repo)])
    assert result.exit_code == 1, result.output
    assert "blocks/compute/cpu-mid.yaml:6:3: metadata.description: String should have at most 500" in result.stdout


def test_new_writes_a_valid_commented_file_with_the_owner_prefix_and_the_project_defaults(example_repo: Path) -> None:
    result = cli("new", "--repo", str(example_repo), "--owner", "jane-doe", "--tool", "jupyterlab")
    assert result.exit_code == 0, result.output
    path = example_repo / "workspaces" / "jane-doe-jupyterlab.yaml"
    assert result.stdout.strip() == str(path)
    text = path.read_text()
    assert text.splitlines()[0] == "# yaml-language-server: $schema=../schemas/workspace.json"
    assert (path.parent / "../schemas/workspace.json").resolve() == (example_repo / "schemas/workspace.json").resolve()
    doc = yaml.safe_load(text)
    assert doc["metadata"]["name"] == "jane-doe-jupyterlab"
    # The defaults: the only JupyterLab environment, the compute size and data sources most workspaces use.
    assert doc["spec"] == {"owner": "jane-doe", "environment": "aisg-jupyterlab-server-0-1-0", "compute": "cpu-small",
                           "dataSources": ["sample-project-pvc"], "state": "running"}
    assert "# 1 CPU, 4 GiB: editing code" in text  # each block's description as a comment
    assert "working directory: /sample-project-pvc/workspaces/jane-doe" in text
    assert 'must start with "jane-doe-"' in text
    # It validates against the repo and against the committed JSON Schema.
    assert "jane-doe-jupyterlab" in load_repo(example_repo).workspaces
    schema = json.loads((ROOT / "schemas" / "workspace.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(doc)
    # The next step: open a pull request.
    assert "git add workspaces/jane-doe-jupyterlab.yaml" in result.stderr and "gh pr create" in result.stderr


def test_new_refuses_to_overwrite_a_file_even_with_the_other_extension(example_repo: Path) -> None:
    path = example_repo / "workspaces" / "jane-doe-vscode.yaml"
    before = path.read_text()
    result = CliRunner().invoke(main, ["new", "--repo", str(example_repo), "--owner", "jane-doe", "--tool", "vscode"])
    assert result.exit_code == 1
    assert "exists: not overwritten" in result.stderr and path.read_text() == before
    (example_repo / "workspaces" / "amy-vscode.yml").write_text(before.replace("jane-doe", "amy"))
    twin = CliRunner().invoke(main, ["new", "--repo", str(example_repo), "--owner", "amy", "--tool", "vscode"])
    assert twin.exit_code == 1 and "amy-vscode.yml exists" in twin.stderr
    assert not (example_repo / "workspaces" / "amy-vscode.yaml").exists()


def test_new_leaves_no_file_when_the_result_would_not_validate(example_repo: Path) -> None:
    result = CliRunner().invoke(main, ["new", "--repo", str(example_repo), "--owner", "amy", "--tool", "vscode",
                                       "--name", "bobs-box"])
    assert result.exit_code == 1
    assert "workspaces/bobs-box.yaml:" in result.stderr and "must start with its owner's name 'amy-'" in result.stderr
    assert not (example_repo / "workspaces" / "bobs-box.yaml").exists()


def test_new_rejects_a_bad_login_and_names_the_blocks_that_exist(example_repo: Path) -> None:
    bad = CliRunner().invoke(main, ["new", "--repo", str(example_repo), "--owner", "Jane Doe", "--tool", "vscode"])
    assert bad.exit_code == 64 and "--owner" in bad.stderr
    unknown = CliRunner().invoke(main, ["new", "--repo", str(example_repo), "--owner", "amy", "--tool", "vscode",
                                        "--compute", "huge"])
    assert unknown.exit_code == 1
    assert "unknown compute size 'huge'; existing: cpu-mid, cpu-small, gpu-a100-1" in unknown.stderr
    assert list((example_repo / "workspaces").glob("amy-*")) == []
    chosen = cli("new", "--repo", str(example_repo), "--owner", "amy", "--tool", "vscode", "--compute", "gpu-a100-1",
                 "--name", "amy-train")
    assert chosen.exit_code == 0
    assert yaml.safe_load((example_repo / "workspaces" / "amy-train.yaml").read_text())["spec"]["compute"] == \
        "gpu-a100-1"


def test_the_workspace_schema_offers_the_existing_block_names_for_completion(example_repo: Path,
                                                                               tmp_path: Path) -> None:
    spec = json.loads((ROOT / "schemas" / "workspace.json").read_text())["$defs"]["WorkspaceSpec"]["properties"]
    assert spec["environment"]["examples"] == ["aisg-jupyterlab-server-0-1-0", "aisg-vscode-server-v4-16-1"]
    assert spec["compute"]["examples"] == ["cpu-mid", "cpu-small", "gpu-a100-1"]
    assert spec["dataSources"]["items"]["examples"] == ["sample-project-pvc"]
    # A new block changes the schema, so the staleness test asks for a regeneration.
    new = example_repo / "blocks" / "compute" / "cpu-large.yaml"
    new.write_text((example_repo / "blocks" / "compute" / "cpu-mid.yaml").read_text().replace("cpu-mid", "cpu-large"))
    assert cli("schema", "--repo", str(example_repo), "--output-dir", str(tmp_path)).exit_code == 0
    regenerated = json.loads((tmp_path / "workspace.json").read_text())["$defs"]["WorkspaceSpec"]["properties"]
    assert regenerated["compute"]["examples"] == ["cpu-large", "cpu-mid", "cpu-small", "gpu-a100-1"]


def test_an_unknown_block_without_a_close_name_lists_the_blocks_that_exist(example_repo: Path) -> None:
    path = example_repo / "workspaces" / "jane-doe-vscode.yaml"
    path.write_text(path.read_text().replace("compute: cpu-small", "compute: enormous"))
    result = CliRunner().invoke(main, ["validate", "--repo", str(example_repo)])
    assert result.exit_code == 1
    assert ("workspaces/jane-doe-vscode.yaml:9:3: unknown compute resource 'enormous' (no blocks/compute/enormous.yaml)"
            "; existing: cpu-mid, cpu-small, gpu-a100-1 (`reconcile blocks` describes them)") in result.stdout
