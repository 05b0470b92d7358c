"""Safe YAML reading with positions: plain values plus a map from key paths to `line:col`.

The reader never builds a YAML node graph and never expands anything: it walks the
parser's events (libyaml's when available) and refuses anchors, aliases, merge keys,
explicit non-core tags, duplicate keys, deep nesting and multi-document streams as it
meets them, so a hostile file costs no more than its (capped) size.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import ScalarNode

from reconciler.errors import ConfigError, ValidationFailed, quote

try:  # libyaml's parser is ~10x faster; its events carry the same marks
    from yaml import CSafeLoader as _EventSource
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _EventSource  # type: ignore[assignment]

MAX_BYTES = 1 << 20
"""Files larger than this (1 MiB) are refused without being read in full."""

MAX_DEPTH = 32
"""Deepest nesting of mappings and sequences accepted; the file kinds need 4."""

Loc = tuple[str | int, ...]
"""A path into a document: mapping keys and sequence indexes, e.g. ("spec", "dataSources", 0)."""

_CORE = "tag:yaml.org,2002:"
_STR, _NULL, _BOOL, _INT, _FLOAT = (_CORE + t for t in ("str", "null", "bool", "int", "float"))
_ALLOWED_SCALAR_TAGS = {_STR, _NULL, _BOOL, _INT, _FLOAT}
TAB_INDENT_MESSAGE = "tabs are not allowed for indentation in YAML; use spaces"


@dataclass(frozen=True)
class Document:
    """One parsed YAML file: its mapping, and where each key and sequence item sits in it."""

    path: str
    data: dict[str, Any]
    positions: dict[Loc, tuple[int, int]] = field(repr=False)

    def position(self, loc: Sequence[object]) -> tuple[int, int]:
        """The 1-based `(line, col)` closest to `loc` (a key path or a pydantic error `loc`).

        An existing key or item maps to its own position. Elements that are not in the
        document (a missing required key, pydantic's union tags such as `"function-after[...]"`)
        are skipped, so a missing field maps to the key of the mapping that lacks it.
        """
        current: Loc = ()
        for element in loc:
            if not isinstance(element, str | int):
                continue
            candidate = (*current, element)
            if candidate in self.positions:
                current = candidate
        return self.positions.get(current, (1, 1))

    def error(self, loc: Sequence[object], message: str) -> ConfigError:
        """A `ConfigError` in this file at the position closest to `loc`."""
        line, col = self.position(loc)
        return ConfigError(self.path, line, col, message)


def load_document(file: Path, rel: str) -> Document:
    """Read and parse `file` (reported as `rel`); raises `ValidationFailed` with every problem found."""
    try:
        # O_NONBLOCK: opening a FIFO planted in the repo must not hang the run.
        with os.fdopen(os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise _fail(rel, 1, 1, "not a regular file")
            if info.st_size > MAX_BYTES:
                raise _fail(rel, 1, 1, f"file is larger than 1 MiB ({info.st_size} bytes)")
            # st_size can lie (procfs, a file growing while read): cap the read itself too.
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise _fail(rel, 1, 1, f"cannot read file: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise _fail(rel, 1, 1, "file is larger than 1 MiB")
    return parse_document(raw, rel)


def parse_document(raw: bytes, rel: str) -> Document:
    """Parse the bytes of one file (reported as `rel`); raises `ValidationFailed`. Pure."""
    if len(raw) > MAX_BYTES:
        raise _fail(rel, 1, 1, "file is larger than 1 MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _offset_position(raw, exc.start)
        raise _fail(rel, line, col, "file is not valid UTF-8") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return _Composer(text, rel).compose()


def _fail(path: str, line: int, col: int, message: str) -> ValidationFailed:
    return ValidationFailed([ConfigError(path, line, col, message)])


def _offset_position(raw: bytes, offset: int) -> tuple[int, int]:
    """1-based line and column (in characters) of a byte offset into UTF-8-ish bytes."""
    before = raw[:offset]
    line_start = before.rfind(b"\n") + 1
    col = len(before[line_start:].decode("utf-8", errors="replace")) + 1
    return before.count(b"\n") + 1, col


def _tag(tag: str) -> str:
    return quote("!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag)


class _Composer:
    """Builds plain values from parser events, iteratively (no recursion, no node graph)."""

    def __init__(self, text: str, rel: str) -> None:
        self.text = text
        self.rel = rel
        self.errors: list[ConfigError] = []
        self.positions: dict[Loc, tuple[int, int]] = {}
        self.aliases_seen: set[object] = set()
        # Typed loosely: the C and pure-Python event classes differ only in their stubs.
        self.events: Any = _EventSource(text)

    def compose(self) -> Document:
        try:
            root = self._compose_stream()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
            if mark is not None and self._indented_with_tab(mark.line, mark.column):
                raise _fail(self.rel, line, col, TAB_INDENT_MESSAGE) from None
            problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
            raise _fail(self.rel, line, col, f"YAML syntax error: {problem}") from None
        except yaml.reader.ReaderError as exc:
            line, col = _offset_position(self.text.encode("utf-8"), exc.position)
            raise _fail(self.rel, line, col, f"invalid character: {exc.reason}") from None
        except yaml.YAMLError as exc:  # pragma: no cover - every libyaml error is one of the above
            raise _fail(self.rel, 1, 1, f"invalid YAML: {' '.join(str(exc).split())}") from None
        finally:
            self.events.dispose()
        if self.errors:
            raise ValidationFailed(self.errors)
        if not isinstance(root, dict):  # pragma: no cover - _compose_stream reports it
            raise _fail(self.rel, 1, 1, "the top level must be a mapping")
        return Document(self.rel, root, self.positions)

    def _indented_with_tab(self, line: int, column: int) -> bool:
        """Whether the parser stopped at a tab that only whitespace precedes on its line.

        libyaml says "found character that cannot start any token" there, which names neither
        the tab nor the fix.
        """
        start = 0
        for _ in range(line):
            start = self.text.find("\n", start) + 1
            if start == 0:
                return False
        end = self.text.find("\n", start)
        text = self.text[start : end if end >= 0 else len(self.text)]
        return column < len(text) and text[column] == "\t" and not text[:column].strip(" \t")

    def _error(self, mark: Any, message: str) -> None:
        self.errors.append(ConfigError(self.rel, mark.line + 1, mark.column + 1, message))

    def _compose_stream(self) -> object:
        get = self.events.get_event
        get()  # StreamStartEvent
        event = get()
        if isinstance(event, yaml.StreamEndEvent):
            raise _fail(self.rel, 1, 1, "file is empty (expected one YAML mapping)")
        root_event = get()  # the event after DocumentStartEvent starts the root node
        root = self._compose_root(root_event)
        get()  # DocumentEndEvent
        extra = get()
        if isinstance(extra, yaml.DocumentStartEvent):
            self._error(extra.start_mark, "more than one YAML document in a file (one document per file)")
            raise ValidationFailed(self.errors)
        if (
            isinstance(root_event, yaml.ScalarEvent)
            and root_event.value == ""
            and not root_event.style
            and root_event.tag is None
        ):
            raise _fail(self.rel, 1, 1, "file is empty (expected one YAML mapping)")
        if not isinstance(root, dict):
            if not self.errors:
                self._error(root_event.start_mark, "the top level must be a mapping (key: value pairs)")
            raise ValidationFailed(self.errors)
        return root

    def _compose_root(self, event: Any) -> object:
        get = self.events.get_event
        # A frame is [container, its loc, pending key (mappings only), {key: line first seen}].
        stack: list[list[Any]] = []
        while True:
            if isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                finished = stack.pop()[0]
                if not stack:
                    return finished
                event = get()
                continue
            frame = stack[-1] if stack else None
            is_key = frame is not None and isinstance(frame[0], dict) and frame[2] is None
            opens = isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent)
            anchor = getattr(event, "anchor", None)
            if isinstance(event, yaml.AliasEvent):
                if anchor not in self.aliases_seen:  # one report per name: a bomb repeats them
                    self.aliases_seen.add(anchor)
                    self._error(event.start_mark, f"YAML aliases are not allowed (*{anchor})")
                value: object = _Invalid() if is_key else None
            else:
                if anchor is not None:
                    self._error(event.start_mark, f"YAML anchors are not allowed (&{anchor})")
                if opens:
                    if is_key:
                        assert frame is not None
                        self._error(event.start_mark, "mapping keys must be plain strings, not collections")
                        self._skip_collection()
                        frame[2] = _Invalid()
                        event = get()
                        continue
                    value = self._start_collection(event, stack)
                elif isinstance(event, yaml.ScalarEvent):
                    value = self._scalar(event, is_key)
                else:  # pragma: no cover - the parser emits only node events here
                    raise yaml.YAMLError(f"unexpected {type(event).__name__}")
            if frame is None:
                if not opens:
                    return value  # a document that is a single scalar
            elif is_key:
                self._key(frame, value, event)
            elif isinstance(frame[0], dict):
                if not isinstance(frame[2], _Invalid):
                    frame[0][frame[2]] = value
                frame[2] = None
            else:
                items: list[object] = frame[0]
                mark = event.start_mark
                self.positions[(*frame[1], len(items))] = (mark.line + 1, mark.column + 1)
                items.append(value)
            event = get()

    def _start_collection(self, event: Any, stack: list[list[Any]]) -> object:
        tag = getattr(event, "tag", None)
        implicit = getattr(event, "implicit", True)
        if tag is not None and not implicit and tag not in (_CORE + "map", _CORE + "seq", "!"):
            self._error(event.start_mark, f"YAML tag {_tag(tag)} is not allowed")
        if len(stack) >= MAX_DEPTH:
            self._error(event.start_mark, f"nested deeper than {MAX_DEPTH} levels")
            raise ValidationFailed(self.errors)
        container: dict[str, object] | list[object] = {} if isinstance(event, yaml.MappingStartEvent) else []
        mark = event.start_mark
        if not stack:
            loc: Loc = ()
            self.positions[()] = (mark.line + 1, mark.column + 1)
        else:
            parent = stack[-1]
            if isinstance(parent[0], list):
                loc = (*parent[1], len(parent[0]))
            elif isinstance(parent[2], _Invalid):
                loc = (*parent[1], "\0invalid")  # reported already; never looked up
            else:
                loc = (*parent[1], parent[2])
        stack.append([container, loc, None, {}])
        return container

    def _skip_collection(self) -> None:
        depth = 1
        get = self.events.get_event
        while depth:
            event = get()
            if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                depth += 1
            elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                depth -= 1

    def _key(self, frame: list[Any], value: object, event: Any) -> None:
        mark = event.start_mark
        if isinstance(value, _Invalid):
            frame[2] = value
            return
        assert isinstance(event, yaml.ScalarEvent)
        key = event.value  # keys are always read as text: `on:` is the key "on", not True
        if key == "<<" and not event.style:
            self._error(mark, "YAML merge keys (<<) are not allowed")
            frame[2] = _Invalid()
            return
        seen: dict[str, int] = frame[3]
        if key in seen:
            self._error(mark, f"duplicate key {quote(key)} (first defined on line {seen[key]})")
            frame[2] = _Invalid()
            return
        seen[key] = mark.line + 1
        frame[2] = key
        self.positions[(*frame[1], key)] = (mark.line + 1, mark.column + 1)

    def _scalar(self, event: Any, is_key: bool) -> object:
        tag = event.tag
        if tag is not None and tag != "!" and tag not in _ALLOWED_SCALAR_TAGS:
            self._error(event.start_mark, f"YAML tag {_tag(tag)} is not allowed")
            return _Invalid() if is_key else None
        if is_key:
            return event.value
        if tag is None or tag == "!":
            tag = self.events.resolve(ScalarNode, event.value, event.implicit)
        if tag == _STR:
            return event.value
        node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        try:
            if tag == _NULL:
                return None
            if tag == _BOOL:
                return self.events.construct_yaml_bool(node)
            if tag == _INT:
                return self.events.construct_yaml_int(node)
            if tag == _FLOAT:
                return self.events.construct_yaml_float(node)
        except (ValueError, yaml.YAMLError):
            self._error(event.start_mark, f"invalid {tag[len(_CORE) :]} {quote(event.value)}")
            return None
        # Timestamps and the other YAML 1.1 implicit types are read as the text they are.
        return event.value


class _Invalid:
    """Marks a key that was reported as invalid; its value is dropped."""


_HEX = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")


def read_git_commit(root: Path) -> str | None:
    """The HEAD commit of the Git checkout containing `root`, or None (never an error).

    Reads `.git/HEAD`, loose refs and `packed-refs` directly: importing GitPython costs
    more than validating a repo, and outside a checkout there is simply no commit.
    """
    try:
        git_dir = _find_git_dir(root.resolve())
        if git_dir is None:
            return None
        common = git_dir
        commondir = git_dir / "commondir"
        if commondir.is_file():
            common = (git_dir / commondir.read_text(encoding="utf-8").strip()).resolve()
        head = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
        for _ in range(5):  # symbolic refs may chain; a loop is a broken repo, not ours to fix
            if not head.startswith("ref:"):
                return head if _HEX.fullmatch(head) else None
            ref = head[4:].strip()
            if ".." in ref or not ref.startswith("refs/"):
                return None
            resolved = _read_ref(git_dir, common, ref)
            if resolved is None:
                return None  # an unborn branch: no commit yet
            head = resolved
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return None


def _find_git_dir(start: Path) -> Path | None:
    for directory in (start, *start.parents):
        dot_git = directory / ".git"
        if dot_git.is_dir():
            return dot_git
        if dot_git.is_file():  # a worktree or submodule: "gitdir: <path>"
            content = dot_git.read_text(encoding="utf-8").strip()
            if content.startswith("gitdir:"):
                return (directory / content[7:].strip()).resolve()
            return None
    return None


def _read_ref(git_dir: Path, common: Path, ref: str) -> str | None:
    for base in (git_dir, common):
        loose = base / ref
        if loose.is_file():
            return loose.read_text(encoding="utf-8").strip()
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text(encoding="utf-8").splitlines():
            if line.startswith(("#", "^")):
                continue
            sha, _, name = line.partition(" ")
            if name.strip() == ref:
                return sha.strip()
    return None
