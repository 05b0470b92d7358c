"""Read every file of a repo, collect every error, and resolve the blocks: `load_repo`."""

from __future__ import annotations

import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from reconciler.errors import ConfigError, ValidationFailed, quote
from reconciler.fields import format_quantity, parse_quantity
from reconciler.loader import Document, load_document, read_git_commit
from reconciler.models import (
    API_VERSION,
    KIND_MODELS,
    ComputeResource,
    DataSource,
    Environment,
    FileKind,
    Project,
    Repo,
    Workspace,
)
from reconciler.placement import gpu_text, is_fraction, memory_with_shm

KIND_FOLDERS: dict[str, str] = {
    "workspaces": "Workspace",
    "blocks/environments": "Environment",
    "blocks/compute": "ComputeResource",
    "blocks/data-sources": "DataSource",
}
"""Which kind each folder holds; files elsewhere are not read."""

PROJECT_FILES = ("project.yaml", "project.yml")
SUFFIXES = (".yaml", ".yml")
HOST_LABEL_MAX = 63

_OUTSIDE = "symlink points outside the repository; not read"
_FOLDER_OF = {kind: folder for folder, kind in KIND_FOLDERS.items()}
_REFERENCE_FIELDS = (("environment", "Environment"), ("compute", "ComputeResource"))


def load_repo(root: Path) -> Repo:
    """Read and validate every file under `root`; raises `ValidationFailed` carrying every error."""
    return _RepoReader(root).read()


@dataclass
class _Loaded:
    """The files of one kind that validated, and the names of those that did not."""

    models: dict[str, FileKind] = field(default_factory=dict)
    docs: dict[str, Document] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)


class _RepoReader:
    def __init__(self, root: Path) -> None:
        self.root = root.absolute()
        self.real_root = Path(os.path.realpath(self.root))
        self.errors: list[ConfigError] = []
        self.loaded: dict[str, _Loaded] = {kind: _Loaded() for kind in KIND_MODELS}

    def read(self) -> Repo:
        if not self.real_root.is_dir():
            raise ValidationFailed([ConfigError(".", 1, 1, f"{self.root} is not a directory")])
        self._read_project()
        for folder, kind in KIND_FOLDERS.items():
            self._read_folder(folder, kind)
        project = self.loaded["Project"].models.get("")
        workspaces = _typed(self.loaded["Workspace"].models, Workspace)
        for name, workspace in workspaces.items():
            self._check_workspace(self.loaded["Workspace"].docs[name], workspace, project)
        if isinstance(project, Project):
            self._check_compute_placement(project)
            self._check_quota(project)
            self._check_backend(project)
        if self.errors:
            raise ValidationFailed(self.errors)
        assert isinstance(project, Project)
        return Repo(
            root=self.root,
            project=project,
            environments=_typed(self.loaded["Environment"].models, Environment),
            compute=_typed(self.loaded["ComputeResource"].models, ComputeResource),
            data_sources=_typed(self.loaded["DataSource"].models, DataSource),
            workspaces=workspaces,
            sources={
                (kind, name): doc.path
                for kind, loaded in self.loaded.items()
                for name, doc in loaded.docs.items()
                if kind != "Project"
            }
            | {("Project", project.name): self.loaded["Project"].docs[""].path},
            commit=read_git_commit(self.root),
        )

    # -- reading -------------------------------------------------------------------------

    def _read_project(self) -> None:
        found = [name for name in PROJECT_FILES if os.path.lexists(self.root / name)]
        if not found:
            self.errors.append(
                ConfigError("project.yaml", 1, 1, "missing project.yaml (the project: namespace, domain, quota)")
            )
            return
        for name in found[1:]:
            self.errors.append(ConfigError(name, 1, 1, f"duplicate project file: {found[0]} is used"))
        path = self.root / found[0]
        if not self._inside(path):
            self.errors.append(ConfigError(found[0], 1, 1, _OUTSIDE))
            return
        doc = self._load(path, found[0])
        if doc is not None:
            model = self._validate(doc, "Project", folder=None)
            if model is not None:
                self.loaded["Project"].models[""] = model
                self.loaded["Project"].docs[""] = doc

    def _read_folder(self, folder: str, kind: str) -> None:
        directory = self.root / folder
        if not os.path.lexists(directory):
            return
        if not self._inside(directory):
            self.errors.append(ConfigError(folder, 1, 1, _OUTSIDE))
            return
        if not directory.is_dir():
            return
        try:
            entries = sorted(
                (entry.name, entry.is_symlink())
                for entry in os.scandir(directory)
                if entry.name.endswith(SUFFIXES) and not entry.name.startswith(".")
            )
        except OSError as exc:
            self.errors.append(ConfigError(folder, 1, 1, f"cannot list folder: {exc.strerror or exc}"))
            return
        loaded = self.loaded[kind]
        for name, is_symlink in entries:
            rel = f"{folder}/{_printable(name)}"
            path = directory / name
            stem = name.rsplit(".", 1)[0]
            if is_symlink and not self._inside(path):
                self.errors.append(ConfigError(rel, 1, 1, _OUTSIDE))
                loaded.broken.add(stem)
                continue
            if os.path.isdir(path):
                continue
            doc = self._load(path, rel)
            model = self._validate(doc, kind, folder) if doc is not None else None
            if doc is None or model is None:
                loaded.broken.add(stem)
                continue
            if model.name != stem:
                line, col = doc.position(("metadata", "name"))
                self.errors.append(
                    ConfigError(
                        rel,
                        line,
                        col,
                        f"metadata.name {model.name!r} does not match the file name {name!r} "
                        f"(the file must be {model.name}.yaml)",
                    )
                )
                loaded.broken.add(stem)
                continue
            if model.name in loaded.docs:
                line, col = doc.position(("metadata", "name"))
                self.errors.append(
                    ConfigError(
                        rel,
                        line,
                        col,
                        f"duplicate {kind} {model.name!r}: already defined in {loaded.docs[model.name].path}",
                    )
                )
                continue
            loaded.models[model.name] = model
            loaded.docs[model.name] = doc

    def _inside(self, path: Path) -> bool:
        """Whether `path`, with every symlink resolved, stays inside the repository."""
        return Path(os.path.realpath(path)).is_relative_to(self.real_root)

    def _load(self, path: Path, rel: str) -> Document | None:
        try:
            return load_document(path, rel)
        except ValidationFailed as failed:
            self.errors.extend(failed.errors)
            return None

    def _validate(self, doc: Document, kind: str, folder: str | None) -> FileKind | None:
        data = doc.data
        where = f"in {folder}/" if folder else "in project.yaml"
        wrong = False
        if "apiVersion" in data and data["apiVersion"] != API_VERSION:
            wrong = True
            got = quote(data["apiVersion"])
            self.errors.append(doc.error(("apiVersion",), f"apiVersion must be {API_VERSION!r} (got {got})"))
        if "kind" in data and data["kind"] != kind:
            wrong = True
            self.errors.append(
                doc.error(("kind",), f"kind must be {kind!r} for a file {where} (got {quote(data['kind'])})")
            )
        if wrong:
            return None  # the rest would be judged against the wrong model: noise
        model = KIND_MODELS[kind]
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                self.errors.append(doc.error(error["loc"], describe_error(error, model)))
            return None

    # -- cross-file rules ----------------------------------------------------------------

    def _check_workspace(self, doc: Document, workspace: Workspace, project: FileKind | None) -> None:
        spec = workspace.spec
        for field_name, kind in _REFERENCE_FIELDS:
            ref = getattr(spec, field_name)
            self._check_reference(doc, ("spec", field_name), kind, ref)
        mounts: dict[str, str] = {}
        seen: set[str] = set()
        for index, name in enumerate(spec.data_sources):
            loc = ("spec", "dataSources", index)
            if name in seen:
                self.errors.append(doc.error(loc, f"data source {name!r} is listed twice"))
                continue
            seen.add(name)
            if not self._check_reference(doc, loc, "DataSource", name):
                continue
            source = self.loaded["DataSource"].models[name]
            assert isinstance(source, DataSource)
            if index == 0 and source.spec.read_only:
                self.errors.append(
                    doc.error(
                        loc,
                        f"data source {name!r} is readOnly but comes first, and the first data source "
                        f"holds the working directory ({source.mount_path}/workspaces/{spec.owner}): "
                        "list a writable one first",
                    )
                )
            path = source.mount_path.rstrip("/")
            if path in mounts:
                self.errors.append(
                    doc.error(loc, f"data sources {mounts[path]!r} and {name!r} are both mounted at {path!r}")
                )
            mounts[path] = name
        environment = self.loaded["Environment"].models.get(spec.environment)
        if isinstance(environment, Environment) and spec.data_sources and environment.spec.home_dir in mounts:
            home = environment.spec.home_dir
            self.errors.append(
                doc.error(
                    ("spec", "dataSources"),
                    f"data source {mounts[home]!r} is mounted at {home!r}, where environment "
                    f"{environment.name!r} keeps the home on the volume: mount it elsewhere, or set the "
                    "environment's home",
                )
            )
        if isinstance(environment, Environment) and environment.spec.vscode:
            for vsix in (e for e in environment.spec.vscode.extensions if e.startswith("/")):
                if not any(vsix.startswith(f"{path}/") for path in mounts):
                    where = ", ".join(sorted(mounts)) or "none"
                    self.errors.append(
                        doc.error(
                            ("spec", "environment"),
                            f"environment {environment.name!r} installs {vsix}, which is on none of this "
                            f"workspace's data sources (mounted at: {where}): list the data source that holds it",
                        )
                    )
        if not isinstance(project, Project):
            return
        if project.spec.owner_prefix and not workspace.name.startswith(f"{spec.owner}-"):
            self.errors.append(
                doc.error(
                    ("metadata", "name"),
                    f"workspace name {workspace.name!r} must start with its owner's name "
                    f"'{spec.owner}-' (project.yaml sets ownerPrefix: true)",
                )
            )
        label = f"{project.name}-{workspace.name}"
        if len(label) > HOST_LABEL_MAX:
            self.errors.append(
                doc.error(
                    ("metadata", "name"),
                    f"URL host label {label!r} is {len(label)} characters long, more than {HOST_LABEL_MAX}: "
                    f"shorten the workspace name to at most {HOST_LABEL_MAX - len(project.name) - 1} "
                    "characters",
                )
            )
        elif len(f"{label}.{project.spec.domain}") > 253:
            self.errors.append(
                doc.error(("metadata", "name"), f"URL host {label}.{project.spec.domain} is longer than 253")
            )

    def _check_reference(self, doc: Document, loc: tuple[str | int, ...], kind: str, name: str) -> bool:
        loaded = self.loaded[kind]
        if name in loaded.models:
            return True
        if name not in loaded.broken:  # a broken block file was reported already: no cascade
            folder = _FOLDER_OF[kind]
            message = f"unknown {_KIND_WORDS[kind]} {name!r} (no {folder}/{name}.yaml)"
            close = difflib.get_close_matches(name, sorted(loaded.models) + sorted(loaded.broken), n=1)
            if close:
                message += f"; did you mean {close[0]!r}?"
            else:
                from reconciler.catalog import existing_blocks_hint

                message += "; " + existing_blocks_hint(kind, sorted(loaded.models))
            self.errors.append(doc.error(loc, message))
        return False

    def _check_backend(self, project: Project) -> None:
        """backend: runai needs its spec.runai."""
        if project.spec.backend == "runai" and project.spec.runai is None:
            self.errors.append(self.loaded["Project"].docs[""].error(
                ("spec", "backend"), "backend: runai needs spec.runai: {url: https://..., cluster: ..., project: ...}"))

    def _check_compute_placement(self, project: Project) -> None:
        """A GPU fraction needs the Run:ai scheduler; a node pool must be one project.yaml names."""
        for priced in sorted(project.spec.prices.gpu_by_pool if project.spec.prices else {}):
            if priced not in project.spec.node_pools:
                self.errors.append(self.loaded["Project"].docs[""].error(
                    ("spec", "prices", "gpuByPool", priced),
                    f"prices.gpuByPool names {priced!r}, which is not one of spec.nodePools"))
        for name, compute in _typed(self.loaded["ComputeResource"].models, ComputeResource).items():
            doc = self.loaded["ComputeResource"].docs[name]
            gpu = compute.spec.gpu
            if is_fraction(gpu) and "runai" not in (project.spec.scheduler, project.spec.backend):
                self.errors.append(
                    doc.error(
                        ("spec", "gpu"),
                        f"gpu: {gpu_text(gpu)} is a fraction of a GPU, which only the Run:ai scheduler can "
                        "give (the default scheduler counts nvidia.com/gpu in whole GPUs): set "
                        "'scheduler: runai' (or 'backend: runai') in project.yaml, or ask for a whole number of GPUs",
                    )
                )
            pool = compute.spec.node_pool
            if pool is not None and pool not in project.spec.node_pools:
                pools = sorted(project.spec.node_pools)
                message = f"unknown node pool {pool!r} (project.yaml's nodePools "
                message += f"names {', '.join(map(repr, pools))})" if pools else "names none)"
                close = difflib.get_close_matches(pool, pools, n=1)
                if close:
                    message += f"; did you mean {close[0]!r}?"
                self.errors.append(doc.error(("spec", "nodePool"), message))

    def _check_quota(self, project: Project) -> None:
        quota = project.spec.quota
        if quota is None:
            return
        cpu = memory = gpu = Decimal(0)
        for workspace in self.loaded["Workspace"].models.values():
            assert isinstance(workspace, Workspace)
            compute = self.loaded["ComputeResource"].models.get(workspace.spec.compute)
            if workspace.spec.state != "running" or not isinstance(compute, ComputeResource):
                continue
            cpu += parse_quantity(compute.spec.cpu)
            memory += memory_with_shm(compute)
            gpu += Decimal(gpu_text(compute.spec.gpu))
        doc = self.loaded["Project"].docs[""]
        checks: list[tuple[str, str | int | float | None, Decimal, bool]] = [
            ("cpu", quota.cpu, cpu, False),
            ("memory", quota.memory, memory, True),
            ("gpu", quota.gpu, gpu, False),
        ]
        for dimension, limit, total, binary in checks:
            if limit is None:
                continue
            limit_value = parse_quantity(limit) if isinstance(limit, str) else Decimal(str(limit))
            if total > limit_value:
                self.errors.append(
                    doc.error(
                        ("spec", "quota"),
                        f"quota exceeded: running workspaces request {dimension} "
                        f"{gpu_text(total) if dimension == 'gpu' else format_quantity(total, binary=binary)}"
                        f" > quota {limit}",
                    )
                )


_T = TypeVar("_T")

_KIND_WORDS = {
    "Environment": "environment",
    "ComputeResource": "compute resource",
    "DataSource": "data source",
    "Workspace": "workspace",
    "Project": "project",
}


def _typed(models: dict[str, FileKind], cls: type[_T]) -> dict[str, _T]:
    return {name: model for name, model in models.items() if isinstance(model, cls)}


def _printable(text: str) -> str:
    """`text` safe for a `path:line:col: message` line: no line breaks, colons or unencodable characters."""
    if text.isprintable() and ":" not in text:
        return text
    return text.encode("unicode_escape", errors="backslashreplace").decode("ascii").replace(":", "\\x3a")


def _dotted(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            part = _printable(part)
            text += f".{part}" if text else part
    return text or "the top level"


def describe_error(error: ErrorDetails, model: type[BaseModel]) -> str:
    """One readable line for a pydantic error of a file validated against `model`."""
    loc = tuple(error["loc"])
    kind = error["type"]
    if loc and loc[-1] == "[key]":  # a bad key of a free-form map (env): the key is the subject
        loc = loc[:-1]
    where = _dotted(loc)
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        message = f"unknown field {where!r}"
        if parent is not None:
            allowed = [info.alias or name for name, info in parent.model_fields.items()]
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            message += f"; did you mean {close[0]!r}?" if close else f" (allowed: {', '.join(allowed)})"
        return message
    if kind == "missing":
        return f"missing required field {where!r}"
    message = " ".join(str(error["msg"]).split())
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        message = "Input should be a mapping (key: value pairs)"
    elif kind == "list_type":
        message = "Input should be a list"
    # Never echo an env value: it may be a credential.
    is_env_value = len(loc) >= 3 and loc[:2] == ("spec", "env")
    if (kind.endswith("_type") or kind in ("literal_error", "enum")) and not is_env_value:
        message += f" (got {quote(error['input'])})"
    return f"{where}: {message}"


def _model_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = next((f for n, f in current.model_fields.items() if (f.alias or n) == part), None)
        if info is None:
            return None
        current = _unwrap(info.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """The model inside `X | None`, `list[X]` and `Annotated[X, ...]`, if any."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0]
        elif origin is list:
            annotation = typing.get_args(annotation)[0]
        else:
            return annotation
