"""Where a run's report goes besides stdout: the job summary, the pull-request comment, a failure comment.

Each is a by-product: a failure to write it is a warning on stderr, never the run's result.
GitHub (HTTP) is imported only when something is posted, so the plan path starts fast.
"""

from __future__ import annotations

import click

from reconciler.errors import GitHubError, one_line


def report_failure(reason: str) -> None:
    """A failed apply says why on the merged PR (a warning when that is not possible)."""
    from reconciler.github import publish_failure  # HTTP: only when a run posts (not on the plan path)

    try:
        url = publish_failure(one_line(reason))
        click.echo(f"commented: {url}", err=True)
    except GitHubError as e:
        click.echo(f"warning: the failure was not posted: {one_line(str(e))}", err=True)


def write_summary(markdown: str) -> None:
    """The job summary is a by-product: a failure to write it is a warning, never the run's result."""
    from reconciler.github import write_step_summary

    try:
        write_step_summary(markdown)
    except GitHubError as e:
        click.echo(f"warning: the job summary was not written: {one_line(str(e))}", err=True)


def post_report(markdown: str, *, dry_run: bool) -> None:
    """The plan (or apply) report as the pull request's comment."""
    from reconciler.github import publish_report

    try:
        url = publish_report(markdown, dry_run=dry_run)
        click.echo(f"commented: {url}", err=True)
    except GitHubError as e:
        click.echo(f"warning: the report was not posted: {one_line(str(e))}", err=True)
