"""The Windows PowerShell credential command, parsed with the PowerShell grammar (tree-sitter-powershell).

What is checked is what a Windows user relies on: the line parses as one pipeline, nothing in it is
expanded by PowerShell (no variables, no bare `--`, no bare `,` or `@`), kubectl or runai receives
exactly the arguments that the Linux/macOS command gives it, and the filter matches the log line
by its text (`Select-String -SimpleMatch`), which the seed's `-match "lab?token"` does not.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tree_sitter
import tree_sitter_powershell

from reconciler.render import render
from reconciler.validate import load_repo

PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
TOKEN_LINE = "[I 2024-05-01 08:00:00.000 ServerApp] http://127.0.0.1:8888/lab?token=0123456789abcdef"


def _walk(node: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
    yield node
    for child in node.children:
        yield from _walk(child)


def _text(node: tree_sitter.Node) -> str:
    assert node.text is not None
    return node.text.decode()


def _argument(node: tree_sitter.Node) -> str:
    """The value PowerShell passes for one command element (a bare word, a parameter or a verbatim string)."""
    if node.type in ("generic_token", "command_parameter"):
        return _text(node)
    strings = [n for n in _walk(node) if n.type == "verbatim_string_characters"]
    assert node.type == "array_literal_expression" and len(strings) == 1 and _text(strings[0]) == _text(node), (
        f"{_text(node)!r} is a {node.type}, not a single-quoted string PowerShell passes verbatim"
    )
    return _text(node)[1:-1].replace("''", "'")


def parse(line: str) -> list[list[str]]:
    """The commands of a one-line pipeline, each as [name, *arguments] after PowerShell's parsing."""
    tree = PARSER.parse(line.encode())
    assert not tree.root_node.has_error, f"{line!r} does not parse as PowerShell"
    kinds = {n.type for n in _walk(tree.root_node)}
    assert not kinds & {"variable", "expandable_string_literal", "sub_expression"}, f"{line!r} expands something"
    (chain,) = [n for n in _walk(tree.root_node) if n.type == "pipeline_chain"]
    commands = []
    for command in (c for c in chain.children if c.type == "command"):
        name = next(c for c in command.children if c.type == "command_name")
        elements = next((c for c in command.children if c.type == "command_elements"), None)
        args = [] if elements is None else [
            _argument(e) for e in elements.children if e.type != "command_argument_sep"]
        commands.append([_text(name), *args])
    return commands


@pytest.fixture
def hints(write: Callable[[str, str], Path], base_repo: Path) -> Callable[..., dict[str, tuple[str, str]]]:
    def make(hints: str = "kubectl", file: str = "/home/coder/.config/code-server/config.yaml",
             pattern: str = "lab?token") -> dict[str, tuple[str, str]]:
        project = (base_repo / "project.yaml").read_text() + f"  hints: {hints}\n"
        write("project.yaml", project)
        for name, key, value in (("vscode", "file", file), ("jupyter", "logPattern", pattern)):
            path = base_repo / "blocks" / "environments" / f"{name}.yaml"
            text = re.sub(rf"(?m)^    {key}: .*$", f"    {key}: '{value.replace(chr(39), chr(39) * 2)}'",
                          path.read_text())
            write(f"blocks/environments/{name}.yaml", text)
        return {w.tool: (w.credential_hint, w.credential_hint_powershell) for w in render(load_repo(base_repo))}
    return make


@pytest.mark.parametrize("cli", ["kubectl", "runai"])
def test_the_file_command_gives_kubectl_or_runai_the_same_arguments_as_the_posix_one(
    hints: Callable[..., dict[str, tuple[str, str]]], cli: str
) -> None:
    posix, windows = hints(cli)["vscode"]
    (command,) = parse(windows)
    assert command == shlex.split(posix)
    assert "'--'" in windows, "a bare -- is PowerShell's end-of-parameters token; quoted it reaches the CLI"


@pytest.mark.parametrize("cli", ["kubectl", "runai"])
def test_the_log_command_filters_by_the_literal_text_with_select_string(
    hints: Callable[..., dict[str, tuple[str, str]]], cli: str
) -> None:
    posix, windows = hints(cli)["jupyterlab"]
    source, grep = posix.split(" | ")
    first, second = parse(windows)
    assert first == shlex.split(source)
    assert second == ["Select-String", "-SimpleMatch", "-Pattern", "lab?token"]
    assert shlex.split(grep) == ["grep", "lab?token"]


def test_a_regex_match_as_in_the_seed_would_miss_the_token_line_that_a_simple_match_finds() -> None:
    # `-match` is a .NET regular expression; for this pattern Python's has the same meaning: `b?` is an
    # optional "b", so "lab?token" matches "latoken" or "labtoken", never the text "lab?token".
    assert re.search("lab?token", TOKEN_LINE) is None
    assert "lab?token" in TOKEN_LINE


def test_quotes_commas_and_at_signs_in_a_path_or_pattern_reach_the_cli_as_written(
    hints: Callable[..., dict[str, tuple[str, str]]],
) -> None:
    made = hints(file="/home/coder/a,b@c[1]/config.yaml", pattern="it's the token=")
    (command,) = parse(made["vscode"][1])
    assert command[-1] == "/home/coder/a,b@c[1]/config.yaml"
    _, select = parse(made["jupyterlab"][1])
    assert select[-1] == "it's the token="
