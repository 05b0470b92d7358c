"""VS Code extensions from the environment block: the init container that installs them, and its report. Pure.

The init container runs the environment's own image (`code-server --install-extension`) with the
workspace's home mounted from the volume, so extensions land in `~/.local/share/code-server/
extensions` on the volume and survive restarts. A marker per extension (under
`~/.local/share/workspace-gitops/extensions/`) records what was installed: a restart installs
nothing again, a new extension in the block is installed once. An extension that cannot be
installed never stops the IDE: the container always exits 0 and writes one line per extension
(`<ext>: installed | kept | failed: <why>`) to its termination message, which the pod's status
keeps and `reconcile status` reads (`extension_failures`: one short line per failed extension).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from reconciler.models import Project

CONTAINER_NAME = "install-extensions"
GALLERY_ENV = "EXTENSIONS_GALLERY"
"""code-server's variable for the extension gallery (default: Open VSX)."""
LABEL_INSTANCE = "app.kubernetes.io/instance"
"""render.LABEL_INSTANCE (render imports this module, so it is not imported back)."""
STATE_DIR = "$HOME/.local/share/workspace-gitops/extensions"

SCRIPT = (
    f'state="{STATE_DIR}"; log=/dev/termination-log; : > "$log"; mkdir -p "$state" || exit 0; '
    'for ext in "$@"; do '
    "key=$(printf '%s' \"$ext\" | tr -c 'A-Za-z0-9._-' '_'); "
    'if [ -e "$state/$key" ]; then echo "$ext: kept" >> "$log"; continue; fi; '
    'if out=$(code-server --install-extension "$ext" 2>&1); then '
    'touch "$state/$key"; echo "$ext: installed" >> "$log"; '
    "else why=$(printf '%s' \"$out\" | grep -v -e '^ *$' -e '^Installing extensions' "
    "-e '^Failed Installing Extensions' | head -n 1 | cut -c1-200); "
    'echo "$ext: failed: $why" >> "$log"; fi; '
    'done; cat "$log"; exit 0'
)
"""Install each extension not installed before; never fail (the IDE starts regardless)."""


def gallery_env(project: Project) -> list[dict[str, str]]:
    """`EXTENSIONS_GALLERY` for code-server when the project names a gallery; none means Open VSX."""
    gallery = project.spec.extensions_gallery
    if gallery is None:
        return []
    value = json.dumps(gallery.model_dump(by_alias=True, exclude_none=True), sort_keys=True, separators=(",", ":"))
    return [{"name": GALLERY_ENV, "value": value}]


def init_container(
    image: str,
    extensions: list[str],
    project: Project,
    resources: Mapping[str, str],
    mounts: list[dict[str, Any]],
    env: list[dict[str, str]],
    security: dict[str, Any],
) -> dict[str, Any]:
    """The init container that installs `extensions` with the image's code-server."""
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "command": ["sh", "-c", SCRIPT, CONTAINER_NAME, *extensions],
    }
    all_env = [*env, *gallery_env(project)]
    if all_env:
        container["env"] = all_env
    container["resources"] = {"requests": dict(resources), "limits": dict(resources)}
    if mounts:
        container["volumeMounts"] = [dict(m) for m in mounts]
    container["securityContext"] = security
    return container


def extension_report(pod: Mapping[str, Any]) -> dict[str, str]:
    """What the install container of `pod` said about each extension: ext -> installed | kept | failed: why."""
    for status in (pod.get("status") or {}).get("initContainerStatuses") or ():
        if status.get("name") != CONTAINER_NAME:
            continue
        state = status.get("state") or {}
        terminated = state.get("terminated") or (status.get("lastState") or {}).get("terminated") or {}
        report: dict[str, str] = {}
        for line in str(terminated.get("message") or "").splitlines():
            ext, sep, outcome = line.partition(": ")
            if sep:
                report[ext] = outcome
        return report
    return {}


_UNREACHABLE = re.compile(r"\b(?:getaddrinfo|connect|read|write)\s+(E[A-Z_]+)\s+([\w.:\[\]-]+)")
"""A Node.js network error in the output (`getaddrinfo EAI_AGAIN open-vsx.org`, `connect ECONNREFUSED ...`)."""
_NOISE = re.compile(r"Installing extensions\.*|Failed Installing Extensions:\s*\S+|Error while installing extensions:")
REASON_CHARS = 120
"""How much of code-server's own words a reason keeps."""


def failure_reason(why: str) -> str:
    """One short line from what the install container recorded for a failed extension.

    A network error becomes `cannot reach <host> (<code>)`; anything else keeps code-server's first
    meaningful words, cut to REASON_CHARS. Messages from older install containers (two output lines
    joined, often the same error twice) read the same way."""
    unreachable = _UNREACHABLE.search(why)
    if unreachable:
        code, host = unreachable.groups()
        return f"cannot reach {host.rstrip('.:')} ({code})"
    text = " ".join(_NOISE.sub(" ", why).split())
    if not text:
        return "code-server gave no reason"
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 3].rstrip() + "..."


def extension_failures(pod: Mapping[str, Any]) -> str:
    """`extension X not installed: why; ...` for the failed extensions of `pod`, or ''."""
    failed = [(ext, outcome.removeprefix("failed").lstrip(": ")) for ext, outcome in extension_report(pod).items()
              if outcome.startswith("failed")]
    return "; ".join(f"extension {ext} not installed: {failure_reason(why)}" for ext, why in failed)


def extension_notes(with_extensions: Iterable[str], pods: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Workspace -> its failed extensions (from its newest pod), for the workspaces named; none when all went in."""
    wanted = set(with_extensions)
    newest: dict[str, Mapping[str, Any]] = {}
    for pod in pods:
        name = ((pod.get("metadata") or {}).get("labels") or {}).get(LABEL_INSTANCE, "")
        created = (pod.get("metadata") or {}).get("creationTimestamp") or ""
        if name in wanted and created >= ((newest.get(name) or {}).get("metadata") or {}).get("creationTimestamp", ""):
            newest[name] = pod
    notes = {name: extension_failures(pod) for name, pod in newest.items()}
    return {name: note for name, note in notes.items() if note}
