"""The foundation's CLI: validate (three formats), render, schema, and the exit-code contract."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from reconciler import cli
from reconciler.cli import github_error_command, main
from reconciler.errors import ClusterError, ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(main, list(args), env=env)
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def broken_repo(write: Callable[[str, str], Path], base_repo: Path) -> Path:
    write(
        "workspaces/bob-lab.yaml",
        "apiVersion: workspaces/v1\nkind: Workspace\nmetadata: {name: bob-lab}\nspec:\n  owner: bob\n  owner: bob\n",
    )
    write(
        "blocks/compute/small.yaml",
        "apiVersion: workspaces/v1\nkind: ComputeResource\nmetadata:\n"
        "  name: small\nspec:\n  cpu: 4 cores\n  memory: 8Gi\n",
    )
    return base_repo


def test_validate_on_a_valid_repo_exits_0_and_says_what_it_read(base_repo: Path) -> None:
    result = _run("validate", "--repo", str(base_repo))
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr == "ok: 2 workspaces, 5 blocks\n"


def test_validate_prints_every_error_to_stdout_and_a_summary_to_stderr(broken_repo: Path) -> None:
    result = _run("validate", "--repo", str(broken_repo))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "blocks/compute/small.yaml:6:3: spec.cpu: '4 cores' is not a valid Kubernetes quantity "
        '(e.g. "4", "500m", "16Gi", "512Mi")',
        "workspaces/bob-lab.yaml:6:3: duplicate key 'owner' (first defined on line 5)",
    ]
    assert result.stderr == "error: 2 validation errors in 2 files\n"


def test_validate_json_prints_a_list_of_errors(broken_repo: Path) -> None:
    result = _run("validate", "--repo", str(broken_repo), "--format", "json")
    assert result.exit_code == 1
    errors = json.loads(result.stdout)
    assert errors[1] == {
        "path": "workspaces/bob-lab.yaml",
        "line": 6,
        "col": 3,
        "message": "duplicate key 'owner' (first defined on line 5)",
    }


def test_validate_json_on_a_valid_repo_is_an_empty_list(base_repo: Path) -> None:
    result = _run("validate", "--repo", str(base_repo), "--format", "json")
    assert (result.exit_code, json.loads(result.stdout)) == (0, [])


def test_validate_github_prints_workflow_commands_and_appends_the_full_list_to_the_summary(
    broken_repo: Path, tmp_path: Path
) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    result = _run(
        "validate",
        "--repo",
        str(broken_repo),
        "--format",
        "github",
        env={"GITHUB_STEP_SUMMARY": str(summary)},
    )
    assert result.exit_code == 1
    assert result.stdout.splitlines()[1] == (
        "::error file=workspaces/bob-lab.yaml,line=6,col=3::duplicate key 'owner' (first defined on line 5)"
    )
    text = summary.read_text()
    assert text.startswith("earlier step\n### reconcile validate: 2 errors\n")
    assert "- `workspaces/bob-lab.yaml:6:3` duplicate key 'owner' (first defined on line 5)" in text


def test_validate_github_without_a_summary_file_still_annotates(broken_repo: Path) -> None:
    result = _run("validate", "--repo", str(broken_repo), "--format", "github", env={"GITHUB_STEP_SUMMARY": ""})
    assert result.exit_code == 1
    assert all(line.startswith("::error file=") for line in result.stdout.splitlines())


def test_validate_github_on_a_valid_repo_writes_a_passing_summary(base_repo: Path, tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    result = _run("validate", "--repo", str(base_repo), "--format", "github", env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert (result.exit_code, result.stdout) == (0, "")
    assert "All files are valid." in summary.read_text()


def test_github_workflow_commands_escape_data_and_properties() -> None:
    error = ConfigError("dir,a:b/x%.yaml", 3, 4, "50% bad\r\nsecond line")
    assert github_error_command(error) == (
        "::error file=dir%2Ca%3Ab/x%25.yaml,line=3,col=4::50%25 bad%0D%0Asecond line"
    )


def test_the_job_summary_escapes_markdown_and_html_in_messages() -> None:
    text = cli.validation_markdown([ConfigError("a.yaml", 1, 1, "unknown field '<img src=x>' *bold* `x`")])
    assert "<img" not in text
    assert "&lt;img src=x&gt;" in text and "\\*bold\\*" in text and "\\`x\\`" in text


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "--bogus"],
        ["validate", "--format", "xml"],
        ["render"],
        ["schema"],
        ["no-such-command"],
        ["--no-such-option"],
    ],
)
def test_usage_errors_exit_64_not_2(args: list[str]) -> None:
    result = _run(*args)
    assert result.exit_code == 64, result.output
    assert "Usage:" in result.stderr or "Error:" in result.stderr


def test_help_and_version_exit_0() -> None:
    assert _run("--help").exit_code == 0
    assert _run("validate", "--help").exit_code == 0
    version = _run("--version")
    assert version.exit_code == 0 and "0.1.0" in version.stdout


def test_the_bare_command_on_an_invalid_repo_exits_1_before_touching_a_cluster(broken_repo: Path) -> None:
    result = _run("--repo", str(broken_repo), "--dry-run")
    assert result.exit_code == 1
    assert "workspaces/bob-lab.yaml:6:3: duplicate key 'owner'" in result.stderr


def test_a_reconcile_error_is_one_line_on_stderr_with_exit_1(monkeypatch: pytest.MonkeyPatch, base_repo: Path) -> None:
    def fail(root: Path) -> None:
        raise ClusterError("Deployment/ns/x apply failed:\nforbidden")

    monkeypatch.setattr(cli, "load_repo", fail)
    result = _run("render", "--repo", str(base_repo), "--output-dir", str(base_repo / "out"))
    assert result.exit_code == 1
    assert result.stderr == "error: Deployment/ns/x apply failed: forbidden\n"


def test_an_unexpected_exception_is_reported_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, base_repo: Path
) -> None:
    def boom(root: Path) -> None:
        raise KeyError("surprise")

    monkeypatch.setattr(cli, "load_repo", boom)
    result = _run("validate", "--repo", str(base_repo))
    assert result.exit_code == 1
    assert result.stderr == "internal error: KeyError: 'surprise' (please report)\n"


def test_render_writes_one_yaml_file_per_object(base_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _run("render", "--repo", str(base_repo), "--output-dir", str(out))
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "deployment-alice-code.yaml",
        "deployment-bob-lab.yaml",
        "ingress-alice-code.yaml",
        "ingress-bob-lab.yaml",
        "service-alice-code.yaml",
        "service-bob-lab.yaml",
    ]
    service = yaml.safe_load((out / "service-bob-lab.yaml").read_text())
    assert (service["kind"], service["metadata"]["name"], service["spec"]["ports"][0]["port"]) == (
        "Service",
        "bob-lab",
        8888,
    )
    assert result.stderr == f"rendered 6 objects for 2 workspaces into {out}\n"


def test_render_of_an_invalid_repo_prints_the_errors_and_exits_1(broken_repo: Path, tmp_path: Path) -> None:
    result = _run("render", "--repo", str(broken_repo), "--output-dir", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == "error: 2 validation errors"
    assert not (tmp_path / "out").exists()


def test_schema_writes_the_five_schemas_with_sorted_keys_and_a_final_newline(tmp_path: Path) -> None:
    result = _run("schema", "--output-dir", str(tmp_path))
    assert result.exit_code == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "compute-resource.json",
        "data-source.json",
        "environment.json",
        "project.json",
        "workspace.json",
    ]
    text = (tmp_path / "workspace.json").read_text()
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_python_dash_m_reconciler_is_the_same_command() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", "--repo", str(ROOT)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert (run.returncode, run.stderr) == (0, "ok: 2 workspaces, 6 blocks\n")
    usage = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", "--format", "nope"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert usage.returncode == 64
