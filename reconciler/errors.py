"""The project's errors: a small flat tree. Nothing here imports a client library."""

from __future__ import annotations

from dataclasses import dataclass

MAX_QUOTED = 60  # characters of a value shown in an error message


def quote(value: object, limit: int = MAX_QUOTED) -> str:
    """A value as an error message shows it: repr'd, and cut so a huge value gives a short line.

    A string is cut before it is repr'd, so the quotes stay balanced (``'aaaa...'``).
    """
    if isinstance(value, str):
        return repr(value if len(value) <= limit else value[: limit - 3] + "...")
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` with its whitespace runs (newlines included) made one space, cut to ``limit``."""
    text = " ".join(text.split())
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, order=True)
class ConfigError:
    """One problem in the config repo, at `path:line:col` (path relative to the repo root; 1-based)."""

    path: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "line": self.line, "col": self.col, "message": self.message}


class ReconcileError(Exception):
    """Base of every error the CLI reports as a one-line message with exit code 1."""


class ValidationFailed(ReconcileError):
    """The repo does not validate; carries every error found, sorted."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = sorted(errors)
        super().__init__(f"{len(self.errors)} validation error(s)")


class ClusterError(ReconcileError):
    """The Kubernetes API failed or refused a request (message starts with the object's identity).

    ``status`` is the HTTP status of the API's answer, or None when there was no answer (the API
    server could not be reached, the kubeconfig could not be loaded). Code decides by ``status``,
    never by the message's text.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PlanRefused(ReconcileError):
    """A safety rule refused the plan (mass delete, conflicts without --adopt)."""


class LockError(ReconcileError):
    """The reconciler Lease could not be acquired in time; the message names the holder."""


class GitHubError(ReconcileError):
    """The GitHub API failed; never fatal to a reconcile, reported as a warning."""
