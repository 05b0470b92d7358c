"""The generated repo: N workspaces over 2 environments, 3 compute blocks and 1 data source."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

PROJECT = "bench"
DOMAIN = "bench.example.org"
DATA_SOURCE = "shared-data"
CHANGED_BLOCK = "cpu-large"
"""The compute block that 1% of the workspaces use; the one-change plan edits it."""

ENVIRONMENTS = {
    "vscode": """apiVersion: workspaces/v1
kind: Environment
metadata:
  name: vscode-4-16-1
spec:
  image: registry.example.org/mlops/vscode-server:4.16.1
  tool: vscode
  port: 8080
  args: ["--bind-addr", "0.0.0.0:8080", "{workdir}"]
  env: {}
  credentials:
    file: /home/coder/.config/code-server/config.yaml
""",
    "jupyterlab": """apiVersion: workspaces/v1
kind: Environment
metadata:
  name: jupyterlab-0-1-0
spec:
  image: registry.example.org/mlops/jupyterlab-server:0.1.0
  tool: jupyterlab
  port: 8888
  args: ["jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
  env: {}
  credentials:
    logPattern: "lab?token"
""",
}
ENV_NAMES = {"vscode": "vscode-4-16-1", "jupyterlab": "jupyterlab-0-1-0"}
COMPUTE = {"cpu-small": ("2", "8Gi"), "cpu-mid": ("4", "16Gi"), CHANGED_BLOCK: ("8", "32Gi")}
CHANGED_MEMORY = "48Gi"


def compute_block(name: str, cpu: str, memory: str) -> str:
    return (f"apiVersion: workspaces/v1\nkind: ComputeResource\nmetadata:\n  name: {name}\n"
            f"spec:\n  cpu: \"{cpu}\"\n  memory: {memory}\n  gpu: 0\n")


def project_yaml(namespace: str) -> str:
    # No quota: 1,000 running workspaces are the point here, not the quota check.
    return (f"apiVersion: workspaces/v1\nkind: Project\nmetadata:\n  name: {PROJECT}\nspec:\n"
            f"  namespace: {namespace}\n  domain: {DOMAIN}\n  ownerPrefix: true\n  hints: kubectl\n"
            f"  admins: []\n")


def workspace_yaml(name: str, owner: str, tool: str, compute: str) -> str:
    return (f"apiVersion: workspaces/v1\nkind: Workspace\nmetadata:\n  name: {name}\nspec:\n"
            f"  owner: {owner}\n  environment: {ENV_NAMES[tool]}\n  compute: {compute}\n"
            f"  dataSources: [{DATA_SOURCE}]\n  state: running\n")


@dataclass
class GeneratedRepo:
    """A repo of `n` workspaces; `changed` is how many use CHANGED_BLOCK (1%, at least one)."""

    path: Path
    n: int
    changed: int

    def set_namespace(self, namespace: str) -> None:
        (self.path / "project.yaml").write_text(project_yaml(namespace))

    @property
    def pr_workspace(self) -> str:
        """The workspace the one-workspace pull request adds (the next owner after the last)."""
        return f"u{self.n + 1:0{max(4, len(str(self.n)))}d}-vscode"

    def set_pr_workspace(self, present: bool) -> None:
        """Add (or remove again) the pull request's one workspace file."""
        name = self.pr_workspace
        path = self.path / "workspaces" / f"{name}.yaml"
        if present:
            path.write_text(workspace_yaml(name, name.split("-")[0], "vscode", "cpu-small"))
        else:
            path.unlink(missing_ok=True)

    def commit(self, message: str) -> str:
        """Commit the repo as it is (what was applied): the pull request's `--since` base. Its SHA."""
        git = ["git", "-C", str(self.path), "-c", "user.name=bench", "-c", "user.email=bench@example.org"]
        if not (self.path / ".git").exists():
            subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", message], check=True)
        return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()

    def set_block_changed(self, changed: bool) -> None:
        cpu, memory = COMPUTE[CHANGED_BLOCK]
        (self.path / "blocks" / "compute" / f"{CHANGED_BLOCK}.yaml").write_text(
            compute_block(CHANGED_BLOCK, cpu, CHANGED_MEMORY if changed else memory))


def generate_repo(path: Path, n: int) -> GeneratedRepo:
    """Workspaces u0001-vscode, u0002-jupyterlab, ... (owner u0001, ...), every one on the data source."""
    for sub in ("workspaces", "blocks/environments", "blocks/compute", "blocks/data-sources"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    for tool, text in ENVIRONMENTS.items():
        (path / "blocks" / "environments" / f"{ENV_NAMES[tool]}.yaml").write_text(text)
    for name, (cpu, memory) in COMPUTE.items():
        (path / "blocks" / "compute" / f"{name}.yaml").write_text(compute_block(name, cpu, memory))
    (path / "blocks" / "data-sources" / f"{DATA_SOURCE}.yaml").write_text(
        f"apiVersion: workspaces/v1\nkind: DataSource\nmetadata:\n  name: {DATA_SOURCE}\nspec:\n"
        f"  pvc: {DATA_SOURCE}\n  mountPath: /data\n  readOnly: false\n")
    width = max(4, len(str(n)))
    changed = 0
    for i in range(1, n + 1):
        tool = "vscode" if i % 2 else "jupyterlab"
        owner = f"u{i:0{width}d}"
        name = f"{owner}-{tool}"
        if i % 100 == 1:  # 1% of the workspaces, at least one
            compute = CHANGED_BLOCK
            changed += 1
        else:
            compute = "cpu-small" if i % 3 else "cpu-mid"
        (path / "workspaces" / f"{name}.yaml").write_text(workspace_yaml(name, owner, tool, compute))
    repo = GeneratedRepo(path, n, changed)
    repo.set_namespace(PROJECT)
    return repo
