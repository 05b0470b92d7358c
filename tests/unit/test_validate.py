"""Validation: the invalid corpus under tests/data/invalid, and the rules that need a live filesystem."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.errors import ConfigError, ValidationFailed
from reconciler.validate import load_repo

DATA = Path(__file__).resolve().parents[1] / "data"
CORPUS = DATA / "invalid"
CASES = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())
_EXPECTED = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<gist>.+)$")


def _errors(root: Path) -> list[ConfigError]:
    with pytest.raises(ValidationFailed) as failed:
        load_repo(root)
    return failed.value.errors


def _build_case(case: Path, target: Path, copy_repo: Callable[[Path, Path], Path]) -> Path:
    copy_repo(DATA / "base", target)
    files = case / "files"
    if files.is_dir():
        shutil.copytree(files, target, dirs_exist_ok=True)
    delete = case / "delete.txt"
    if delete.exists():
        for rel in delete.read_text().split():
            (target / rel).unlink()
    return target


def test_the_corpus_has_at_least_25_cases() -> None:
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", CASES)
def test_each_invalid_case_reports_exactly_its_errors_at_the_right_place(
    case: str, tmp_path: Path, repo_copier: Callable[[Path, Path], Path]
) -> None:
    root = _build_case(CORPUS / case, tmp_path / "repo", repo_copier)
    expected = [_EXPECTED.match(line) for line in (CORPUS / case / "expected.txt").read_text().splitlines()]
    assert all(expected), "expected.txt lines are `path:line:col: gist`"
    errors = _errors(root)
    actual = sorted((e.path, e.line, e.col) for e in errors)
    wanted = sorted((m["path"], int(m["line"]), int(m["col"])) for m in expected if m)
    assert actual == wanted, "\n".join(str(e) for e in errors)
    for match in expected:
        assert match
        where = (match["path"], int(match["line"]), int(match["col"]))
        at = [e for e in errors if (e.path, e.line, e.col) == where]
        assert any(match["gist"] in e.message for e in at), f"{match['gist']!r} not in {[str(e) for e in at]}"


def test_the_base_repo_of_the_corpus_is_valid(base_repo: Path) -> None:
    repo = load_repo(base_repo)
    assert sorted(repo.workspaces) == ["alice-code", "bob-lab"]
    assert repo.commit is None


def test_errors_of_every_file_are_collected_and_sorted(write: Callable[[str, str], Path], base_repo: Path) -> None:
    write("workspaces/bob-lab.yaml", "a: 1\na: 2\n")
    write("blocks/compute/small.yaml", "")
    errors = _errors(base_repo)
    assert [str(e) for e in errors] == sorted(str(e) for e in errors)
    assert {e.path for e in errors} == {"workspaces/bob-lab.yaml", "blocks/compute/small.yaml"}


def test_a_file_larger_than_1_mib_is_rejected_on_line_1(write: Callable[[str, str], Path], base_repo: Path) -> None:
    write("workspaces/bob-lab.yaml", "# " + "x" * (1 << 20) + "\n")
    (error,) = _errors(base_repo)
    assert (error.path, error.line, error.col) == ("workspaces/bob-lab.yaml", 1, 1)
    assert "larger than 1 MiB" in error.message


def test_non_utf8_content_is_rejected_at_the_offending_byte(base_repo: Path) -> None:
    (base_repo / "workspaces" / "bob-lab.yaml").write_bytes(b"apiVersion: workspaces/v1\nkind: W\xe9rkspace\n")
    (error,) = _errors(base_repo)
    assert (error.path, error.line, error.col) == ("workspaces/bob-lab.yaml", 2, 8)
    assert "not valid UTF-8" in error.message


def test_a_symlink_pointing_outside_the_repo_is_rejected_and_never_read(base_repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.yaml"
    outside.write_text("password: hunter2\n")
    os.symlink(outside, base_repo / "workspaces" / "eve-steal.yaml")
    (error,) = _errors(base_repo)
    assert str(error) == "workspaces/eve-steal.yaml:1:1: symlink points outside the repository; not read"


def test_a_project_file_symlinked_outside_the_repo_is_rejected(base_repo: Path, tmp_path: Path) -> None:
    shutil.move(base_repo / "project.yaml", tmp_path / "project.yaml")
    os.symlink(tmp_path / "project.yaml", base_repo / "project.yaml")
    errors = [str(e) for e in _errors(base_repo)]
    assert errors == ["project.yaml:1:1: symlink points outside the repository; not read"]


def test_a_symlinked_folder_pointing_outside_the_repo_is_rejected(base_repo: Path, tmp_path: Path) -> None:
    shutil.move(base_repo / "blocks" / "compute", tmp_path / "compute")
    os.symlink(tmp_path / "compute", base_repo / "blocks" / "compute")
    errors = _errors(base_repo)
    assert "blocks/compute:1:1: symlink points outside the repository; not read" in [str(e) for e in errors]


def test_a_symlink_inside_the_repo_is_followed(base_repo: Path) -> None:
    shared = base_repo / "shared"
    shared.mkdir()
    shutil.move(base_repo / "blocks" / "compute" / "small.yaml", shared / "small.yaml")
    os.symlink(shared / "small.yaml", base_repo / "blocks" / "compute" / "small.yaml")
    assert "small" in load_repo(base_repo).compute


def test_a_fifo_named_like_a_workspace_is_an_error_not_a_hang(base_repo: Path) -> None:
    os.mkfifo(base_repo / "workspaces" / "zed-pipe.yaml")
    (error,) = _errors(base_repo)
    assert str(error) == "workspaces/zed-pipe.yaml:1:1: not a regular file"


def test_odd_characters_in_file_names_and_keys_cannot_break_the_error_line_format(
    write: Callable[[str, str], Path], base_repo: Path
) -> None:
    os.rename(base_repo / "workspaces" / "bob-lab.yaml", os.fsencode(base_repo / "workspaces") + b"/b\nob:\xff.yaml")
    write(
        "blocks/environments/vscode.yaml",
        (base_repo / "blocks/environments/vscode.yaml").read_text() + '  env: {"A\\nB": 1}\n',
    )
    errors = [str(e) for e in _errors(base_repo)]
    assert errors == [
        "blocks/environments/vscode.yaml:11:9: spec.env.A\\nB: 'A\\nB' is not a valid environment variable name "
        "(letters, digits and '_', not starting with a digit)",
        "blocks/environments/vscode.yaml:11:9: spec.env.A\\nB: Input should be a valid string",
        "workspaces/b\\nob\\x3a\\udcff.yaml:4:3: metadata.name 'bob-lab' does not match the file name "
        "'b\\nob:\\udcff.yaml' (the file must be bob-lab.yaml)",
    ]


def test_files_without_a_yaml_suffix_and_hidden_files_are_ignored(
    write: Callable[[str, str], Path], base_repo: Path
) -> None:
    write("workspaces/README.md", "not yaml: [")
    write("workspaces/notes.txt", "not yaml: [")
    write("workspaces/.alice-code.yaml.swp", "not yaml: [")
    write("workspaces/.hidden.yaml", "not yaml: [")
    (base_repo / "workspaces" / "archive").mkdir()
    write("workspaces/archive/old.yaml", "not yaml: [")
    assert sorted(load_repo(base_repo).workspaces) == ["alice-code", "bob-lab"]


def test_a_yml_file_is_read_like_a_yaml_file(base_repo: Path) -> None:
    (base_repo / "workspaces" / "bob-lab.yaml").rename(base_repo / "workspaces" / "bob-lab.yml")
    repo = load_repo(base_repo)
    assert repo.sources[("Workspace", "bob-lab")] == "workspaces/bob-lab.yml"


def test_stopped_workspaces_do_not_count_against_the_quota(write: Callable[[str, str], Path], base_repo: Path) -> None:
    for owner in ("carol", "dave"):
        write(
            f"workspaces/{owner}-gpu.yaml",
            "apiVersion: workspaces/v1\nkind: Workspace\nmetadata:\n"
            f"  name: {owner}-gpu\nspec:\n  owner: {owner}\n  environment: jupyter\n"
            "  compute: gpu-one\n  state: stopped\n",
        )
    assert len(load_repo(base_repo).workspaces) == 4


def test_owner_prefix_is_not_required_when_the_project_turns_it_off(
    write: Callable[[str, str], Path], base_repo: Path
) -> None:
    project = (base_repo / "project.yaml").read_text().replace("  domain:", "  ownerPrefix: false\n  domain:")
    write("project.yaml", project)
    text = (base_repo / "workspaces" / "bob-lab.yaml").read_text().replace("bob-lab", "lab")
    (base_repo / "workspaces" / "bob-lab.yaml").unlink()
    write("workspaces/lab.yaml", text)
    assert "lab" in load_repo(base_repo).workspaces


def test_defaults_are_filled_in(base_repo: Path) -> None:
    repo = load_repo(base_repo)
    assert repo.project.namespace == "demo"
    assert repo.project.spec.hints == "kubectl"
    assert repo.project.spec.owner_prefix is True
    assert repo.data_sources["team-pvc"].mount_path == "/team-pvc"
    assert repo.data_sources["team-pvc"].spec.read_only is False
    assert repo.workspaces["bob-lab"].spec.state == "running"
    assert repo.workspaces["bob-lab"].spec.data_sources == []
    assert repo.compute["small"].spec.gpu == 0


def test_yaml_numbers_are_accepted_as_quantities(write: Callable[[str, str], Path], base_repo: Path) -> None:
    write(
        "blocks/compute/small.yaml",
        "apiVersion: workspaces/v1\nkind: ComputeResource\nmetadata:\n  name: small\nspec:\n  cpu: 0.5\n"
        "  memory: 1073741824\n",
    )
    spec = load_repo(base_repo).compute["small"].spec
    assert (spec.cpu, spec.memory) == ("0.5", "1073741824")


def test_sources_map_every_file_to_its_repo_relative_path(base_repo: Path) -> None:
    repo = load_repo(base_repo)
    assert repo.sources[("Project", "demo")] == "project.yaml"
    assert repo.sources[("DataSource", "team-pvc")] == "blocks/data-sources/team-pvc.yaml"
    assert repo.sources[("Workspace", "alice-code")] == "workspaces/alice-code.yaml"


def test_a_missing_repo_directory_is_one_error(tmp_path: Path) -> None:
    (error,) = _errors(tmp_path / "nope")
    assert "is not a directory" in error.message


def test_the_example_content_of_this_repository_validates() -> None:
    repo = load_repo(DATA.parents[1])
    assert sorted(repo.workspaces) == ["jane-doe-vscode", "john-tan-jupyterlab"]


@pytest.mark.parametrize("admins", [["carol"], ["aisg/platform-team"], ["Carol-1", "aisg/mlops_admins"]])
def test_admins_may_be_logins_or_github_teams(write: Callable[[str, str], Path], base_repo: Path,
                                              admins: list[str]) -> None:
    project = (base_repo / "project.yaml").read_text()
    write("project.yaml", project + f"  admins: {admins}\n")
    assert load_repo(base_repo).project.spec.admins == admins


@pytest.mark.parametrize("admin", ["a/b/c", "aisg/Team", "-carol", "aisg/"])
def test_an_admin_that_is_neither_a_login_nor_a_team_is_an_error_at_its_line(
    write: Callable[[str, str], Path], base_repo: Path, admin: str
) -> None:
    project = (base_repo / "project.yaml").read_text()
    write("project.yaml", project + f"  admins: ['{admin}']\n")
    (error,) = _errors(base_repo)
    assert error.path == "project.yaml" and error.line > 1
    assert "is not a GitHub login or team" in error.message
