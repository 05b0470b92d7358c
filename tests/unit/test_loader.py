"""The YAML loader: plain values, positions for every key, and every refusal at the right line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.errors import ConfigError, ValidationFailed
from reconciler.loader import MAX_BYTES, Document, load_document, parse_document, read_git_commit


def _parse(text: str | bytes) -> Document:
    return parse_document(text.encode() if isinstance(text, str) else text, "f.yaml")


def _errors(text: str | bytes) -> list[str]:
    with pytest.raises(ValidationFailed) as failed:
        _parse(text)
    return [str(e) for e in failed.value.errors]


def test_values_are_plain_python_and_every_key_and_item_has_its_position() -> None:
    doc = _parse("a: 1\nb: [x, {c: true}]\nd:\n  e: 1.5\n  f: ~\n  g: '007'\n")
    assert doc.data == {"a": 1, "b": ["x", {"c": True}], "d": {"e": 1.5, "f": None, "g": "007"}}
    assert doc.positions[("a",)] == (1, 1)
    assert doc.positions[("b", 1)] == (2, 8)
    assert doc.positions[("b", 1, "c")] == (2, 9)
    assert doc.positions[("d", "g")] == (6, 3)


def test_a_pydantic_loc_maps_to_the_key_itself_or_to_the_parent_when_missing() -> None:
    doc = _parse("spec:\n  owner: x\n  credentials:\n    file: /x\n")
    assert doc.position(("spec", "credentials", "file")) == (4, 5)  # unknown field / wrong type
    assert doc.position(("spec", "compute")) == (1, 1)  # missing: the key of the mapping lacking it
    assert doc.position(("spec", "credentials", "logPattern")) == (3, 3)
    assert doc.position(("spec", "function-after[x]", "owner")) == (2, 3)  # union tags are skipped
    assert doc.position(()) == (1, 1)
    assert doc.error(("spec", "owner"), "bad") == ConfigError("f.yaml", 2, 3, "bad")


def test_keys_are_read_as_text_and_timestamps_stay_text() -> None:
    doc = _parse("on: 1\n1: x\ndate: 2024-01-02\n")
    assert doc.data == {"on": 1, "1": "x", "date": "2024-01-02"}


def test_duplicate_keys_are_rejected_at_the_second_key() -> None:
    assert _errors("a: 1\nb:\n  c: 1\n  c: 2\n") == ["f.yaml:4:3: duplicate key 'c' (first defined on line 3)"]


def test_duplicate_keys_in_flow_mappings_are_rejected_too() -> None:
    assert _errors("a: {x: 1, x: 2}\n") == ["f.yaml:1:11: duplicate key 'x' (first defined on line 1)"]


def test_anchors_and_aliases_are_rejected_without_being_expanded() -> None:
    assert _errors("a: &x [1]\nb: *x\n") == [
        "f.yaml:1:4: YAML anchors are not allowed (&x)",
        "f.yaml:2:4: YAML aliases are not allowed (*x)",
    ]


def test_a_billion_laughs_file_costs_nothing() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    errors = _errors("\n".join(lines) + "\n")
    assert len(errors) == 9 + 8  # each anchor, and each alias name once


def test_merge_keys_are_rejected() -> None:
    assert _errors("a:\n  <<: {b: 1}\n") == ["f.yaml:2:3: YAML merge keys (<<) are not allowed"]


def test_a_quoted_merge_key_is_just_a_key() -> None:
    assert _parse('"<<": 1\n').data == {"<<": 1}


def test_more_than_one_document_is_rejected_at_the_second() -> None:
    assert _errors("a: 1\n---\nb: 2\n") == ["f.yaml:2:1: more than one YAML document in a file (one document per file)"]


def test_an_explicit_single_document_is_fine() -> None:
    assert _parse("---\na: 1\n...\n").data == {"a": 1}


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "\ufeff"])
def test_an_empty_file_is_rejected_at_line_1(text: str) -> None:
    assert _errors(text) == ["f.yaml:1:1: file is empty (expected one YAML mapping)"]


@pytest.mark.parametrize(("text", "where"), [("- a\n", "1:1"), ("just text\n", "1:1"), ("\n\n42\n", "3:1")])
def test_a_top_level_that_is_not_a_mapping_is_rejected(text: str, where: str) -> None:
    assert _errors(text) == [f"f.yaml:{where}: the top level must be a mapping (key: value pairs)"]


def test_a_syntax_error_points_at_the_problem() -> None:
    (error,) = _errors("a: 1\nb: [1, 2\nc: 3\n")
    assert error.startswith("f.yaml:3:2: YAML syntax error: ")


def test_a_tab_indent_is_a_syntax_error_with_its_line() -> None:
    (error,) = _errors("a:\n\tb: 1\n")
    assert error == "f.yaml:2:1: tabs are not allowed for indentation in YAML; use spaces"


def test_non_utf8_bytes_are_rejected_at_their_line_and_column() -> None:
    assert _errors(b"a: 1\nb: caf\xe9\n") == ["f.yaml:2:7: file is not valid UTF-8"]


def test_a_utf8_byte_order_mark_is_accepted() -> None:
    assert _parse("\ufeffa: 1\n").data == {"a": 1}


def test_control_characters_are_rejected_with_their_position() -> None:
    (error,) = _errors("a: 1\nb: x\x07y\n")
    assert error == "f.yaml:2:5: invalid character: control characters are not allowed"


def test_non_core_tags_are_rejected_and_core_tags_work() -> None:
    assert _errors("a: !!python/name:os.system x\n") == [
        "f.yaml:1:4: YAML tag '!!python/name:os.system' is not allowed"
    ]
    assert _errors("a: !custom {}\n") == ["f.yaml:1:4: YAML tag '!custom' is not allowed"]
    assert _parse("a: !!str 4\nb: !!int '5'\n").data == {"a": "4", "b": 5}


def test_an_invalid_explicitly_tagged_scalar_is_an_error_not_a_crash() -> None:
    assert _errors("a: !!int abc\n") == ["f.yaml:1:4: invalid int 'abc'"]


def test_collections_as_keys_are_rejected() -> None:
    assert _errors("? [a, b]\n: 1\n") == ["f.yaml:1:3: mapping keys must be plain strings, not collections"]


def test_nesting_deeper_than_the_limit_is_rejected() -> None:
    assert _errors("a: " + "[" * 40 + "]" * 40 + "\n") == ["f.yaml:1:35: nested deeper than 32 levels"]
    block = "".join("  " * i + f"k{i}:\n" for i in range(40)) + "  " * 40 + "leaf: 1\n"
    assert _errors(block) == ["f.yaml:33:65: nested deeper than 32 levels"]


def test_extreme_nesting_is_an_error_not_a_recursion_crash() -> None:
    (error,) = _errors("a: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert error.startswith("f.yaml:1:")


def test_a_file_over_1_mib_is_rejected_without_being_parsed(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with open(path, "wb") as handle:
        handle.truncate(MAX_BYTES + 1)  # sparse: reading it all would be the bug
    with pytest.raises(ValidationFailed) as failed:
        load_document(path, "big.yaml")
    assert [str(e) for e in failed.value.errors] == [f"big.yaml:1:1: file is larger than 1 MiB ({MAX_BYTES + 1} bytes)"]


def test_a_file_of_exactly_1_mib_is_read(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    body = "a: 1\n"
    path.write_text(body + "#" * (MAX_BYTES - len(body) - 1) + "\n")
    assert load_document(path, "edge.yaml").data == {"a": 1}


def test_a_directory_or_unreadable_path_is_an_error_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed) as failed:
        load_document(tmp_path / "missing.yaml", "missing.yaml")
    assert str(failed.value.errors[0]).startswith("missing.yaml:1:1: cannot read file")


def _git(cwd: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
        "PATH": "/usr/bin:/bin",
        "HOME": str(cwd),
    }
    result = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_outside_a_git_checkout_the_commit_is_none(tmp_path: Path) -> None:
    assert read_git_commit(tmp_path) is None


def test_the_commit_is_read_from_loose_refs_packed_refs_and_a_detached_head(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q", "-b", "main")
    assert read_git_commit(tmp_path) is None  # an unborn branch has no commit
    (tmp_path / "f").write_text("x")
    _git(tmp_path, "add", "f")
    _git(tmp_path, "commit", "-q", "-m", "one")
    head = _git(tmp_path, "rev-parse", "HEAD")
    sub = tmp_path / "sub"
    sub.mkdir()
    assert read_git_commit(tmp_path) == head
    assert read_git_commit(sub) == head  # a repo root inside a checkout
    _git(tmp_path, "pack-refs", "--all")
    assert not (tmp_path / ".git" / "refs" / "heads" / "main").exists()
    assert read_git_commit(tmp_path) == head
    _git(tmp_path, "checkout", "-q", "--detach")
    assert read_git_commit(tmp_path) == head


def test_the_commit_of_a_worktree_is_found_through_its_gitdir_file(tmp_path: Path) -> None:
    main = tmp_path / "main"
    main.mkdir()
    _git(main, "init", "-q", "-b", "main")
    (main / "f").write_text("x")
    _git(main, "add", "f")
    _git(main, "commit", "-q", "-m", "one")
    _git(main, "worktree", "add", "-q", "-b", "side", str(tmp_path / "side"))
    (tmp_path / "side" / "g").write_text("y")
    _git(tmp_path / "side", "add", "g")
    _git(tmp_path / "side", "commit", "-q", "-m", "two")
    assert read_git_commit(tmp_path / "side") == _git(tmp_path / "side", "rev-parse", "HEAD")
    assert read_git_commit(main) == _git(main, "rev-parse", "HEAD")


def test_a_corrupt_git_directory_is_no_commit_rather_than_an_error(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_bytes(b"\xff\xfe")
    assert read_git_commit(tmp_path) is None
    (tmp_path / ".git" / "HEAD").write_text("ref: ../../etc/passwd\n")
    assert read_git_commit(tmp_path) is None
