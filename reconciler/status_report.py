"""The live status of a project's workspaces as text (rich), JSON (docs/CLI.md#json-output) and Markdown.

Pure: renders the `StatusRow`s that `status.py` assembled (state, URL, credential hint, LAST ACTIVE)
and the cost totals it computed; never reads the cluster itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.markup import Line, cell, code, to_string
from reconciler.plan import StatusRow

_STATE_STYLE = {
    "ready": "green",
    "not ready": "red",
    "missing": "yellow",
    "orphaned": "magenta",
    "stopped": "dim",
}
_STATES = ("ready", "not ready", "stopped", "missing", "orphaned")


def _status_summary(rows: Sequence[StatusRow]) -> dict[str, int]:
    counts = dict.fromkeys(_STATES, 0)
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    return counts


def _status_summary_line(rows: Sequence[StatusRow]) -> str:
    counts = _status_summary(rows)
    parts = [f"{counts[s]} {s}" for s in _STATES if counts[s]]
    return f"{len(rows)} workspace{'' if len(rows) == 1 else 's'}" + (
        f": {', '.join(parts)}" if parts else ""
    )


def status_json(rows: Sequence[StatusRow], cost: dict[str, Any] | None = None) -> dict[str, Any]:
    """``reconcile status --output json``: each workspace's state, URL and hint; counts per state."""
    return {
        "summary": _status_summary(rows),
        "workspaces": [
            {
                "name": r.name,
                "owner": r.owner,
                "state": r.state,
                "url": r.url,
                "credentialHint": r.credential_hint,
                "age": r.age,
                "reason": r.reason,
                "credentialHintPowerShell": r.credential_hint_powershell,
                "lastActive": r.last_active or None,
            }
            for r in rows
        ],
        **({"cost": cost} if cost is not None else {}),
    }


def status_text(rows: Sequence[StatusRow], color: bool, last_active: Mapping[str, str] | None = None,
                cost_line: str | None = None) -> str:
    """A table for a terminal; each workspace's credential command or reason on the line below it.

    `last_active`: the LAST ACTIVE column as shown (e.g. "5m ago"), by name; `cost_line`: the totals."""
    columns = [("NAME", [r.name for r in rows]), ("OWNER", [r.owner or "-" for r in rows])]
    columns += [("STATE", [r.state for r in rows]), ("AGE", [r.age or "-" for r in rows])]
    if last_active is not None:
        columns.append(("LAST ACTIVE", [last_active.get(r.name) or "-" for r in rows]))
    widths = [max([len(title), *(len(v) for v in values)]) for title, values in columns]

    def cells(values: Sequence[str], styles: Sequence[str]) -> Line:
        line: Line = []
        for value, width, style in zip(values, widths, styles, strict=True):
            line += [(value, style), (" " * (width - len(value) + 2), "")]
        return line

    lines: list[Line] = [cells([t for t, _ in columns], ["bold"] * len(columns)) + [("URL", "bold")]]
    for i, r in enumerate(rows):
        styles = ["bold", "", _STATE_STYLE.get(r.state, ""), "dim", "dim"][: len(columns)]
        lines.append(
            cells([values[i] for _, values in columns], styles)
            + [(r.url or "-", "cyan" if r.url else "")]
        )
        if r.reason:
            lines.append([("  reason: ", "dim"), (r.reason, _STATE_STYLE.get(r.state, ""))])
        if r.credential_hint and r.state in ("ready", "not ready"):
            lines.append([("  password/token: ", "dim"), (r.credential_hint, "")])
            if r.credential_hint_powershell:
                lines.append([("  (PowerShell): ", "dim"), (r.credential_hint_powershell, "")])
    lines += [[], [(_status_summary_line(rows), "bold")]]
    if cost_line:
        lines.append([(cost_line, "")])
    return to_string(lines, color)


def status_markdown(rows: Sequence[StatusRow], cost_line: str | None = None) -> str:
    """The status as a Markdown table (for a job summary), then `cost_line` (the totals) when given.

    LAST ACTIVE is the moment itself (UTC), not "5m ago": a job summary is read long after it was written."""
    out = [
        f"### workspace-gitops status ({_status_summary_line(rows)})",
        "",
        "| State | Workspace | Owner | Age | Last active (UTC) | URL | Password/token, or why |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        detail = r.reason
        if r.credential_hint and r.state in ("ready", "not ready"):
            hint = code(r.credential_hint).replace("|", "\\|")
            if r.credential_hint_powershell:
                hint += "<br>PowerShell: " + code(r.credential_hint_powershell).replace("|", "\\|")
            detail = f"{hint}; {cell(r.reason)}" if r.reason else hint
        else:
            detail = cell(detail)
        last_active = r.last_active.replace("T", " ").replace("Z", "")
        out.append(
            f"| {r.state} | {code(r.name)} | {cell(r.owner)} | {cell(r.age)} | {cell(last_active)} | {cell(r.url)} "
            f"| {detail} |"
        )
    if cost_line:
        out += ["", cost_line]
    return "\n".join(out) + "\n"
