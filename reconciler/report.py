"""A plan and an apply's results as text (rich), JSON (the shape in docs/CLI.md#json-output) and Markdown.

The status has its own report (`status_report.py`); GitHub's workflow commands and the validation
summary are `workflow_output.py`'s.

Pure: renders what ``plan.py`` computed and never computes anything itself. Every value shown
comes from a ``FieldDiff`` (already masked) or from the plan's own fields, so no secret can
reach a terminal, a log or a pull request from here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.cost import PlanCost, money, monthly
from reconciler.markup import Line, cell, code, fenced, to_string
from reconciler.plan import (
    Action,
    BlockImpact,
    FieldDiff,
    ObjectChange,
    Plan,
    WorkspacePlan,
    WorkspaceResult,
)
from reconciler.render import MANAGED_BY

PLAN_MARKER = "<!-- workspace-gitops:plan -->"
APPLY_MARKER = "<!-- workspace-gitops:apply -->"

Results = Mapping[str, WorkspaceResult]

_SYMBOL = {
    Action.CREATE: "+",
    Action.UPDATE: "~",
    Action.DELETE: "-",
    Action.UNCHANGED: "=",
    Action.CONFLICT: "!",
}
_STYLE = {
    Action.CREATE: "green",
    Action.UPDATE: "yellow",
    Action.DELETE: "red",
    Action.UNCHANGED: "dim",
    Action.CONFLICT: "bold magenta",
}
_RESTART_WARNING = "unsaved notebook work is lost on restart"


# --------------------------------------------------------------------------------------------
# Shared wording


def summary_line(plan: Plan) -> str:
    """``Plan: 1 to create, 0 to update, 0 to delete, 3 unchanged, 0 conflicts.``"""
    s = plan.summary()
    return (
        f"Plan: {s['create']} to create, {s['update']} to update, {s['delete']} to delete, "
        f"{s['unchanged']} unchanged, {s['conflict']} conflict{'' if s['conflict'] == 1 else 's'}."
    )


def scope_line(plan: Plan) -> str | None:
    """What `--since` planned: ``Planned 1 workspace, changed since abc123: u1-vscode; ...``; None without it."""
    scope = plan.scope
    if scope is None:
        return None
    since = scope.since[:12] if len(scope.since) == 40 else scope.since
    if scope.names is None:
        return f"Planned every workspace: {scope.reason.replace(scope.since, since)}."
    if not scope.names:
        return f"No workspace file changed since {since}: nothing was planned or read."
    names = sorted(scope.names)
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    n = len(names)
    one = scope.outside == 1
    others = (f"; the repo's {scope.outside} other workspace{'' if one else 's'} {'was' if one else 'were'} "
              "not read (the drift check compares them all)") if scope.outside else ""
    return f"Planned {n} workspace{'' if n == 1 else 's'}, changed since {since}: {shown}{others}."


def _no_changes(plan: Plan) -> str:
    if plan.scope is not None and plan.scope.names is not None:
        return "No changes: the cluster matches the repository for the workspaces planned."
    return "No changes: the cluster matches the repository."


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _diff_symbol(d: FieldDiff) -> str:
    if d.live is None:
        return "+"
    if d.desired is None:
        return "-"
    return "~"


def field_line(d: FieldDiff) -> str:
    """One field: ``~ path: "4" -> "8"``, ``+ path: value`` or ``- path: value`` (masked ones say so)."""
    symbol = _diff_symbol(d)
    if symbol == "+":
        text = f"+ {d.path}: {_value(d.desired)}"
    elif symbol == "-":
        text = f"- {d.path}: {_value(d.live)}"
    else:
        text = f"~ {d.path}: {_value(d.live)} -> {_value(d.desired)}"
    if d.masked:
        text += " (masked; value changed)" if d.live == d.desired else " (masked)"
    return text


def _conflict_text(change: ObjectChange) -> str:
    return f"{change.id} exists and is not managed by {MANAGED_BY}; rerun with --adopt to take it over"


def _impact_text(impact: BlockImpact) -> str:
    n = len(impact.workspaces)
    if n == 0:
        return f"{impact.kind} block {impact.name} changed: no running workspace restarts"
    who = "1 workspace restarts" if n == 1 else f"{n} workspaces restart"
    names = ", ".join(impact.workspaces)
    return f"{impact.kind} block {impact.name} changed: {who}: {names} — {_RESTART_WARNING}"


def _result_text(result: WorkspaceResult, action: Action) -> str:
    if result.errors:
        return f"failed ({len(result.errors)} error{'' if len(result.errors) == 1 else 's'})"
    if action is Action.DELETE:
        return "deleted"
    if result.ready is None:
        return "not waited for"
    if result.ready:
        return "ready"
    return f"not ready: {result.reason}" if result.reason else "not ready"


def _changed(plan: Plan) -> list[WorkspacePlan]:
    return [w for w in plan.workspaces if w.action is not Action.UNCHANGED]


# --------------------------------------------------------------------------------------------
# JSON


def _diff_json(d: FieldDiff) -> dict[str, Any]:
    out: dict[str, Any] = {"path": d.path, "live": d.live, "desired": d.desired}
    if d.masked:
        out["masked"] = True
    return out


def _workspace_json(w: WorkspacePlan, result: WorkspaceResult | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": w.name,
        "owner": w.owner,
        "action": w.action.value,
        "url": w.url,
        "credentialHint": w.credential_hint,
        "objects": [
            {
                "kind": o.id.kind,
                "name": o.id.name,
                "action": o.action.value,
                "diff": [_diff_json(d) for d in o.diff],
            }
            for o in w.objects
        ],
        "environment": w.environment,
        "compute": w.compute,
        "dataSources": list(w.data_sources),
        "state": w.state,
        "source": w.source,
        "restarts": w.restarts,
        "keptPvcs": list(w.kept_pvcs),
        "notes": list(w.notes),
        "credentialHintPowerShell": w.credential_hint_powershell,
    }
    if result is not None:
        out.update(ready=result.ready, reason=result.reason, errors=list(result.errors))
    return out


def plan_json(plan: Plan, results: Results | None = None, cost: PlanCost | None = None) -> dict[str, Any]:
    """The plan/apply JSON of docs/CLI.md#json-output (plus project, warnings, blast radius, scope, cost and
    apply results)."""
    out: dict[str, Any] = {
        "summary": plan.summary(),
        "workspaces": [_workspace_json(w, (results or {}).get(w.name)) for w in plan.workspaces],
        "project": plan.project,
        "namespace": plan.namespace,
        "warnings": list(plan.warnings),
        "blastRadius": [
            {"kind": b.kind, "name": b.name, "workspaces": list(b.workspaces)} for b in plan.blast_radius
        ],
    }
    scope = plan.scope
    out["scope"] = None if scope is None else {
        "since": scope.since,
        "workspaces": None if scope.names is None else sorted(scope.names),
        "notRead": scope.outside,
        "reason": scope.reason,
    }
    out["cost"] = None if cost is None else {
        "currency": cost.currency,
        "workspaces": [{"name": w.name, "action": w.action.value, "beforePerHour": float(w.before),
                        "afterPerHour": float(w.after)} for w in cost.workspaces],
        "totalBeforePerHour": float(cost.total_before),
        "totalAfterPerHour": float(cost.total_after),
        "totalAfterPerMonth": float(monthly(cost.total_after)),
    }
    if results is not None:
        out["applied"] = True
    return out


# --------------------------------------------------------------------------------------------
# Text (terminal)


def _field_style(d: FieldDiff) -> str:
    return {"+": "green", "-": "red", "~": "yellow"}[_diff_symbol(d)]


def _workspace_lines(w: WorkspacePlan, result: WorkspaceResult | None) -> list[Line]:
    style = _STYLE[w.action]
    about = [f"owner {w.owner}"] if w.owner else []
    if w.environment:
        about.append(f"environment {w.environment}")
    if w.compute:
        about.append(f"compute {w.compute}")
    if w.data_sources:
        about.append(f"data sources {', '.join(w.data_sources)}")
    header: Line = [(f"{_SYMBOL[w.action]} {w.action.value} ", style), (w.name, "bold")]
    if about:
        header.append((f" ({'; '.join(about)})", "dim"))
    lines: list[Line] = [header]
    for o in w.objects:
        if o.action is Action.UNCHANGED:
            continue
        if o.action is Action.CONFLICT:
            lines.append([("    ! ", _STYLE[o.action]), (_conflict_text(o), "")])
            continue
        lines.append([(f"    {_SYMBOL[o.action]} ", _STYLE[o.action]), (str(o.id), "")])
        for d in o.diff:
            lines.append([("        ", ""), (field_line(d), _field_style(d))])
    if w.action in (Action.CREATE, Action.UPDATE) and w.url:
        lines.append([("    URL: ", "dim"), (w.url, "cyan")])
    if w.action in (Action.CREATE, Action.UPDATE) and w.credential_hint:
        lines.append([("    password/token: ", "dim"), (w.credential_hint, "")])
        if w.credential_hint_powershell:
            lines.append([("    (PowerShell): ", "dim"), (w.credential_hint_powershell, "")])
    if w.action is Action.DELETE and w.url:
        lines.append([("    was: ", "dim"), (w.url, "")])
    for note in w.notes:
        lines.append([("    note: ", "dim"), (note, "yellow" if w.restarts or "lost" in note else "")])
    if result is not None:
        outcome = _result_text(result, w.action)
        lines.append(
            [("    result: ", "dim"), (outcome, "green" if outcome in ("ready", "deleted") else "red")]
        )
        for err in result.errors:
            lines.append([("    error: ", "red"), (err, "")])
    return lines


def plan_text(plan: Plan, color: bool, results: Results | None = None) -> str:
    """The plan for a terminal, terraform-like: changed workspaces, field diffs, blast radius, warnings."""
    lines: list[Line] = [
        [(f"Plan for project {plan.project} in namespace {plan.namespace}", "bold")],
        [],
    ]
    if (scoped := scope_line(plan)) is not None:
        lines += [[(scoped, "dim")], []]
    for w in _changed(plan):
        lines.extend(_workspace_lines(w, (results or {}).get(w.name)))
        lines.append([])
    if plan.blast_radius:
        lines.append([("Blast radius:", "bold")])
        lines.extend([("  ", ""), (_impact_text(b), "yellow")] for b in plan.blast_radius)
        lines.append([])
    if plan.warnings:
        lines.append([("Warnings:", "bold")])
        lines.extend([("  ! ", "yellow"), (warning, "")] for warning in plan.warnings)
        lines.append([])
    if not plan.has_changes and not plan.conflicts:
        lines.append([(_no_changes(plan), "green")])
    lines.append([(summary_line(plan), "bold")])
    return to_string(lines, color)


# --------------------------------------------------------------------------------------------
# Markdown (pull requests, job summaries)


def _diff_block(w: WorkspacePlan) -> str:
    rows: list[str] = []
    for o in w.objects:
        if o.action is Action.UNCHANGED:
            continue
        if o.action is Action.CONFLICT:
            continue
        rows.append(f"{_SYMBOL[o.action]} {o.id}")
        for d in o.diff:
            line = field_line(d)
            rows.append(f"{line[0]}   {line[2:]}")
    return fenced("\n".join(rows), "diff")


def _workspace_markdown(w: WorkspacePlan, dry_run: bool, result: WorkspaceResult | None) -> list[str]:
    out = [f"#### {code(_SYMBOL[w.action])} {w.name} — {w.action.value}", ""]
    if result is not None:
        state = _result_text(result, w.action)
        out += [f"**Result: {state}.**", ""]
        out += [f"- error: {cell(e)}" for e in result.errors]
        if result.errors:
            out.append("")
    if w.action in (Action.CREATE, Action.UPDATE):
        if w.url:
            soon = dry_run and w.action is Action.CREATE
            out += [f"Open <{w.url}>" + (" once it is ready." if soon else "."), ""]
        if w.credential_hint:
            out += ["Get the password or token with:", "", fenced(w.credential_hint, "sh"), ""]
            if w.credential_hint_powershell:
                out += ["On Windows PowerShell:", "", fenced(w.credential_hint_powershell, "powershell"), ""]
    for o in w.objects:
        if o.action is Action.CONFLICT:
            out += [f"- **{_conflict_text(o)}**"]
    if w.action is Action.CONFLICT:
        out.append("")
    for note in w.notes:
        out += [f"> **Note:** {note}", ""]
    shown = [o for o in w.objects if o.action not in (Action.UNCHANGED, Action.CONFLICT)]
    if shown:
        objects = f"{len(shown)} object{'' if len(shown) == 1 else 's'}"
        fields = f"{w.diff_count} field diff{'' if w.diff_count == 1 else 's'}"
        out += [
            f"<details><summary>Changes: {objects}, {fields}</summary>",
            "",
            _diff_block(w),
            "",
            "</details>",
            "",
        ]
    return out


def plan_markdown(
    plan: Plan,
    *,
    dry_run: bool,
    results: Results | None = None,
    commit: str | None = None,
    details_url: str | None = None,
    cost: PlanCost | None = None,
    expiring: Sequence[str] = (),
) -> str:
    """The plan (or an apply's outcome) as a pull-request comment, with its hidden marker first."""
    results = results or {}
    verb = "plan" if dry_run else "apply"
    out = [
        PLAN_MARKER if dry_run else APPLY_MARKER,
        f"### workspace-gitops {verb}: {code(plan.project)}",
        "",
    ]
    where = f"namespace {code(plan.namespace)}" + (f" at commit {code(commit[:12])}" if commit else "")
    tail = "dry run, nothing was changed" if dry_run else "applied"
    out += [f"**{summary_line(plan)}** ({where}; {tail})", ""]
    if (scoped := scope_line(plan)) is not None:
        out += [cell(scoped), ""]
    if details_url:
        out += [f"[Full run and logs]({details_url})", ""]

    changed = _changed(plan)
    if changed:
        header = "| | Workspace | Owner | Environment | Compute | URL |"
        rule = "|---|---|---|---|---|---|"
        if results:
            header, rule = header + " Ready |", rule + "---|"
        out += [header, rule]
        for w in changed:
            row = (
                f"| {code(_SYMBOL[w.action])} {w.action.value} | {code(w.name)} | {cell(w.owner)} "
                f"| {cell(w.environment)} | {cell(w.compute)} | {cell(w.url)} |"
            )
            if results:
                r = results.get(w.name)
                row += f" {cell(_result_text(r, w.action)) if r is not None else '—'} |"
            out.append(row)
        out.append("")
    elif not plan.conflicts:
        out += [_no_changes(plan), ""]

    if plan.blast_radius:
        out += ["#### Blast radius", ""]
        for b in plan.blast_radius:
            names = ", ".join(code(n) for n in b.workspaces)
            n = len(b.workspaces)
            if n == 0:
                out.append(f"- {b.kind} block {code(b.name)} changed: no running workspace restarts")
            else:
                who = "1 workspace restarts" if n == 1 else f"{n} workspaces restart"
                block = f"{b.kind} block {code(b.name)} changed"
                out.append(f"- **{block}**: {who}: {names}. {_RESTART_WARNING.capitalize()}.")
        out.append("")
    if plan.warnings:
        out += ["#### Warnings", ""]
        out += [f"- {cell(w)}" for w in plan.warnings]
        out.append("")
    if expiring:
        out += ["#### Expiry", ""]
        out += [f"- {cell(w)}" for w in expiring]
        out.append("")
    if cost is not None:
        out += cost_markdown(cost)

    for w in changed:
        out += _workspace_markdown(w, dry_run, results.get(w.name))

    unchanged = [w.name for w in plan.workspaces if w.action is Action.UNCHANGED]
    if unchanged:
        out += [
            f"<details><summary>{len(unchanged)} unchanged workspace"
            f"{'' if len(unchanged) == 1 else 's'}</summary>",
            "",
            ", ".join(code(n) for n in unchanged),
            "",
            "</details>",
            "",
        ]
    return "\n".join(out).rstrip("\n") + "\n"


def cost_markdown(cost: PlanCost) -> list[str]:
    """The plan comment's cost section: each changed workspace per running hour and per month, the totals."""
    c = cost.currency

    def both(amount: Any) -> str:
        return f"{money(amount, c)}/h, {money(monthly(amount), c)}/month"

    out = ["#### Cost", ""]
    if cost.workspaces:
        out += ["| Workspace | Change | Before | After (per running hour) | After (per month, 730 h) |",
                "|---|---|---|---|---|"]
        for w in cost.workspaces:
            state = w.state if w.action is not Action.DELETE else "deleted"
            out.append(f"| {code(w.name)} | {w.action.value} ({state}) | {money(w.before, c)}/h "
                       f"| {money(w.after, c)}/h | {money(monthly(w.after), c)} |")
        out.append("")
    delta = cost.total_after - cost.total_before
    sign = "+" if delta > 0 else ("-" if delta < 0 else "±")
    out += [f"**Project total:** {both(cost.total_before)} before; {both(cost.total_after)} after "
            f"({sign}{money(abs(delta), c)}/h, {sign}{money(abs(monthly(delta)), c)}/month). "
            "Running workspaces only: a stopped one costs nothing here.", ""]
    return out


