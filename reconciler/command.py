"""The `reconcile` click group's machinery: exit codes, errors as one line, options given before a subcommand.

Exit codes: 0 success; 1 any error; 2 success with changes (`--detailed-exitcode`); 64 a usage
error (click's own usage errors exit 2, which would collide with "changes": they are mapped).
An internal error (a bug) is one line; with ``RECONCILE_DEBUG=1`` its traceback comes first.
"""

from __future__ import annotations

import gc
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click

from reconciler.errors import ReconcileError, ValidationFailed, one_line

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
        # A short-lived command builds many small dicts (LIST pages, rendered objects) that are
        # all alive until it ends: the cycle collector only walks them (0.4 s of a 1,000-workspace plan).
        gc.set_threshold(200_000, 50, 100)
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
            click.echo(f"error: {count(len(exc.errors), 'validation error')}", err=True)
            sys.exit(EXIT_ERROR)
        except ReconcileError as exc:
            click.echo(f"error: {one_line(str(exc))}", err=True)
            sys.exit(EXIT_ERROR)
        except Exception as exc:  # a bug: say so in one line; the traceback only when asked for
            if os.environ.get("RECONCILE_DEBUG", "").strip() not in ("", "0"):
                click.echo("".join(traceback.format_exception(exc)), err=True, nl=False)
            message = f"internal error: {type(exc).__name__}: {one_line(str(exc))} (please report)"
            click.echo(message, err=True)
            sys.exit(EXIT_ERROR)
        sys.exit(result if isinstance(result, int) else EXIT_OK)


def pass_options_down(ctx: click.Context, options: dict[str, Any]) -> None:
    """Options given before a subcommand become its defaults, or a usage error when it has no such option.

    Click would otherwise parse them as the plan/apply verb's and drop them silently
    (`reconcile --repo X validate` validated "."). The same option after the subcommand wins.
    """
    name = ctx.invoked_subcommand or ""
    command = ctx.command.get_command(ctx, name) if isinstance(ctx.command, click.Group) else None
    assert command is not None
    given = [p for p in ctx.command.params
             if p.name in options and ctx.get_parameter_source(p.name) is not click.core.ParameterSource.DEFAULT]
    takes = {p.name for p in command.params}
    stray = [p for p in given if p.name not in takes]
    if stray:
        flags = ", ".join(_flag(p, options[p.name]) for p in stray)
        what = "it is an option" if len(stray) == 1 else "they are options"
        raise click.UsageError(
            f"{flags} {'does' if len(stray) == 1 else 'do'} not apply to `reconcile {name}`: "
            f"{what} of the plan/apply command (`reconcile` without a subcommand)",
            ctx,
        )
    ctx.default_map = {name: {p.name: options[p.name] for p in given if p.name is not None}}


def _flag(param: click.Parameter, value: Any) -> str:
    """How the user spelled an option: `--no-wait` for a false `--wait/--no-wait`."""
    if isinstance(param, click.Option) and param.secondary_opts and value is False:
        return param.secondary_opts[0]
    return param.opts[0]


def count(n: int, noun: str) -> str:
    """`1 file`, `2 files`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
