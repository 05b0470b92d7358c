"""Which backend a project runs on (project.yaml's `spec.backend`), and what it renders for it.

The Kubernetes cluster is the default (no backend object: `run.reconcile` makes a `cluster.Cluster`);
`backend: runai` renders Run:ai workspaces and talks to Run:ai. Run:ai's client (runapy) is imported
only for such a project, so the Kubernetes path never loads it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from reconciler.models import Repo
from reconciler.render import DesiredWorkspace, render


def select_backend(repo: Repo, only: Collection[str] | None = None) -> tuple[Any, list[DesiredWorkspace], str]:
    """project.yaml's backend: (None for the cluster, the desired workspaces, the namespace or Run:ai project).

    `only`: render just the workspaces of these names (`--since`)."""
    runai_spec = repo.project.spec.runai
    if repo.project.spec.backend != "runai" or runai_spec is None:
        return None, render(repo, only, lazy=True), repo.project.namespace  # rendered as the plan reads them
    from reconciler.runai import RunaiBackend  # runapy: only with backend runai
    from reconciler.runai_client import RunaiOptions
    from reconciler.runai_spec import render_runai

    desired = render_runai(repo, only)
    opts = RunaiOptions(url=runai_spec.url, cluster=runai_spec.cluster, project=runai_spec.project)
    return RunaiBackend(repo.project.metadata.name, opts, desired), desired, runai_spec.project
