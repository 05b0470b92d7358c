"""The catalog of building blocks (`reconcile blocks`) and a new workspace file (`reconcile new`).

Pure: a validated `Repo` in, text out. The block names of a folder (for the JSON Schemas' editor
completion and for "unknown block" errors) are read from file stems, so they work on a repo
that does not validate yet.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.errors import ReconcileError
from reconciler.models import ComputeResource, DataSource, Environment, Repo, Workspace

BLOCK_FOLDERS: dict[str, str] = {
    "Environment": "blocks/environments",
    "ComputeResource": "blocks/compute",
    "DataSource": "blocks/data-sources",
}
_TITLES = {"Environment": "Environments", "ComputeResource": "Compute sizes", "DataSource": "Data sources"}
_JSON_KEYS = {"Environment": "environments", "ComputeResource": "compute", "DataSource": "dataSources"}
TOOLS = {"vscode": "VS Code (code-server)", "jupyterlab": "JupyterLab"}


class NewWorkspaceError(ReconcileError):
    """`reconcile new` cannot write the file (it exists, or the repo lacks a block it needs)."""


@dataclass(frozen=True)
class BlockEntry:
    """One block as users see it in the catalog."""

    kind: str
    name: str
    description: str | None
    summary: str
    """What it is, in a few words: tool and image, CPU/memory/GPU, claim and mount path."""
    used_by: list[str]
    """The workspaces that use it, sorted."""
    path: str


def block_names(root: Path) -> dict[str, list[str]]:
    """Kind -> the names of the block files in its folder (file stems), sorted."""
    names: dict[str, list[str]] = {}
    for kind, folder in BLOCK_FOLDERS.items():
        directory = root / folder
        stems = {p.stem for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()} \
            if directory.is_dir() else set()
        names[kind] = sorted(stems)
    return names


def existing_blocks_hint(kind: str, names: list[str]) -> str:
    """The tail of an "unknown block" error: what exists, or that nothing does."""
    if not names:
        return f"there are none yet: add one under {BLOCK_FOLDERS[kind]}/"
    shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    return f"existing: {shown} (`reconcile blocks` describes them)"


def catalog(repo: Repo) -> list[BlockEntry]:
    """Every block of the repo, environments first, each with the workspaces that use it."""
    users: dict[tuple[str, str], list[str]] = {}
    for w in repo.workspaces.values():
        users.setdefault(("Environment", w.spec.environment), []).append(w.name)
        users.setdefault(("ComputeResource", w.spec.compute), []).append(w.name)
        for d in dict.fromkeys(w.spec.data_sources):
            users.setdefault(("DataSource", d), []).append(w.name)
    entries: list[BlockEntry] = []
    blocks: list[tuple[str, dict[str, Any]]] = [
        ("Environment", repo.environments), ("ComputeResource", repo.compute), ("DataSource", repo.data_sources)]
    for kind, models in blocks:
        for name in sorted(models):
            block = models[name]
            entries.append(BlockEntry(kind=kind, name=name, description=block.metadata.description,
                                      summary=_summary(block), used_by=sorted(users.get((kind, name), [])),
                                      path=repo.sources.get((kind, name), f"{BLOCK_FOLDERS[kind]}/{name}.yaml")))
    return entries


def _summary(block: Environment | ComputeResource | DataSource) -> str:
    if isinstance(block, Environment):
        return f"{block.spec.tool}, image {block.spec.image}"
    if isinstance(block, ComputeResource):
        gpu = f", {block.spec.gpu} GPU" if block.spec.gpu else ""
        return f"{block.spec.cpu} CPU, {block.spec.memory} memory{gpu}"
    mode = " (read-only)" if block.spec.read_only else ""
    return f"claim {block.spec.pvc} at {block.mount_path}{mode}"


def catalog_text(entries: list[BlockEntry]) -> str:
    """The catalog for a terminal: one section per kind, one block per paragraph."""
    lines: list[str] = []
    for kind, folder in BLOCK_FOLDERS.items():
        mine = [e for e in entries if e.kind == kind]
        lines.append(f"{_TITLES[kind]} ({folder}/)")
        if not mine:
            lines.append("  (none)")
        width = max((len(e.name) for e in mine), default=0)
        for e in mine:
            used = f"used by {len(e.used_by)} workspace{'' if len(e.used_by) == 1 else 's'}"
            lines.append(f"  {e.name:<{width}}  {e.summary}; {used}")
            lines.append(f"  {'':<{width}}  {e.description or '(no description: add metadata.description)'}")
        lines.append("")
    lines.append("Start a workspace file with: reconcile new --owner LOGIN --tool vscode|jupyterlab")
    return "\n".join(lines) + "\n"


def catalog_json(entries: list[BlockEntry]) -> dict[str, list[dict[str, Any]]]:
    """The catalog as JSON: {"environments": [...], "compute": [...], "dataSources": [...]}."""
    out: dict[str, list[dict[str, Any]]] = {key: [] for key in _JSON_KEYS.values()}
    for e in entries:
        out[_JSON_KEYS[e.kind]].append({"name": e.name, "description": e.description, "summary": e.summary,
                                        "workspaces": len(e.used_by), "usedBy": e.used_by, "path": e.path})
    return out


# --- reconcile new -------------------------------------------------------------------------------

@dataclass(frozen=True)
class NewWorkspace:
    """A workspace file to write: its repo-relative path and text."""

    name: str
    path: str
    text: str


def new_workspace(repo: Repo, owner: str, tool: str, *, name: str | None = None, environment: str | None = None,
                  compute: str | None = None, data_sources: list[str] | None = None) -> NewWorkspace:
    """A workspace file for `owner` built from the project's defaults: the blocks most workspaces use.

    Environment: the one of `tool` most used (then the first by name); compute: the most used (then
    the smallest); data sources: the most common list (then every writable one)."""
    workspaces = list(repo.workspaces.values())
    env = environment or _default_environment(repo, workspaces, tool)
    if env not in repo.environments:
        raise NewWorkspaceError(f"unknown environment {env!r}; "
                                + existing_blocks_hint("Environment", sorted(repo.environments)))
    if repo.environments[env].spec.tool != tool:
        raise NewWorkspaceError(f"environment {env!r} serves {repo.environments[env].spec.tool}, not {tool}")
    size = compute or _default_compute(repo, workspaces)
    if size not in repo.compute:
        raise NewWorkspaceError(f"unknown compute size {size!r}; "
                                + existing_blocks_hint("ComputeResource", sorted(repo.compute)))
    data = data_sources if data_sources is not None else _default_data_sources(repo, workspaces)
    for d in data:
        if d not in repo.data_sources:
            raise NewWorkspaceError(f"unknown data source {d!r}; "
                                    + existing_blocks_hint("DataSource", sorted(repo.data_sources)))
    name = name or f"{owner}-{tool}"
    path = f"workspaces/{name}.yaml"
    return NewWorkspace(name=name, path=path, text=workspace_text(repo, owner, tool, name, env, size, data))


def _default_environment(repo: Repo, workspaces: list[Workspace], tool: str) -> str:
    candidates = sorted(n for n, e in repo.environments.items() if e.spec.tool == tool)
    if not candidates:
        raise NewWorkspaceError(f"no environment in blocks/environments/ serves {tool} "
                                f"({', '.join(sorted(repo.environments)) or 'there are none'})")
    used = Counter(w.spec.environment for w in workspaces)
    return min(candidates, key=lambda n: (-used[n], n))


def _default_compute(repo: Repo, workspaces: list[Workspace]) -> str:
    if not repo.compute:
        raise NewWorkspaceError("there is no compute size: add one under blocks/compute/")
    from reconciler.fields import parse_quantity

    used = Counter(w.spec.compute for w in workspaces)
    return min(repo.compute, key=lambda n: (-used[n], repo.compute[n].spec.gpu,
                                            parse_quantity(repo.compute[n].spec.cpu),
                                            parse_quantity(repo.compute[n].spec.memory), n))


def _default_data_sources(repo: Repo, workspaces: list[Workspace]) -> list[str]:
    lists = Counter(tuple(w.spec.data_sources) for w in workspaces)
    if lists:
        return list(sorted(lists.items(), key=lambda kv: (-kv[1], kv[0]))[0][0])
    return sorted(n for n, d in repo.data_sources.items() if not d.spec.read_only)


def workspace_text(repo: Repo, owner: str, tool: str, name: str, env: str, size: str, data: list[str],
                   origin: str = "`reconcile new`", state: str = "running") -> str:
    """A commented workspace file, with the schema modeline; `origin` says what wrote it."""
    def note(block: Environment | ComputeResource | DataSource) -> str:
        return block.metadata.description or _summary(block)

    prefix = f'must start with "{owner}-" (project.yaml: ownerPrefix)' if repo.project.spec.owner_prefix \
        else "also the file's name"
    workdir = (f"{repo.data_sources[data[0]].mount_path}/workspaces/{owner}" if data
               else "the image's home (no data source: work is lost on restart)")
    lines = [
        "# yaml-language-server: $schema=../schemas/workspace.json",
        f"# {owner}'s {TOOLS[tool]} workspace, written by {origin}.",
        "# `reconcile blocks` lists every environment, compute size and data source you may use here.",
        "# Merging a pull request that adds this file starts the workspace; deleting the file stops it",
        "# (data on the data sources' volumes is never deleted).",
        "apiVersion: workspaces/v1",
        "kind: Workspace",
        "metadata:",
        f"  name: {name}  # {prefix}",
        "spec:",
        f"  owner: {owner}  # your Git host login, lower-case",
        f"  environment: {env}  # {note(repo.environments[env])}",
        f"  compute: {size}  # {note(repo.compute[size])}",
    ]
    if data:
        lines.append("  dataSources:  # the first holds your working directory: " + workdir)
        lines += [f"    - {d}  # {note(repo.data_sources[d])}" for d in data]
    else:
        lines.append("  dataSources: []  # working directory: " + workdir)
    lines.append(f"  state: {state}  # running, or stopped: scaled to zero, nothing deleted")
    return "\n".join(_one_line(line) for line in lines) + "\n"


def _one_line(line: str) -> str:
    """Descriptions end up in comments: never a newline in one."""
    return " ".join(line.splitlines()).rstrip()
