"""The docs cannot drift silently: docs/ is the reference, and the CLI reference covers every option.

* No file outside ``docs/`` cites the original brief (a file a user who clones the repository
  does not have); the reference lives in ``docs/`` (see docs/README.md).
* Every option that ``reconcile --help`` or a subcommand's ``--help`` shows, and every
  subcommand, appears in docs/CLI.md.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI_DOC = ROOT / "docs" / "CLI.md"
BRIEF = "DESIGN" + ".md"  # spelled in two parts so this file does not cite it itself
SKIP_DIRS = {".git", ".venv", "__pycache__", ".cluster", ".mypy_cache", ".ruff_cache", ".pytest_cache",
             "node_modules"}


def _repo_files() -> list[Path]:
    """The tracked files (git ls-files), or every file of the tree outside a Git checkout."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        files = []
        for directory, dirs, names in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
            files += [Path(directory) / name for name in names]
        return files
    return [ROOT / name for name in out.decode("utf-8", errors="surrogateescape").split("\0") if name]


def test_no_file_outside_docs_cites_the_original_brief() -> None:
    offenders: list[str] = []
    for path in _repo_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("docs/") or not path.is_file():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if b"\0" in data[:8192]:
            continue  # binary
        text = data.decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if BRIEF in line:
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, (
        f"these lines cite {BRIEF}, which a clone of the repository does not have; "
        "point them at docs/ (docs/README.md lists the pages):\n" + "\n".join(offenders)
    )


# ---------------------------------------------------------------------------------------------
# The CLI reference

_SECTION = re.compile(r"^(Options|Commands):\s*$")
_OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


@cache
def _help(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "reconciler", *args, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _sections(text: str) -> dict[str, list[str]]:
    """The entries of the 'Options:' and 'Commands:' sections: the first column of each entry line."""
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        match = _SECTION.match(line)
        if match:
            current = match.group(1)
            sections[current] = []
        elif current and re.match(r"^  \S", line):
            sections[current].append(re.split(r"\s{2,}", line.strip())[0])
        elif line and not line.startswith(" "):
            current = None
    return sections


def _options(text: str) -> set[str]:
    options: set[str] = set()
    for entry in _sections(text).get("Options", []):
        # "--wait / --no-wait", "-h, --help", "--output [text|json|markdown]": the flags only.
        options.update(_OPTION.findall(entry.split("[")[0]))
    return options


def _subcommands() -> list[str]:
    return _sections(_help()).get("Commands", [])


def _mentions(doc: str, token: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(token)}(?![\w-])", doc) is not None


def test_the_help_parser_finds_the_options_and_commands_it_should() -> None:
    top = _help()
    assert {"--repo", "--dry-run", "--wait", "--no-wait", "--help", "-h"} <= _options(top)
    assert {"validate", "status", "render", "schema"} <= set(_subcommands())


@pytest.mark.parametrize("command", ["", "validate", "status", "render", "schema", "lifecycle"])
def test_every_option_of_the_help_appears_in_the_cli_reference(command: str) -> None:
    doc = CLI_DOC.read_text(encoding="utf-8")
    args = (command,) if command else ()
    options = _options(_help(*args))
    assert options, f"no options parsed from `reconcile {command} --help`"
    name = f"reconcile {command}".strip()
    missing = sorted(o for o in options if not _mentions(doc, o))
    assert not missing, f"docs/CLI.md does not mention these options of `{name}`: {missing}"
    if command:
        assert f"## `reconcile {command}`" in doc, f"docs/CLI.md has no section for `reconcile {command}`"


def test_every_subcommand_has_a_section_in_the_cli_reference() -> None:
    doc = CLI_DOC.read_text(encoding="utf-8")
    missing = [c for c in _subcommands() if f"## `reconcile {c}`" not in doc]
    assert not missing, f"docs/CLI.md has no section for these subcommands: {missing}"


def test_every_choice_of_the_help_appears_in_the_cli_reference() -> None:
    doc = CLI_DOC.read_text(encoding="utf-8")
    missing: list[str] = []
    for command in ("", "validate", "status"):
        args = (command,) if command else ()
        for entry in _sections(_help(*args)).get("Options", []):
            choices = re.search(r"\[([\w|-]+\|[\w|-]+)\]", entry)
            for value in choices.group(1).split("|") if choices else ():
                if not _mentions(doc, value):
                    missing.append(f"{command or 'reconcile'} {entry.split()[0]} {value}")
    assert not missing, f"docs/CLI.md does not mention these option values: {missing}"
