"""Lifecycle decisions, written back to Git as pull requests: idle workspaces stopped, expired ones torn down. Pure.

Data in (the repo, each workspace's last activity, the lifecycle pull requests that exist, the
time), decisions out (which pull request to open, update or close, with its files and text).
Nothing here reads a clock, the cluster or GitHub: `proposals.py` does, and passes them in.

One pull request per owner and kind (``idle``: sets ``state: stopped``; ``expired``: deletes
the file), on the branch ``lifecycle/<kind>-<owner>``. Its body starts with a hidden marker that
records what it proposed::

    <!-- workspace-gitops:lifecycle {"kind": "idle", "owner": "jane-doe",
         "workspaces": {"jane-doe-vscode": "2026-12-01T22:10:00Z"}} -->

(for ``idle`` the last activity each workspace had when proposed, for ``expired`` its expiry
date). That marker is the memory: a pull request of ours that was closed without merging means
"keep them", so a workspace it names is not proposed again while its last activity is still the
recorded one (idle), or while its expiry date is still the recorded one (expired). Used again,
then idle again, it gets a new pull request.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from reconciler.errors import ConfigError
from reconciler.fields import duration_seconds
from reconciler.loader import parse_document
from reconciler.models import Repo, Workspace

MARKER_PREFIX = "<!-- workspace-gitops:lifecycle "
BRANCH_PREFIX = "lifecycle/"
Kind = Literal["idle", "expired"]
KINDS: tuple[Kind, ...] = ("expired", "idle")
_MARKER_RE = re.compile(r"<!-- workspace-gitops:lifecycle (\{.*?\}) -->", re.S)
_TOLERANCE = dt.timedelta(seconds=1)


@dataclass(frozen=True)
class Activity:
    """The last user activity of a running workspace, as its IDE reports it."""

    name: str
    last_active: dt.datetime | None
    """None: unknown (the IDE did not answer); `error` says why."""
    source: str = ""
    error: str = ""


@dataclass(frozen=True)
class LifecyclePull:
    """A lifecycle pull request of ours as GitHub holds it, with what its marker recorded."""

    number: int
    kind: Kind
    owner: str
    workspaces: dict[str, str]
    state: str  # "open" | "closed"
    merged: bool
    url: str = ""

    @property
    def declined(self) -> bool:
        """Closed without merging: its owner (or an admin) chose to keep the workspaces."""
        return self.state == "closed" and not self.merged


@dataclass(frozen=True)
class FileChange:
    """One file of a pull request's branch: its new text, or None to delete it."""

    path: str
    text: str | None


@dataclass
class Proposal:
    """What one owner's pull request of one kind should be after this run."""

    kind: Kind
    owner: str
    workspaces: dict[str, str]
    """name -> the recorded value (last activity, ISO 8601 UTC; or the expiry date)."""
    action: Literal["open", "update", "close", "keep"]
    pull: LifecyclePull | None = None
    title: str = ""
    body: str = ""
    files: list[FileChange] = field(default_factory=list)

    @property
    def branch(self) -> str:
        """`lifecycle/<kind>-<owner>`."""
        return branch_name(self.kind, self.owner)


@dataclass
class LifecyclePlan:
    """Everything one lifecycle run decided, and why some workspaces were left alone."""

    proposals: list[Proposal]
    warnings: list[str]
    remembered: list[str]
    unknown: list[str]


def branch_name(kind: Kind, owner: str) -> str:
    """The branch of an owner's pull request of one kind."""
    return f"{BRANCH_PREFIX}{kind}-{owner}"


def parse_marker(body: object) -> dict[str, Any] | None:
    """The record in a pull request body's lifecycle marker, or None when it has none (or a broken one)."""
    if not isinstance(body, str):
        return None
    match = _MARKER_RE.search(body)
    if match is None:
        return None
    try:
        data = json.loads(match.group(1))
    except ValueError:
        return None
    if (
        not isinstance(data, dict)
        or data.get("kind") not in KINDS
        or not isinstance(data.get("owner"), str)
        or not isinstance(data.get("workspaces"), dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in data["workspaces"].items())
    ):
        return None
    return data


def marker(kind: Kind, owner: str, workspaces: Mapping[str, str]) -> str:
    """The hidden first line of a lifecycle pull request's body."""
    record = {"kind": kind, "owner": owner, "workspaces": dict(sorted(workspaces.items()))}
    return f"{MARKER_PREFIX}{json.dumps(record, sort_keys=True)} -->"


def iso(moment: dt.datetime) -> str:
    """`2026-12-01T22:10:00Z` (UTC, whole seconds)."""
    return moment.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> dt.datetime | None:
    """The inverse of :func:`iso` (any ISO 8601 with a zone); None when it is not one."""
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def idle_for(activity: Activity | None, now: dt.datetime) -> dt.timedelta | None:
    """How long a workspace has been idle at `now`; None when unknown."""
    if activity is None or activity.last_active is None:
        return None
    return max(now - activity.last_active, dt.timedelta(0))


def human(delta: dt.timedelta) -> str:
    """`3d 4h`, `9h 5m`, `12m`: the two largest units."""
    seconds = int(delta.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2]) or f"{seconds}s"


def expired(workspace: Workspace, today: dt.date) -> bool:
    """True from the day of `spec.expires` on."""
    return workspace.spec.expires is not None and workspace.spec.expires <= today


def decide(
    repo: Repo,
    activity: Mapping[str, Activity],
    pulls: Sequence[LifecyclePull],
    now: dt.datetime,
    files: Mapping[str, str],
) -> LifecyclePlan:
    """The lifecycle pull requests this run opens, updates or closes.

    `activity`: the running workspaces' last activity (by name); a running workspace missing from
    it, or without a time, is never proposed for stopping. `pulls`: every lifecycle pull request of
    ours. `files`: the text of each workspace file (repo-relative path -> text) on the base branch.
    """
    today = now.astimezone(dt.UTC).date()
    idle = repo.project.spec.idle
    stop_after = dt.timedelta(seconds=duration_seconds(idle.stop_after)) if idle else None
    warn_after = dt.timedelta(seconds=duration_seconds(idle.warn_after)) if idle and idle.warn_after else None
    wanted: dict[tuple[Kind, str], dict[str, str]] = {}
    warnings: list[str] = []
    remembered: list[str] = []
    unknown: list[str] = []

    def declined(kind: Kind, name: str, value: str) -> bool:
        for pull in pulls:
            if pull.kind != kind or not pull.declined or name not in pull.workspaces:
                continue
            if kind == "expired" and pull.workspaces[name] == value:
                return True
            if kind == "idle":
                recorded, current = parse_iso(pull.workspaces[name]), parse_iso(value)
                if recorded is not None and current is not None and current <= recorded + _TOLERANCE:
                    return True
        return False

    for name in sorted(repo.workspaces):
        workspace = repo.workspaces[name]
        owner = workspace.spec.owner
        if expired(workspace, today):
            value = workspace.spec.expires.isoformat() if workspace.spec.expires else ""
            if declined("expired", name, value):
                remembered.append(f"{name}: its teardown (expired {value}) was declined; extend or remove spec.expires")
            else:
                wanted.setdefault(("expired", owner), {})[name] = value
            continue
        if stop_after is None or workspace.spec.state != "running":
            continue
        seen = activity.get(name)
        idle_time = idle_for(seen, now)
        if seen is None or seen.last_active is None or idle_time is None:
            why = seen.error if seen is not None and seen.error else "no activity reading"
            unknown.append(f"{name}: last activity unknown ({why}): not judged idle")
            continue
        if idle_time >= stop_after:
            value = iso(seen.last_active)
            if declined("idle", name, value):
                remembered.append(f"{name}: its stop was declined and it has not been used since {value}")
            else:
                wanted.setdefault(("idle", owner), {})[name] = value
        elif warn_after is not None and idle_time >= warn_after:
            at = iso(seen.last_active + stop_after)
            warnings.append(f"{name} ({owner}) idle for {human(idle_time)}: a pull request stops it from {at}")

    warnings += [w for w in expiry_warnings(repo, today) if " expires on " in w]
    proposals: list[Proposal] = []
    open_pulls = {(p.kind, p.owner): p for p in sorted(pulls, key=lambda p: -p.number) if p.state == "open"}
    for key in sorted(set(wanted) | set(open_pulls)):
        kind, owner = key
        names = wanted.get(key, {})
        pull = open_pulls.get(key)
        if not names:
            assert pull is not None
            proposals.append(Proposal(kind, owner, {}, "close", pull, body=closing_comment(kind, pull.workspaces)))
            continue
        proposal = Proposal(kind, owner, names, "open" if pull is None else "update", pull)
        proposal.title = title(kind, owner, names)
        proposal.body = body(kind, owner, names, repo, activity, now)
        proposal.files = [change(kind, repo.sources[("Workspace", n)], files) for n in sorted(names)]
        if pull is not None and pull.workspaces == names:
            proposal.action = "keep"
        proposals.append(proposal)
    return LifecyclePlan(proposals, warnings, remembered, unknown)


def change(kind: Kind, path: str, files: Mapping[str, str]) -> FileChange:
    """The file change of one workspace: `state: stopped` (idle) or the file deleted (expired)."""
    if kind == "expired":
        return FileChange(path, None)
    return FileChange(path, set_stopped(files[path], path))


def title(kind: Kind, owner: str, names: Mapping[str, str]) -> str:
    """The pull request's title."""
    listed = ", ".join(sorted(names))
    if kind == "idle":
        return f"Stop idle workspace{'s' if len(names) > 1 else ''} of {owner}: {listed}"
    return f"Tear down expired workspace{'s' if len(names) > 1 else ''} of {owner}: {listed}"


def body(
    kind: Kind, owner: str, names: Mapping[str, str], repo: Repo, activity: Mapping[str, Activity], now: dt.datetime
) -> str:
    """The pull request's body: the marker, the owner mentioned, what merging and closing do."""
    out = [marker(kind, owner, names), ""]
    if kind == "idle":
        idle = repo.project.spec.idle
        limit = idle.stop_after if idle else "?"
        out += [
            f"@{owner}: nobody has used {'these workspaces' if len(names) > 1 else 'this workspace'} for longer "
            f"than the project's idle limit ({limit}), so this pull request stops "
            f"{'them' if len(names) > 1 else 'it'} (`state: stopped`).",
            "",
            "| Workspace | Last active (UTC) | Idle for |",
            "|---|---|---|",
        ]
        for name in sorted(names):
            seen = activity.get(name)
            since = idle_for(seen, now)
            when = names[name].replace("T", " ").replace("Z", "")
            out.append(f"| `{name}` | {when} | {human(since) if since is not None else '?'} |")
        out += [
            "",
            "**Merging** stops them through the normal apply: each is scaled to zero. Stopping keeps everything "
            "on the volume: the files on its data sources (PVCs) stay as they are, and the Service, the Ingress "
            "and the URL stay too. What stops is the running server: open terminals, kernels and unsaved editor "
            "state. To start one again, set `state: running` in its file.",
            "",
            "**Closing** this pull request keeps them running, and is remembered: no new pull request for a "
            "workspace until it has been used again and then idle again.",
            "",
            "A workspace used again before this is merged is dropped from it by the next lifecycle run.",
        ]
    else:
        out += [
            f"@{owner}: {'these workspaces' if len(names) > 1 else 'this workspace'} reached "
            f"{'their' if len(names) > 1 else 'its'} expiry date (`spec.expires`), so this pull request tears "
            f"{'them' if len(names) > 1 else 'it'} down (the file is deleted).",
            "",
            "| Workspace | Expired on |",
            "|---|---|",
        ]
        out += [f"| `{name}` | {names[name]} |" for name in sorted(names)]
        out += [
            "",
            "**Merging** removes the Deployment, the Service and the Ingress through the normal apply. The data "
            "is kept: the PVCs of the data sources are never deleted, and your folder on them stays as it is.",
            "",
            "**Closing** this pull request keeps them, and is remembered while the expiry date stays the same: to "
            "keep a workspace, set a later `spec.expires` (or remove it) in its file.",
        ]
    return "\n".join(out) + "\n"


def closing_comment(kind: Kind, names: Mapping[str, str]) -> str:
    """Why the lifecycle run closes its own pull request."""
    listed = ", ".join(f"`{n}`" for n in sorted(names)) or "its workspaces"
    if kind == "idle":
        return f"Closed by the lifecycle run: {listed} {'were' if len(names) > 1 else 'was'} used again."
    return f"Closed by the lifecycle run: {listed} no longer expired (the expiry date changed or the file is gone)."


def set_stopped(text: str, path: str) -> str:
    """A workspace file's text with `spec.state: stopped`, everything else (comments too) as it was."""
    doc = parse_document(text.encode("utf-8"), path)
    lines = text.splitlines(keepends=True)
    edited: str | None = None
    if ("spec", "state") in doc.positions:
        line, col = doc.positions[("spec", "state")]
        current = lines[line - 1]
        match = re.match(r"(state\s*:\s*)(\"[^\"]*\"|'[^']*'|[A-Za-z]+)", current[col - 1 :])
        if match is not None:
            start = col - 1 + len(match.group(1))
            lines[line - 1] = current[:start] + "stopped" + current[start + len(match.group(2)) :]
            edited = "".join(lines)
    elif ("spec", "owner") in doc.positions:
        line, col = doc.positions[("spec", "owner")]
        indent = lines[line - 1][: col - 1]
        if indent.strip() == "":
            lines.insert(line - 1, f"{indent}state: stopped\n")
            edited = "".join(lines)
    expected = dict(doc.data, spec={**doc.data.get("spec", {}), "state": "stopped"})
    if edited is not None and parse_document(edited.encode("utf-8"), path).data == expected:
        return edited
    # A layout the line edit does not handle (flow style, say): the same data, comments lost.
    return str(yaml.safe_dump(expected, sort_keys=False, default_flow_style=False))


def expiry_warnings(repo: Repo, today: dt.date, names: Iterable[str] | None = None) -> list[str]:
    """One line per workspace (of `names`, default all) that expires within the project's warning days."""
    days = repo.project.spec.expiry.warn_days
    out = []
    for name in sorted(repo.workspaces if names is None else names):
        workspace = repo.workspaces.get(name)
        expires = workspace.spec.expires if workspace is not None else None
        if expires is None:
            continue
        left = (expires - today).days
        if left < 0 or left == 0:
            out.append(f"{name} expired on {expires.isoformat()}: the lifecycle run proposes its teardown "
                       "(the PVC is kept)")
        elif left <= days:
            out.append(f"{name} expires on {expires.isoformat()} (in {left} day{'s' if left > 1 else ''}): "
                       "then the lifecycle run proposes its teardown (the PVC is kept); set a later "
                       "spec.expires to keep it")
    return out


def expiry_errors(repo: Repo, today: dt.date, new_paths: Iterable[str] = (),
                  texts: Mapping[str, str] | None = None) -> list[ConfigError]:
    """Expiry dates validation refuses: in the past on a new workspace file, or beyond the project's maxDays."""
    new = set(new_paths)
    max_days = repo.project.spec.expiry.max_days
    errors = []
    for name in sorted(repo.workspaces):
        expires = repo.workspaces[name].spec.expires
        if expires is None:
            continue
        path = repo.sources[("Workspace", name)]
        problems = []
        if path in new and expires < today:
            problems.append(f"expires {expires.isoformat()} is in the past (today is {today.isoformat()}): "
                            "a new workspace needs a future date")
        if max_days is not None and (expires - today).days > max_days:
            latest = today + dt.timedelta(days=max_days)
            problems.append(f"expires {expires.isoformat()} is more than {max_days} days ahead (project.yaml "
                            f"expiry.maxDays): use {latest.isoformat()} or earlier")
        if not problems:
            continue
        text = texts.get(path) if texts is not None else (repo.root / path).read_text(encoding="utf-8")
        doc = parse_document((text or "").encode("utf-8"), path)
        errors += [doc.error(("spec", "expires"), p) for p in problems]
    return errors


def code_server_heartbeat(raw: bytes) -> dt.datetime | None:
    """code-server's `/healthz`: `{"status": "alive", "lastHeartbeat": <ms since the epoch, 0: never>}`."""
    data = json.loads(raw)
    beat = data.get("lastHeartbeat") if isinstance(data, dict) else None
    if not isinstance(beat, int | float) or isinstance(beat, bool):
        raise ValueError("no lastHeartbeat")
    return dt.datetime.fromtimestamp(beat / 1000, dt.UTC) if beat > 0 else None


def jupyter_last_activity(raw: bytes) -> dt.datetime | None:
    """jupyter_server's `/metrics` (Prometheus text): `jupyter_server_last_activity_timestamp_seconds <s>`."""
    for line in raw.decode("utf-8", "replace").splitlines():
        name, _, value = line.partition(" ")
        if name == "jupyter_server_last_activity_timestamp_seconds":
            seconds = float(value.strip())
            return dt.datetime.fromtimestamp(seconds, dt.UTC) if seconds > 0 else None
    raise ValueError("no jupyter_server_last_activity_timestamp_seconds")
