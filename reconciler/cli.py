"""The `reconcile` command: parse options, call one function, render its result, exit with a code.

Exit codes: 0 success; 1 any error; 2 success with changes (`--detailed-exitcode`); 64 a usage
error (click's own usage errors exit 2, which would collide with "changes": they are mapped).
Results go to stdout, diagnostics to stderr.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import yaml

from reconciler import __version__
from reconciler.errors import ConfigError, ReconcileError, ValidationFailed
from reconciler.models import KIND_MODELS, SCHEMA_FILES, json_schema
from reconciler.render import render
from reconciler.validate import load_repo

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_USAGE = 64


class ReconcileGroup(click.Group):
    """A click group that owns its exit codes: usage errors exit 64, never a traceback."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            exc.show()
            sys.exit(EXIT_USAGE)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(EXIT_ERROR)
        except click.ClickException as exc:
            exc.show()
            sys.exit(EXIT_ERROR)
        except ValidationFailed as exc:
            for error in exc.errors:
                click.echo(str(error), err=True)
            click.echo(f"error: {_count(len(exc.errors), 'validation error')}", err=True)
            sys.exit(EXIT_ERROR)
        except ReconcileError as exc:
            click.echo(f"error: {_one_line(str(exc))}", err=True)
            sys.exit(EXIT_ERROR)
        except Exception as exc:  # a bug: say so in one line, never with a traceback
            message = f"internal error: {type(exc).__name__}: {_one_line(str(exc))} (please report)"
            click.echo(message, err=True)
            sys.exit(EXIT_ERROR)
        sys.exit(result if isinstance(result, int) else EXIT_OK)


@click.group(
    cls=ReconcileGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="reconcile")
@click.pass_context
def main(ctx: click.Context) -> int:
    """Make a Kubernetes cluster match the workspaces in this Git repository."""
    if ctx.invoked_subcommand is not None:
        return EXIT_OK
    # --- the plan/apply command --------------------------------------------------------
    # Bare `reconcile [--dry-run] ...` is the plan/apply verb (DESIGN.md section 4). Its options
    # go on this group and its body replaces the three lines below.
    click.echo("reconcile: the plan/apply command is not wired yet", err=True)
    return EXIT_ERROR


_REPO_OPTION = click.option(
    "--repo",
    "repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="The config repository (holds project.yaml).",
)


@main.command()
@_REPO_OPTION
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "github"]),
    default="text",
    show_default=True,
    help="text: path:line:col: message; json: a list of objects; github: workflow commands.",
)
def validate(repo: Path, output_format: str) -> int:
    """Validate every file of the repo and print every error."""
    try:
        loaded = load_repo(repo)
    except ValidationFailed as exc:
        errors = exc.errors
    else:
        errors = []
    if output_format == "json":
        click.echo(json.dumps([e.as_dict() for e in errors], indent=2))
    elif output_format == "github":
        for error in errors:
            click.echo(github_error_command(error))
        summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary_file:
            with open(summary_file, "a", encoding="utf-8") as handle:
                handle.write(validation_markdown(errors))
    else:
        for error in errors:
            click.echo(str(error))
    if errors:
        files = len({e.path for e in errors})
        click.echo(f"error: {_count(len(errors), 'validation error')} in {_count(files, 'file')}", err=True)
        return EXIT_ERROR
    click.echo(
        f"ok: {_count(len(loaded.workspaces), 'workspace')}, {_count(loaded.block_count, 'block')}", err=True
    )
    return EXIT_OK


@main.command("render")
@_REPO_OPTION
@click.option(
    "--output-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write one YAML file per object (<kind>-<name>.yaml).",
)
def render_command(repo: Path, output_dir: Path) -> int:
    """Write the desired objects as YAML files, one per object."""
    desired = render(load_repo(repo))
    output_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    for workspace in desired:
        for obj in workspace.objects:
            path = output_dir / f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
            path.write_text(yaml.safe_dump(obj, sort_keys=False, default_flow_style=False), encoding="utf-8")
            click.echo(str(path))
            count += 1
    workspaces = _count(len(desired), "workspace")
    click.echo(f"rendered {_count(count, 'object')} for {workspaces} into {output_dir}", err=True)
    return EXIT_OK


@main.command()
@click.option(
    "--output-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write one JSON Schema per file kind.",
)
def schema(output_dir: Path) -> int:
    """Write the JSON Schemas of the file kinds (for editors and CI)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    for kind in KIND_MODELS:
        path = output_dir / SCHEMA_FILES[kind]
        path.write_text(schema_text(kind), encoding="utf-8")
        click.echo(str(path))
    return EXIT_OK


def schema_text(kind: str) -> str:
    """The committed form of a kind's JSON Schema: sorted keys, two-space indent, a final newline."""
    return json.dumps(json_schema(kind), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def github_error_command(error: ConfigError) -> str:
    """`::error file=…,line=…,col=…::message`, escaped as GitHub's workflow commands require."""
    return (
        f"::error file={_escape_property(error.path)},line={error.line},col={error.col}"
        f"::{_escape_data(error.message)}"
    )


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def validation_markdown(errors: list[ConfigError]) -> str:
    """The job summary of a validation: every error, since GitHub annotates only 10 per step."""
    if not errors:
        return "### reconcile validate\n\nAll files are valid.\n\n"
    lines = [f"### reconcile validate: {_count(len(errors), 'error')}", ""]
    lines += [f"- `{e.path}:{e.line}:{e.col}` {_escape_markdown(e.message)}" for e in errors]
    return "\n".join(lines) + "\n\n"


def _escape_markdown(text: str) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for char in "\\`*_[]|#":
        text = text.replace(char, "\\" + char)
    return _one_line(text)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
