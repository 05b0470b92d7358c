"""workspace-gitops: reconcile a Git repository of workspaces into a Kubernetes cluster."""

__version__ = "0.1.0"
