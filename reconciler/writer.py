"""The files the CLI writes: rendered objects (`reconcile render`) and new workspace files (`new`, `import`).

A new workspace file never overwrites one (a .yml/.yaml twin counts) and is kept only when the
repo validates with it; `next_step` is the Git commands that propose it in a pull request.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from reconciler.errors import ReconcileError, ValidationFailed
from reconciler.render import DesiredWorkspace
from reconciler.validate import load_repo

_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's emitter: ~10x faster for thousands of files


def write_rendered(desired: list[DesiredWorkspace], output_dir: Path) -> list[Path]:
    """One YAML file per object (`<kind>-<name>.yaml`) in `output_dir`; the paths written, in order."""
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for workspace in desired:
        for obj in workspace.objects:
            path = output_dir / f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
            text = yaml.dump(obj, Dumper=_DUMPER, sort_keys=False, default_flow_style=False)
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def write_new_file(repo: Path, rel: str, text: str, name: str) -> Path:
    """Create repo/rel (never overwriting; a .yml/.yaml twin counts), then validate the repo with it."""
    path = repo / rel
    for twin in (path.with_suffix(".yaml"), path.with_suffix(".yml")):
        if twin.exists():
            raise ReconcileError(f"{twin} exists: not overwritten (choose another name with --name, or edit it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise ReconcileError(f"{path} exists: not overwritten") from None
    try:
        load_repo(repo)
    except ValidationFailed:
        path.unlink(missing_ok=True)
        raise
    return path


def next_step(files: list[str], message: str, branch: str) -> str:
    """The Git commands that propose `files` in a pull request (what to do after `new` or `import`)."""
    return "\n".join([
        "next: open a pull request with it; CI validates it and posts the plan there, and merging applies it:",
        f"  git switch -c {branch}",
        f"  git add {' '.join(files)}",
        f'  git commit -m "{message}"',
        f"  git push -u origin {branch}",
        "  gh pr create --fill    # or open the pull request in the browser",
    ])
