"""GitHub Actions output: workflow commands (annotations on the changed files) and the validation job summary.

Pure: formats; `github.py` does the writing and the HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.errors import ConfigError
from reconciler.markup import escape_markdown


def validation_markdown(errors: Sequence[ConfigError], notices: Sequence[str] = ()) -> str:
    """The job summary of a validation: every error, since GitHub annotates only 10 per step."""
    extra = "".join(f"> **Notice:** {escape_markdown(n)}\n\n" for n in notices)
    if not errors:
        return "### reconcile validate\n\nAll files are valid.\n\n" + extra
    noun = "error" if len(errors) == 1 else "errors"
    lines = [f"### reconcile validate: {len(errors)} {noun}", ""]
    lines += [f"- `{e.path}:{e.line}:{e.col}` {escape_markdown(e.message)}" for e in errors]
    return "\n".join(lines) + "\n\n" + extra


# ---------------------------------------------------------------------------------------------
# GitHub Actions workflow commands (annotations on the changed files)


def github_error_command(error: ConfigError) -> str:
    """`::error file=…,line=…,col=…::message`, escaped as GitHub's workflow commands require."""
    where = f"file={_escape_property(error.path)},line={error.line},col={error.col}"
    return f"::error {where}::{_escape_data(error.message)}"


def github_notice_command(title: str, text: str) -> str:
    """`::notice title=…::text`, escaped the same way."""
    return f"::notice title={_escape_property(title)}::{_escape_data(text)}"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")
