"""Who may change what in a pull request (``reconcile validate --actor LOGIN``), from the Git diff.

The rule, checked on the changes between the merge-base of ``base`` and ``head`` (what the PR
would merge):

* The project's admins are ``spec.admins`` of ``project.yaml`` **at base**, so a PR cannot make
  its author an admin. An admin may change anything.
* A non-admin may add, change, rename or delete only workspace files (``workspaces/*.yaml``,
  ``*.yml``, regular files) that are theirs: the ``spec.owner`` of the new version must be the
  actor, and for a changed, renamed or deleted file so must the owner of the old version (at
  the merge-base, and at base when the file exists there too), so nobody can take over a
  workspace by rewriting its owner.
* Everything else is an allow-list refusal: any other path (``blocks/``, ``project.yaml``, the
  reconciler, CI, and equally a new ``setup.py``, ``conftest.py`` or ``sitecustomize.py`` that
  would run with the apply credentials after the merge) belongs to the platform team, and the
  message says to ask a platform admin. CODEOWNERS gives the platform team ``*`` and leaves
  ``workspaces/`` to this check.

Logins compare case-insensitively. A new file that does not parse or lacks ``spec.owner`` is left
to validation, which rejects it anyway; an old file whose owner cannot be read is an error for a
non-admin (its ownership is unknown, so only an admin may touch it).

Files are read with the loader's parser (no anchors or aliases, at most 32 levels deep, no
recursion), so a hostile file costs no more than validating it; files over 1 MiB are not read.

Trust note: the plan workflow's ``validate`` job runs this check with the reconciler of the PR's
*base* commit (a second worktree) against the head's files, so a PR that edits ``reconciler/``
cannot switch it off.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import git

from reconciler.changeset import Scope
from reconciler.errors import ConfigError, ReconcileError, ValidationFailed
from reconciler.fields import DNS1035_LABEL
from reconciler.loader import MAX_BYTES, Document, parse_document
from reconciler.validate import KIND_FOLDERS, PROJECT_FILES

WORKSPACE_DIR = "workspaces"
WORKSPACE_SUFFIXES = (".yaml", ".yml")
PROJECT_FILE = "project.yaml"
PLAN_INPUTS = (*PROJECT_FILES, *(f"{folder}/" for folder in KIND_FOLDERS if folder != WORKSPACE_DIR))
"""Files a change to which can touch every workspace: `--since` then plans them all."""
MAX_SCOPED = 100
"""More changed workspace files than this: `--since` plans every workspace (one LIST per kind is cheaper)."""
PLATFORM_DIRS = ("blocks/", "reconciler/", ".github/", "deploy/")
"""Folders named as a whole in messages (every path outside workspace files is the platform's)."""
REGULAR_FILE_MODES = (0o100644, 0o100755)
MAX_FILE_BYTES = MAX_BYTES


@dataclass(frozen=True)
class _Owner:
    login: str
    line: int
    col: int


@dataclass(frozen=True)
class Ownership:
    """What the ownership check found: errors (the PR may not be merged as is) and notices."""

    errors: list[ConfigError]
    notices: list[str]


MembershipCheck = Callable[[str, str], bool]
"""``(org/team, login) -> is a member``; raises ReconcileError when GitHub cannot say."""


def check_ownership(repo_root: Path, actor: str, base: str, head: str = "HEAD") -> list[ConfigError]:
    """The errors of :func:`review_ownership` (without team lookups)."""
    return review_ownership(repo_root, actor, base, head).errors


def review_ownership(
    repo_root: Path, actor: str, base: str, head: str = "HEAD", *, is_member: MembershipCheck | None = None
) -> Ownership:
    """Every change between the merge-base of ``base`` and ``head`` that ``actor`` may not make.

    ``repo_root`` is the config repo (it may be a sub-folder of a Git checkout); ``base`` and
    ``head`` are anything Git resolves (a SHA, ``origin/main``). Errors point at the file, at
    its ``spec.owner`` line when the new version parses. Raises ReconcileError when Git cannot
    answer (not a checkout, an unknown ref, no common history: fetch with ``fetch-depth: 0``).

    Admins are logins or GitHub teams (``org/team``); a team's members are admins only when
    ``is_member`` can ask GitHub. With no admins at base (the bootstrap), changes outside
    workspace files are left to CODEOWNERS review, with a notice, so the PR that sets the first
    admins can pass; workspace ownership is enforced as always.
    """
    actor = actor.strip()
    if not actor:
        raise ReconcileError("--actor needs a login")
    repo, prefix = _open(repo_root)
    base_commit = _commit(repo, base, "base")
    head_commit = _commit(repo, head, "head")
    merge_bases = repo.merge_base(base_commit, head_commit)
    if not merge_bases:
        raise ReconcileError(f"{base} and {head} have no common history: cannot tell what the PR changes")
    since = merge_bases[0]

    admins = _admins(base_commit, prefix)
    notices: list[str] = []
    if _is_admin(actor, admins, is_member, notices):
        return Ownership([], notices)
    ask_admin = f"a platform admin: {', '.join(admins)}" if admins else "a platform admin (project.yaml lists none)"

    check = _Check(actor=actor, ask_admin=ask_admin, base=base_commit, prefix=prefix, bootstrap=not admins)
    errors = [error for change in since.diff(head_commit) if (error := check.change(change)) is not None]
    if check.left_to_codeowners:
        paths = sorted(set(check.left_to_codeowners))
        shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        notices.append(
            f"project.yaml lists no admins yet, so changes outside workspace files ({shown}) are left to the "
            "platform team's review through CODEOWNERS; set spec.admins (GitHub logins or org/team) so that "
            "this check enforces them"
        )
    return Ownership(sorted(errors), notices)


def _is_admin(actor: str, admins: list[str], is_member: MembershipCheck | None, notices: list[str]) -> bool:
    if actor.casefold() in {a.casefold() for a in admins if "/" not in a}:
        return True
    for team in (a for a in admins if "/" in a):
        if is_member is None:
            notices.append(
                f"{team} in spec.admins is a GitHub team: its members count as admins only when the validate job "
                "has a token that can read team membership (GITHUB_TEAMS_TOKEN)"
            )
            continue
        try:
            if is_member(team, actor):
                return True
        except ReconcileError as e:
            notices.append(f"cannot tell whether {actor} is in the admin team {team}: {e}")
    return False


@dataclass(frozen=True)
class _Check:
    """The rule for one non-admin actor, applied to one diff entry at a time."""

    actor: str
    ask_admin: str
    base: Any
    prefix: PurePosixPath
    bootstrap: bool = False  # no admins at base: paths outside workspace files are CODEOWNERS' to judge
    left_to_codeowners: list[str] = field(default_factory=list)

    def change(self, change: Any) -> ConfigError | None:
        old_path = _relative(change.a_path, self.prefix) if not change.new_file else None
        new_path = _relative(change.b_path, self.prefix) if not change.deleted_file else None
        # An allow-list: every path the change touches must be a workspace file of the config repo.
        touched = [(new_path, change.b_path)] if not change.deleted_file else []
        touched += [(old_path, change.a_path)] if not change.new_file else []
        for relative, raw in touched:
            if relative is None or not _is_workspace(relative):
                shown = relative or raw
                if self.bootstrap:
                    self.left_to_codeowners.append(shown)
                    continue
                return ConfigError(
                    shown,
                    1,
                    1,
                    f"{self.actor} may not change {_area(shown)}: it belongs to the platform team "
                    f"(CODEOWNERS also requires their review; ask {self.ask_admin})",
                )
        old_is_ws = old_path is not None and _is_workspace(old_path)
        new_is_ws = new_path is not None and _is_workspace(new_path)
        if not old_is_ws and not new_is_ws:
            return None  # the bootstrap: left to CODEOWNERS
        if new_path is not None and new_is_ws and change.b_mode not in REGULAR_FILE_MODES:
            return ConfigError(
                new_path,
                1,
                1,
                f"{self.actor} may not add {new_path}: a workspace file must be a regular file, not a symlink "
                f"or submodule (ask {self.ask_admin})",
            )

        new_owner = _owner_of(change.b_blob) if new_is_ws else None
        where = (new_path if new_is_ws else old_path) or ""
        line, col = (new_owner.line, new_owner.col) if new_owner else (1, 1)

        # Every earlier version this change replaces: at the merge-base, and at base (main may
        # have moved on since the PR branched).
        previous: dict[bytes, Any] = {}
        if old_is_ws and change.a_blob is not None:
            previous[change.a_blob.binsha] = change.a_blob
        for path, is_ws in ((change.a_path, old_is_ws), (change.b_path, new_is_ws)):
            at_base = _blob(self.base, path) if is_ws and path else None
            if at_base is not None:
                previous.setdefault(at_base.binsha, at_base)
        if not old_is_ws:
            verb = "change" if previous else "add"
        else:
            verb = "delete" if not new_is_ws else ("rename" if old_path != new_path else "change")

        old_owners = [_owner_of(blob) for blob in previous.values()]
        if any(o is None for o in old_owners):
            return ConfigError(
                where,
                line,
                col,
                f"{self.actor} may not {verb} {old_path or new_path}: its current owner cannot be read "
                f"(ask {self.ask_admin})",
            )
        others = [o.login for o in old_owners if o is not None and not self.is_actor(o.login)]
        if others:
            return ConfigError(
                where,
                line,
                col,
                f"{self.actor} may not {verb} a workspace owned by {others[0]} "
                f"(ask {others[0]} or {self.ask_admin})",
            )
        if new_owner is not None and not self.is_actor(new_owner.login):
            owner = new_owner.login
            what = "add a workspace owned by" if not previous else "give a workspace to"
            return ConfigError(
                where, line, col, f"{self.actor} may not {what} {owner} (ask {owner} or {self.ask_admin})"
            )
        return None

    def is_actor(self, login: str) -> bool:
        return login.casefold() == self.actor.casefold()


def default_base(env: Mapping[str, str] | None = None) -> str | None:
    """The PR's base: the event's ``pull_request.base.sha``, else ``origin/$GITHUB_BASE_REF``, else None."""
    env = os.environ if env is None else env
    event_path = env.get("GITHUB_EVENT_PATH", "").strip()
    if event_path:
        try:
            payload = json.loads(Path(event_path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            payload = None
        pr = payload.get("pull_request") if isinstance(payload, dict) else None
        base = pr.get("base") if isinstance(pr, dict) else None
        sha = base.get("sha") if isinstance(base, dict) else None
        if isinstance(sha, str) and sha:
            return sha
    base_ref = env.get("GITHUB_BASE_REF", "").strip()
    return f"origin/{base_ref}" if base_ref else None


def added_files(repo_root: Path, base: str, head: str = "HEAD") -> set[str]:
    """The files (relative to the config repo) that ``head`` adds since its merge-base with ``base``."""
    repo, prefix = _open(repo_root)
    base_commit = _commit(repo, base, "base")
    head_commit = _commit(repo, head, "head")
    merge_bases = repo.merge_base(base_commit, head_commit)
    since = merge_bases[0] if merge_bases else base_commit
    added = set()
    for change in since.diff(head_commit):
        if change.change_type in ("A", "C") or (change.change_type == "R" and change.a_path != change.b_path):
            path = _relative(change.b_path, prefix)
            if path is not None:
                added.add(path)
    return added


def changed_scope(repo_root: Path, since: str, workspaces: Collection[str]) -> Scope:
    """Which workspaces ``reconcile --since REV`` plans: those whose files differ between ``since``
    and the working tree (committed, staged, not staged or untracked; a deleted or renamed file by
    both its names, a file's stem being its workspace's name), or every one (``names`` None, with
    the reason) when project.yaml or a block changed. ``workspaces``: the repo's, to count those
    left out. Raises ReconcileError when ``since`` cannot be resolved."""
    repo, prefix = _open(repo_root, "--since")
    commit = _commit(repo, since, "revision")
    listed = repo.git.diff("--name-only", "--no-renames", "-z", commit.hexsha, "--").split("\0")
    paths = sorted({rel for path in [*listed, *repo.untracked_files] if path
                    and (rel := _relative(path, prefix)) is not None})
    names: set[str] = set()
    for path in paths:
        if path.startswith(PLAN_INPUTS):
            return Scope(since, None, reason=f"{path} changed since {since}")
        stem = PurePosixPath(path).stem
        if _is_workspace(path) and len(stem) <= 63 and re.fullmatch(DNS1035_LABEL, stem):
            names.add(stem)  # any other stem is no workspace's (validation requires name == stem)
    if len(names) > MAX_SCOPED:
        return Scope(since, None, reason=f"{len(names)} workspace files changed since {since}")
    return Scope(since, frozenset(names), outside=len(set(workspaces) - names))


# --------------------------------------------------------------------------------------------


def _open(repo_root: Path, needs: str = "--actor") -> tuple[git.Repo, PurePosixPath]:
    try:
        repo = git.Repo(repo_root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise ReconcileError(
            f"{repo_root} is not in a Git checkout: {needs} needs the PR's history"
        ) from None
    top = Path(repo.working_tree_dir or repo_root).resolve()
    try:
        prefix = PurePosixPath(Path(repo_root).resolve().relative_to(top).as_posix())
    except ValueError:
        prefix = PurePosixPath(".")
    return repo, prefix


def _commit(repo: git.Repo, ref: str, what: str) -> Any:
    try:
        return repo.commit(ref)
    except (git.BadName, ValueError, git.GitCommandError):
        raise ReconcileError(
            f"cannot resolve the {what} {ref!r} in {repo.working_tree_dir}: fetch the full history "
            "(actions/checkout with fetch-depth: 0)"
        ) from None


def _relative(path: str | None, prefix: PurePosixPath) -> str | None:
    """``path`` (relative to the Git top-level) relative to the config repo, or None when outside it."""
    if path is None:
        return None
    if str(prefix) == ".":
        return path
    pure = PurePosixPath(path)
    try:
        return pure.relative_to(prefix).as_posix()
    except ValueError:
        return None


def _is_workspace(path: str) -> bool:
    pure = PurePosixPath(path)
    return pure.parent.as_posix() == WORKSPACE_DIR and pure.suffix in WORKSPACE_SUFFIXES


def _area(path: str) -> str:
    for directory in PLATFORM_DIRS:
        if path.startswith(directory):
            return directory
    return path


def _blob(commit: Any, path: str) -> Any | None:
    try:
        return commit.tree / path
    except KeyError:
        return None


def _document(blob: Any, path: str) -> Document | None:
    """The blob parsed by the loader (its size, depth, alias and tag limits), or None when it does not parse."""
    if blob is None or blob.size > MAX_FILE_BYTES:
        return None
    try:
        return parse_document(blob.data_stream.read(), path)
    except ValidationFailed:
        return None


def _owner_of(blob: Any) -> _Owner | None:
    doc = _document(blob, blob.path if blob is not None else "")
    spec = doc.data.get("spec") if doc is not None else None
    owner = spec.get("owner") if isinstance(spec, dict) else None
    if doc is None or not isinstance(owner, str) or not owner.strip():
        return None
    line, col = doc.position(("spec", "owner"))
    return _Owner(owner.strip(), line, col)


def _admins(base: Any, prefix: PurePosixPath) -> list[str]:
    path = PROJECT_FILE if str(prefix) == "." else (prefix / PROJECT_FILE).as_posix()
    doc = _document(_blob(base, path), path)
    spec = doc.data.get("spec") if doc is not None else None
    admins = spec.get("admins") if isinstance(spec, dict) else None
    if not isinstance(admins, list):
        return []
    return [item.strip() for item in admins if isinstance(item, str) and item.strip()]
