"""Hostile input: only `ValidationFailed` escapes, and every error reads `path:line:col: message`."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.errors import ValidationFailed
from reconciler.loader import parse_document
from reconciler.validate import load_repo

ERROR_LINE = re.compile(r"^[^:\n]+:\d+:\d+: [^\n]+$")
BASE = Path(__file__).resolve().parents[1] / "data" / "base"
TARGET = "workspaces/alice-code.yaml"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_errors(failed: ValidationFailed) -> None:
    assert failed.errors, "a failure carries at least one error"
    for error in failed.errors:
        assert ERROR_LINE.match(str(error)), repr(str(error))
        assert error.line >= 1 and error.col >= 1


def _parse(raw: bytes) -> None:
    try:
        parse_document(raw, "f.yaml")
    except ValidationFailed as failed:
        _check_errors(failed)


@pytest.fixture(scope="module")
def fuzz_repo() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="fuzz-repo-"))
    for part in ("project.yaml", "blocks", "workspaces"):
        src = BASE / part
        if src.is_dir():
            shutil.copytree(src, directory / part)
        else:
            shutil.copy(src, directory / part)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _validate_with(root: Path, raw: bytes, rel: str = TARGET) -> None:
    (root / rel).write_bytes(raw)
    try:
        load_repo(root)
    except ValidationFailed as failed:
        _check_errors(failed)


YAML_ALPHABET = "ab:- \n\t#&*!|>'\"[]{},?%@`<=~.0123456789\\\x00\x85\u2028\ufeffé"


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_only_ever_fail_validation(raw: bytes) -> None:
    _parse(raw)


@FUZZ
@given(st.text(alphabet=YAML_ALPHABET, max_size=300))
def test_random_yaml_like_text_only_ever_fails_validation(text: str) -> None:
    _parse(text.encode("utf-8", errors="surrogatepass"))


@FUZZ
@given(st.text(alphabet=YAML_ALPHABET, max_size=300))
def test_random_text_in_a_workspace_file_only_ever_fails_validation(fuzz_repo: Path, text: str) -> None:
    _validate_with(fuzz_repo, text.encode("utf-8", errors="surrogatepass"))


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["running", "stopped", "vscode", "4", "16Gi", "-1", "small", "team-pvc", "alice-code", "/x"]),
)
_keys = st.sampled_from(
    [
        "apiVersion",
        "kind",
        "metadata",
        "name",
        "spec",
        "owner",
        "environment",
        "compute",
        "dataSources",
        "state",
        "cpu",
        "memory",
        "gpu",
        "extra",
        "credentials",
        "file",
        "logPattern",
        "env",
    ]
)
_values: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=5),
    max_leaves=25,
)


@FUZZ
@given(
    st.fixed_dictionaries(
        {
            "apiVersion": st.sampled_from(["workspaces/v1", "v1"]),
            "kind": st.sampled_from(["Workspace", "Project"]),
        },
        optional={"metadata": _values, "spec": _values, "extra": _values},
    )
)
def test_random_documents_of_the_right_shape_only_ever_fail_validation(
    fuzz_repo: Path, document: dict[str, Any]
) -> None:
    _validate_with(fuzz_repo, yaml.safe_dump(document, allow_unicode=True).encode())


@FUZZ
@given(_values)
def test_random_environment_files_only_ever_fail_validation(fuzz_repo: Path, spec: Any) -> None:
    document = {
        "apiVersion": "workspaces/v1",
        "kind": "Environment",
        "metadata": {"name": "vscode"},
        "spec": spec,
    }
    raw = yaml.safe_dump(document, allow_unicode=True).encode()
    try:
        _validate_with(fuzz_repo, raw, "blocks/environments/vscode.yaml")
    finally:
        shutil.copy(BASE / "blocks/environments/vscode.yaml", fuzz_repo / "blocks/environments/vscode.yaml")


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=1, max_value=20_000), st.sampled_from(["[", "{", "- ", "a:\n"]))
def test_deep_nesting_is_refused_cleanly(depth: int, opener: str) -> None:
    if opener == "a:\n":
        text = "".join(" " * i + "a:\n" for i in range(min(depth, 400)))
    elif opener == "- ":
        text = "".join(" " * (2 * i) + "- \n" for i in range(min(depth, 400)))
    else:
        text = "a: " + opener * depth
    _parse(text.encode())


@settings(max_examples=10, deadline=None)
@given(st.integers(min_value=(1 << 20) - 64, max_value=(1 << 20) + 64))
def test_huge_scalars_around_the_size_limit_are_read_or_refused_cleanly(size: int) -> None:
    _parse(b"a: " + b"x" * (size - 4) + b"\n")


@pytest.mark.parametrize("levels", [3, 9])
def test_billion_laughs_is_refused_at_the_first_anchor(levels: int) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    names = "abcdefghij"
    for i in range(1, levels):
        lines.append(f"{names[i]}: &{names[i]} [" + ",".join([f"*{names[i - 1]}"] * 9) + "]")
    with pytest.raises(ValidationFailed) as failed:
        parse_document("\n".join(lines).encode(), "f.yaml")
    assert str(failed.value.errors[0]) == "f.yaml:1:4: YAML anchors are not allowed (&a)"


@FUZZ
@given(st.binary(min_size=1, max_size=200).filter(lambda b: not _is_utf8(b)))
def test_non_utf8_files_name_a_position_inside_the_file(raw: bytes) -> None:
    with pytest.raises(ValidationFailed) as failed:
        parse_document(raw, "f.yaml")
    (error,) = failed.value.errors
    assert error.message == "file is not valid UTF-8"
    assert error.line <= raw.count(b"\n") + 1


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
