"""The `reconcile` command: parse options, call one function, render its result, exit with a code.

Results go to stdout, diagnostics to stderr. The exit codes and the one-line errors are the click
group's (`command.py`); the work is the modules': `run` (plan/apply), `status`, `proposals`
(lifecycle), `importer`, `catalog`, `writer`; the rendering is `report`, `status_report` and
`workflow_output`'s; the job summary and PR comments go out through `publish`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from reconciler import __version__
from reconciler.backend import select_backend
from reconciler.command import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, ReconcileGroup, count, pass_options_down
from reconciler.errors import ConfigError, GitHubError, ReconcileError, ValidationFailed, one_line
from reconciler.lifecycle import expiry_errors, parse_iso
from reconciler.models import KIND_MODELS, SCHEMA_FILES, Repo, json_schema
from reconciler.plan import Plan, PlanOptions, WorkspaceResult
from reconciler.publish import post_report, report_failure, write_summary
from reconciler.render import render
from reconciler.report import plan_json, plan_markdown, plan_text
from reconciler.status_report import status_json, status_markdown, status_text
from reconciler.validate import load_repo
from reconciler.workflow_output import github_error_command, github_notice_command, validation_markdown
from reconciler.writer import next_step, write_new_file, write_rendered

_OUTPUT = click.Choice(["text", "json", "markdown"])
_REPO_OPTION = click.option(
    "--repo",
    "repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="The config repository (holds project.yaml).",
)


@click.group(
    cls=ReconcileGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="reconcile")
@_REPO_OPTION
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing (needs read rights only).")
@click.option("--output", "output", type=_OUTPUT, default="text", show_default=True)
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when there are changes, 0 when none.")
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False),
    default=None,
    help="Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).",
)
@click.option("--context", "kube_context", default=None, help="The kubeconfig context to use.")
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="After applying, wait until every created or updated workspace is ready.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="Seconds to wait for the lock and, separately, for readiness.",
)
@click.option(
    "--adopt",
    multiple=True,
    is_flag=False,
    flag_value="*",
    metavar="[WORKSPACE]",
    help="Take over the existing objects that are not ours (conflicts) of WORKSPACE (repeatable); "
    "without a name, of every workspace. A conflict not adopted leaves its workspace alone.",
)
@click.option("--allow-mass-delete", is_flag=True, help="Allow a plan that deletes many or all workspaces.")
@click.option(
    "--max-deletes",
    type=click.IntRange(min=0),
    default=PlanOptions.max_deletes,
    show_default=True,
    help="Refuse a plan deleting more workspaces than this, unless --allow-mass-delete.",
)
@click.option(
    "--comment", is_flag=True, help="Post the report to the pull request (GitHub Actions environment variables)."
)
@click.option(
    "--since", default=None, metavar="REV",
    help="Plan (and apply) only the workspaces whose files differ from the Git revision REV (a pull request's "
    "base, the commit before a push); a change to project.yaml or a block plans every workspace. The others "
    "are not read: the drift check compares them all.",
)
@click.pass_context
def main(ctx: click.Context, /, **options: Any) -> int:
    """Make a Kubernetes cluster match the workspaces in this Git repository.

    Without a subcommand: compute the plan and apply it (or only show it with --dry-run).
    """
    if ctx.invoked_subcommand is not None:
        pass_options_down(ctx, options)
        return EXIT_OK
    commands = set(ctx.command.commands) if isinstance(ctx.command, click.Group) else set()
    clash = sorted(set(options["adopt"]) & commands)
    if clash:
        raise click.UsageError(f"--adopt takes a workspace name, not the subcommand {clash[0]!r}", ctx)
    run = RunOptions(**options)
    try:
        return _reconcile(run)
    except ReconcileError as e:
        if run.comment and not run.dry_run and not isinstance(e, GitHubError):
            report_failure(str(e))
        raise


@dataclass
class RunOptions:
    """The options of the plan/apply verb, passed whole."""

    repo: Path
    dry_run: bool
    output: str
    detailed_exitcode: bool
    kubeconfig: str | None
    kube_context: str | None
    wait: bool
    timeout: float
    adopt: tuple[str, ...]  # workspace names; "*" for every workspace
    allow_mass_delete: bool
    max_deletes: int
    comment: bool
    since: str | None


def _reconcile(o: RunOptions) -> int:
    from reconciler import run  # the kubernetes client: only here
    from reconciler.cluster import ClusterOptions

    repo = load_repo(o.repo)
    scope = None
    if o.since is not None:
        from reconciler.policy import changed_scope  # GitPython: only with --since

        scope = changed_scope(o.repo, o.since, repo.workspaces)
    backend, desired, namespace = select_backend(repo, scope.names if scope is not None else None)
    unknown = sorted(set(o.adopt) - {"*"} - set(repo.workspaces))
    if unknown:
        raise click.UsageError(f"--adopt {unknown[0]}: the repo has no workspace of that name")
    plan_opts = PlanOptions(adopt="*" in o.adopt, allow_mass_delete=o.allow_mass_delete, max_deletes=o.max_deletes,
                            adopt_workspaces=frozenset(o.adopt) - {"*"})
    result = run.reconcile(
        desired, repo.project.metadata.name, namespace,
        run.RunOptions(plan=plan_opts, cluster=ClusterOptions(kubeconfig=o.kubeconfig, context=o.kube_context),
                       dry_run=o.dry_run, wait=o.wait, timeout=o.timeout, progress=_progress, scope=scope),
        backend=backend,
    )
    plan, results, refused = result.plan, result.results, result.refused
    extras = run.plan_extras(repo, plan)
    if refused is not None and not o.dry_run:
        # The plan for the log and the job summary; the PR gets the failure and how to re-run.
        _emit_plan(dataclasses.replace(o, comment=False), plan, results, repo.commit, extras)
        raise refused
    _emit_plan(o, plan, results, repo.commit, extras)
    if refused is not None:
        click.echo(f"error: {one_line(str(refused))}", err=True)
    elif not results:
        for why in result.left_alone.values():
            click.echo(f"error: {one_line(why)}", err=True)
    for name, r in sorted(results.items()):
        for err in r.errors:
            click.echo(f"error: {one_line(err)}", err=True)
        if r.ready is False:
            click.echo(f"error: {name} is not ready: {one_line(r.reason)}", err=True)
    if result.failed:
        return EXIT_ERROR
    return EXIT_CHANGES if o.detailed_exitcode and plan.has_changes else EXIT_OK


def _emit_plan(o: RunOptions, plan: Plan, results: dict[str, WorkspaceResult], commit: str | None,
               extras: dict[str, Any] | None = None) -> None:
    markdown = None
    extras = extras or {}
    if o.output == "json":
        # Written as it is encoded: the document of 5,000 workspaces is never one string (peak memory).
        json.dump(plan_json(plan, results or None, extras.get("cost")), sys.stdout, indent=2)
        sys.stdout.write("\n")
        sys.stdout.flush()
    elif o.output == "markdown":
        markdown = plan_markdown(plan, dry_run=o.dry_run, results=results or None, commit=commit, **extras)
        click.echo(markdown)
    else:
        click.echo(plan_text(plan, color=sys.stdout.isatty(), results=results or None), nl=False)
    if o.comment or os.environ.get("GITHUB_STEP_SUMMARY"):
        from reconciler.github import workflow_run_url

        markdown = plan_markdown(plan, dry_run=o.dry_run, results=results or None, commit=commit,
                                 details_url=workflow_run_url(), **extras)
        write_summary(markdown)
    if o.comment:
        post_report(markdown or "", dry_run=o.dry_run)


def _progress(total: int) -> Callable[[list[str], list[str]], None]:
    """Readiness progress: one rewritten line on a terminal, a plain line per change otherwise."""
    last: list[int] = [-1]
    tty = sys.stderr.isatty()

    def show(ready: list[str], pending: list[str]) -> None:
        if len(ready) == last[0]:
            return
        last[0] = len(ready)
        waiting = ", ".join(pending[:3]) + (" ..." if len(pending) > 3 else "")
        line = f"waiting for readiness: {len(ready)}/{total} ready" + (f" (waiting: {waiting})" if pending else "")
        if tty:
            click.echo(f"\r\x1b[2K{line}", err=True, nl=not pending)
        else:
            click.echo(line, err=True)

    return show


@main.command()
@_REPO_OPTION
@click.option("--output", "output", type=_OUTPUT, default="text", show_default=True)
@click.option("--kubeconfig", type=click.Path(dir_okay=False), default=None)
@click.option("--context", "kube_context", default=None)
@click.option("--owner", default=None, metavar="LOGIN",
              help="Only LOGIN's workspaces (and orphaned ones whose name starts with 'LOGIN-').")
def status(repo: Path, output: str, kubeconfig: str | None, kube_context: str | None, owner: str | None) -> int:
    """Live state of every workspace: ready, not ready, stopped, missing or orphaned; URL and hint."""
    from reconciler.cluster import ClusterOptions
    from reconciler.status import workspace_status

    loaded = load_repo(repo)
    if loaded.project.spec.backend == "runai":
        raise click.UsageError("`reconcile status` reads Kubernetes only; with backend: runai use the Run:ai "
                               "dashboard or `runai workspace list -p <project>`")
    result = workspace_status(loaded, ClusterOptions(kubeconfig=kubeconfig, context=kube_context), owner)
    rows = result.rows
    if output == "json":
        click.echo(json.dumps(status_json(rows, result.cost), indent=2))
    elif output == "markdown":
        click.echo(status_markdown(rows, result.cost_line))
    else:
        click.echo(status_text(rows, color=sys.stdout.isatty(), last_active=result.last_active,
                               cost_line=result.cost_line), nl=False)
    return EXIT_OK


@main.command()
@_REPO_OPTION
@click.option("--output", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--kubeconfig", type=click.Path(dir_okay=False), default=None)
@click.option("--context", "kube_context", default=None)
@click.option("--dry-run", is_flag=True, help="Decide and print; open, update or close no pull request.")
@click.option("--base", default="main", show_default=True, help="The branch the pull requests target.")
@click.option("--now", "now_text", default=None, metavar="TIME",
              help="Decide as if it were TIME (ISO 8601, e.g. 2027-03-31T09:00:00Z): preview a later run.")
def lifecycle(repo: Path, output: str, kubeconfig: str | None, kube_context: str | None, dry_run: bool,
              base: str, now_text: str | None) -> int:
    """Open, update or close the pull requests that stop idle workspaces and tear down expired ones.

    Reads activity from the cluster (read-only) and writes only to GitHub (GITHUB_TOKEN,
    GITHUB_REPOSITORY, GITHUB_API_URL); never applies. Without GITHUB_TOKEN it is a dry run.
    """
    from reconciler.cluster import ClusterOptions
    from reconciler.github_api import GitHubContext
    from reconciler.proposals import (
        LifecycleOptions,
        activity_source,
        lifecycle_json,
        lifecycle_markdown,
        run_lifecycle,
    )

    now = dt.datetime.now(dt.UTC)
    if now_text is not None:
        parsed = parse_iso(now_text)
        if parsed is None:
            raise click.UsageError(f"--now {now_text!r} is not an ISO 8601 time such as 2027-03-31T09:00:00Z")
        now = parsed
    loaded = load_repo(repo)
    desired = render(loaded)
    source = activity_source(loaded, ClusterOptions(kubeconfig=kubeconfig, context=kube_context))
    ctx = None
    if os.environ.get("GITHUB_TOKEN", "").strip():
        ctx = GitHubContext.from_env()
    elif not dry_run:
        click.echo("notice: GITHUB_TOKEN is not set: a dry run (no pull request is opened)", err=True)
    result = run_lifecycle(loaded, desired, source, ctx, LifecycleOptions(now=now, dry_run=dry_run, base=base))
    plan = result.plan
    if output == "json":
        click.echo(json.dumps(lifecycle_json(result, now), indent=2))
    else:
        for line in result.done:
            click.echo(line)
        if not result.done:
            click.echo("no lifecycle pull request to open, update or close")
        for line in plan.warnings:
            click.echo(f"warning: {line}", err=True)
        for line in plan.remembered + plan.unknown:
            click.echo(f"notice: {line}", err=True)
    write_summary(lifecycle_markdown(result))
    return EXIT_OK




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
@click.option("--actor", default=None, metavar="LOGIN",
              help="Also enforce ownership: LOGIN (unless an admin) may only touch their own workspace files.")
@click.option("--base", default=None, metavar="REV",
              help="With --actor: the PR's base (default: the event's base SHA, or origin/$GITHUB_BASE_REF).")
def validate(repo: Path, output_format: str, actor: str | None, base: str | None) -> int:
    """Validate every file of the repo and print every error."""
    try:
        loaded = load_repo(repo)
    except ValidationFailed as exc:
        errors, load_failed = exc.errors, True
    else:
        errors, load_failed = [], False
    notices: list[str] = []
    if actor:
        from reconciler.github import team_membership
        from reconciler.policy import default_base, review_ownership

        base = base or default_base()
        if not base:
            raise click.UsageError("--actor needs --base REV (or a pull_request event / GITHUB_BASE_REF)")
        review = review_ownership(repo, actor, base, is_member=team_membership())
        errors, notices = sorted(errors + review.errors), review.notices
    if not load_failed:
        errors = sorted(errors + _expiry_errors(loaded, repo, base))
    if output_format == "json":
        click.echo(json.dumps([e.as_dict() for e in errors], indent=2))
    elif output_format == "github":
        for error in errors:
            click.echo(github_error_command(error))
        for notice in notices:
            click.echo(github_notice_command("Ownership", notice))
    else:
        for error in errors:
            click.echo(str(error))
    if output_format != "github":
        for notice in notices:
            click.echo(f"notice: {notice}", err=True)
    write_summary(validation_markdown(errors, notices))  # GitHub annotates 10 per step: the summary has all
    if errors:
        files = len({e.path for e in errors})
        click.echo(f"error: {count(len(errors), 'validation error')} in {count(files, 'file')}", err=True)
        return EXIT_ERROR
    click.echo(f"ok: {count(len(loaded.workspaces), 'workspace')}, {count(loaded.block_count, 'block')}", err=True)
    return EXIT_OK


def _expiry_errors(loaded: Repo, repo: Path, base: str | None) -> list[ConfigError]:
    """Expiry dates refused: a past date on a workspace file that is new since `base`; beyond expiry.maxDays."""
    new: set[str] = set()
    if base:
        from reconciler.policy import added_files

        new = added_files(repo, base)
    return expiry_errors(loaded, dt.datetime.now(dt.UTC).date(), new)


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
    loaded = load_repo(repo)
    desired = select_backend(loaded)[1]
    written = write_rendered(desired, output_dir)
    for path in written:
        click.echo(str(path))
    workspaces = count(len(desired), "workspace")
    click.echo(f"rendered {count(len(written), 'object')} for {workspaces} into {output_dir}", err=True)
    return EXIT_OK


@main.command()
@click.option(
    "--output-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write one JSON Schema per file kind.",
)
@_REPO_OPTION
def schema(output_dir: Path, repo: Path) -> int:
    """Write the JSON Schemas of the file kinds (for editors and CI); workspaces complete the repo's block names."""
    from reconciler.catalog import block_names

    names = block_names(repo)
    output_dir.mkdir(parents=True, exist_ok=True)
    for kind in KIND_MODELS:
        path = output_dir / SCHEMA_FILES[kind]
        path.write_text(schema_text(kind, names), encoding="utf-8")
        click.echo(str(path))
    return EXIT_OK


def schema_text(kind: str, block_names: dict[str, list[str]] | None = None) -> str:
    """The committed form of a kind's JSON Schema: sorted keys, two-space indent, a final newline."""
    return json.dumps(json_schema(kind, block_names), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# --- adoption: the catalog, a new workspace file, importing running workspaces --------------------

@main.command("blocks")
@_REPO_OPTION
@click.option("--output", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def blocks_command(repo: Path, output: str) -> int:
    """List the environments, compute sizes and data sources, what each is for, and how many workspaces use it."""
    from reconciler.catalog import catalog, catalog_json, catalog_text

    entries = catalog(load_repo(repo))
    if output == "json":
        click.echo(json.dumps(catalog_json(entries), indent=2))
    else:
        click.echo(catalog_text(entries), nl=False)
    return EXIT_OK


@main.command("new")
@_REPO_OPTION
@click.option("--owner", required=True, metavar="LOGIN", help="The workspace's owner: a Git host login, lower-case.")
@click.option("--tool", required=True, type=click.Choice(["vscode", "jupyterlab"]), help="The IDE it serves.")
@click.option("--name", default=None, help="The workspace's name (default: OWNER-TOOL).")
@click.option("--environment", default=None, help="An environment block (default: the most used one of TOOL).")
@click.option("--compute", default=None, help="A compute size (default: the most used one, then the smallest).")
@click.option("--data-source", "data_sources", multiple=True,
              help="A data source (repeatable; default: the most common list of the repo's workspaces).")
def new_command(repo: Path, owner: str, tool: str, name: str | None, environment: str | None, compute: str | None,
                data_sources: tuple[str, ...]) -> int:
    """Write workspaces/<name>.yaml for OWNER from the project's defaults; never overwrites a file."""
    from reconciler.catalog import new_workspace
    from reconciler.fields import DNS1123_LABEL

    if len(owner) > 39 or not re.fullmatch(DNS1123_LABEL, owner):
        raise click.BadParameter(f"{owner!r} is not a login: lower-case letters, digits and '-', at most 39",
                                 param_hint="--owner")
    loaded = load_repo(repo)
    made = new_workspace(loaded, owner, tool, name=name, environment=environment, compute=compute,
                         data_sources=list(data_sources) or None)
    path = write_new_file(repo, made.path, made.text, made.name)
    click.echo(str(path))
    click.echo(f"wrote {path}", err=True)
    click.echo(next_step([made.path], f"Add workspace {made.name}", f"add-{made.name}"), err=True)
    return EXIT_OK


@main.command("import")
@_REPO_OPTION
@click.option("--kubeconfig", type=click.Path(dir_okay=False), default=None)
@click.option("--context", "kube_context", default=None)
@click.option("--owner", "owners", multiple=True, metavar="NAME=LOGIN",
              help="The owner of Deployment NAME, when it has no owner label (repeatable).")
@click.option("--owner-label", default="owner", show_default=True,
              help="The label that holds a Deployment's owner.")
@click.option("--dry-run", is_flag=True, help="Only say what matches; write no file.")
def import_command(repo: Path, kubeconfig: str | None, kube_context: str | None, owners: tuple[str, ...],
                   owner_label: str, dry_run: bool) -> int:
    """Write workspace files for the workspaces already running in the namespace (read rights only).

    Exit 0 when every one found was written (or there was none), 1 when any did not match."""
    from reconciler.cluster import ClusterOptions
    from reconciler.importer import candidates, read_namespace, write_matches

    by_name: dict[str, str] = {}
    for pair in owners:
        workspace, sep, login = pair.partition("=")
        if not sep or not workspace or not login:
            raise click.BadParameter(f"{pair!r}: use NAME=LOGIN", param_hint="--owner")
        by_name[workspace] = login
    loaded = load_repo(repo)
    objects = read_namespace(loaded.project.namespace, ClusterOptions(kubeconfig=kubeconfig, context=kube_context))
    found = candidates(loaded, objects, by_name, owner_label)
    written = [] if dry_run else write_matches(repo, loaded, found)
    for c in found:
        rel = f"workspaces/{c.name}.yaml"
        if not c.matches:
            click.echo(f"{c.name}: not imported")
            for problem in c.problems:
                click.echo(f"  - {problem}")
            continue
        blocks = ", ".join([c.environment, c.compute, *c.data_sources])
        click.echo(f"{c.name}: {'matches' if dry_run else 'wrote ' + rel} ({blocks})")
        for note in c.notes:
            click.echo(f"  note: {note}")
    matched = [c.name for c in found if c.matches]
    if not found:
        click.echo(f"no workspace to import: every Deployment of {loaded.project.namespace} is already managed",
                   err=True)
    if written:
        adopt = " ".join(f"--adopt {n}" for n in written)
        click.echo(next_step([f"workspaces/{n}.yaml" for n in written], "Import running workspaces",
                              "import-workspaces"), err=True)
        click.echo(f"after the merge, take their objects over with: reconcile {adopt} (or the apply workflow's "
                   "`adopt` input); the plan shows them as adopted updates, never a delete", err=True)
    return EXIT_ERROR if len(matched) < len(found) else EXIT_OK
