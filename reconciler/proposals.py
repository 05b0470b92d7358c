"""One `reconcile lifecycle` run: read activity and the lifecycle pull requests, decide, then open/update/close them.

Reads first (the running workspaces' last activity from the cluster, every lifecycle pull request
of ours from GitHub, the base branch's head), decides with the pure `lifecycle` module, then
writes to GitHub only: a branch per owner and kind reset to the base branch, one commit per
file (the Contents API), the pull request opened or edited, or closed with a comment. It never
writes to the cluster: merging a pull request is what changes it, through the apply workflow.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Protocol

from reconciler import cluster, github
from reconciler.cluster import ClusterOptions
from reconciler.errors import GitHubError
from reconciler.github_api import GitHubContext
from reconciler.lifecycle import (
    BRANCH_PREFIX,
    Activity,
    LifecyclePlan,
    LifecyclePull,
    Proposal,
    decide,
    iso,
    parse_marker,
    set_stopped,
)
from reconciler.markup import escape_markdown
from reconciler.models import Repo
from reconciler.render import DesiredWorkspace


class ActivitySource(Protocol):
    """Where the last activity of running workspaces comes from (the cluster module's `Cluster`)."""

    def activity(self, project: str, desired: list[DesiredWorkspace]) -> dict[str, Activity]:
        """Last activity per running workspace name."""
        ...


@dataclass
class LifecycleOptions:
    """The options of one lifecycle run, passed whole."""

    now: dt.datetime
    dry_run: bool = False
    base: str = "main"


@dataclass
class LifecycleResult:
    """What the run decided and did."""

    plan: LifecyclePlan
    activity: dict[str, Activity]
    done: list[str] = field(default_factory=list)
    """One line per pull request opened, updated or closed (or that would be, in a dry run)."""
    urls: dict[tuple[str, str], str] = field(default_factory=dict)


def activity_source(repo: Repo, opts: ClusterOptions) -> ActivitySource | None:
    """The cluster, when the project stops idle workspaces (`spec.idle`) on Kubernetes; else none is read."""
    if repo.project.spec.idle is None or repo.project.spec.backend != "kubernetes":
        return None
    return cluster.Cluster(repo.project.namespace, opts)


def read_pulls(ctx: GitHubContext, base: str) -> list[LifecyclePull]:
    """Every lifecycle pull request of ours: on a `lifecycle/` branch, with our marker, written by our token."""
    ours = github.own_author(ctx)
    found = []
    for pr in github.list_pulls(ctx, state="all", base=base):
        head = pr.get("head")
        head = head if isinstance(head, dict) else {}
        record = parse_marker(pr.get("body"))
        if record is None or not str(head.get("ref", "")).startswith(BRANCH_PREFIX) or not ours(pr):
            continue
        found.append(LifecyclePull(
            number=int(pr["number"]), kind=record["kind"], owner=record["owner"],
            workspaces=dict(record["workspaces"]), state=str(pr.get("state", "open")),
            merged=bool(pr.get("merged_at")), url=str(pr.get("html_url", ""))))
    return found


def run_lifecycle(repo: Repo, desired: list[DesiredWorkspace], source: ActivitySource | None,
                  ctx: GitHubContext | None, opts: LifecycleOptions) -> LifecycleResult:
    """Decide, and (unless a dry run) make GitHub's lifecycle pull requests match the decision."""
    activity = source.activity(repo.project.metadata.name, desired) if source is not None else {}
    pulls = read_pulls(ctx, opts.base) if ctx is not None else []
    texts = {path: (repo.root / path).read_text(encoding="utf-8")
             for (kind, _), path in repo.sources.items() if kind == "Workspace"}
    plan = decide(repo, activity, pulls, opts.now, texts)
    result = LifecycleResult(plan, activity)
    for p in plan.proposals:
        if p.action == "keep":
            assert p.pull is not None
            result.done.append(f"kept #{p.pull.number} ({p.kind}, {p.owner}): {', '.join(sorted(p.workspaces))}")
            continue
        verb = {"open": "open", "update": "update", "close": "close"}[p.action]
        if opts.dry_run or ctx is None:
            number = f" #{p.pull.number}" if p.pull else ""
            result.done.append(f"would {verb}{number} ({p.kind}, {p.owner}): {', '.join(sorted(p.workspaces)) or '-'}")
            continue
        url = _write(ctx, p, opts.base)
        result.urls[(p.kind, p.owner)] = url
        number = f" #{p.pull.number}" if p.pull else ""
        past = {"open": "opened", "update": "updated", "close": "closed"}[p.action]
        names = ", ".join(sorted(p.workspaces or (p.pull.workspaces if p.pull else {})))
        result.done.append(f"{past}{number} ({p.kind}, {p.owner}): {names}: {url}")
    return result


def _write(ctx: GitHubContext, p: Proposal, base: str) -> str:
    """Make GitHub hold proposal `p`; the pull request's URL."""
    if p.action == "close":
        assert p.pull is not None
        github.comment(ctx, p.pull.number, p.body)
        github.edit_pull(ctx, p.pull.number, state="closed")
        return p.pull.url
    base_sha = github.branch_head(ctx, base)
    if base_sha is None:
        raise GitHubError(f"the base branch {base!r} does not exist")
    github.set_branch(ctx, p.branch, base_sha)
    for f in p.files:
        current = github.read_file(ctx, f.path, p.branch)
        if current is None:
            continue  # gone on the base branch since the checkout: nothing to stop or delete
        blob, text = current
        new = None if f.text is None else set_stopped(text, f.path)
        if new == text:
            continue
        verb = "Delete expired" if new is None else "Stop idle"
        github.write_file(ctx, p.branch, f.path, new, f"{verb} workspace {f.path} (lifecycle)", blob)
    if p.pull is None:
        created = github.open_pull(ctx, head=p.branch, base=base, title=p.title, body=p.body)
        return str(created.get("html_url", ""))
    github.edit_pull(ctx, p.pull.number, title=p.title, body=p.body)
    return p.pull.url


def lifecycle_json(result: LifecycleResult, now: dt.datetime) -> dict[str, Any]:
    """`reconcile lifecycle --output json`: the time decided at, each workspace's activity, each pull request."""
    plan = result.plan
    return {
        "now": iso(now),
        "activity": {n: {"lastActive": iso(a.last_active) if a.last_active else None, "source": a.source,
                         "error": a.error or None} for n, a in sorted(result.activity.items())},
        "pullRequests": [{"kind": p.kind, "owner": p.owner, "action": p.action, "workspaces": p.workspaces,
                          "number": p.pull.number if p.pull else None,
                          "url": result.urls.get((p.kind, p.owner)) or (p.pull.url if p.pull else None)}
                         for p in plan.proposals],
        "warnings": plan.warnings, "remembered": plan.remembered, "unknown": plan.unknown,
    }


def lifecycle_markdown(result: LifecycleResult) -> str:
    """The job summary of a lifecycle run: what was done, its warnings and notices."""
    plan = result.plan
    summary = ["### reconcile lifecycle", ""] + [f"- {escape_markdown(x)}" for x in result.done or ["nothing to do"]]
    summary += [f"- warning: {escape_markdown(x)}" for x in plan.warnings]
    summary += [f"- {escape_markdown(x)}" for x in plan.remembered + plan.unknown]
    return "\n".join(summary) + "\n"
