"""What the seed guide's users did by hand, now declared, on the real node with the real code-server image.

A home that survives restarts: the code-server password and a conda-style environment folder are
still there after `state: stopped` -> `running` and after a change of the environment block that
rolls the pod (only one code-server image exists here, so an env variable of the block changes the
pod template as a new image tag would). VS Code extensions: a VSIX that this test builds, placed on
the project's volume and listed in the environment block, is installed before the IDE starts,
`code-server --list-extensions` in the pod lists it, and a restart does not install it again; an
extension that cannot be installed does not stop the IDE, and `reconcile status` says which and why.

The workspaces are applied with `reconcile` as a platform engineer would run it (the admin
kubeconfig); the credential command is the one `reconcile status` prints, run as printed.
"""

from __future__ import annotations

import json
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RealPlane
from tests.e2e import ides
from tests.e2e.helpers import Admin, Repo, reconcile

pytestmark = [pytest.mark.cluster, pytest.mark.real_node]

PVC = "sample-project-pvc"
VSCODE = "aisg-vscode-server-v4-16-1"
CONFIG = "/home/coder/.config/code-server/config.yaml"


@dataclass
class Project:
    """A copy of the example repo applied to its own namespace on the real node; its PVC is `volume` on the host."""

    plane: RealPlane
    repo: Repo
    admin: Admin
    volume: Path

    def apply(self) -> Any:
        run = reconcile("--repo", str(self.repo), "--output", "json", "--timeout", "240",
                        kubeconfig=self.plane.kubeconfig, timeout=330)
        assert run.code == 0, str(run)
        return run.json

    def status(self, name: str) -> Any:
        run = reconcile("status", "--repo", str(self.repo), "--output", "json", kubeconfig=self.plane.kubeconfig)
        assert run.code == 0, str(run)
        return next(w for w in run.json["workspaces"] if w["name"] == name)

    def sh(self, command: str) -> str:
        """`command` in a shell with kubectl and the admin kubeconfig, as a user types it; its stdout."""
        run = ides.run_posted_command(command, self.plane.kubeconfig, self.plane.kubectl.parent)
        assert run.returncode == 0, f"`{command}` failed ({run.returncode}):\n{run.stdout}\n{run.stderr}"
        return run.stdout

    def in_workspace(self, name: str, script: str) -> str:
        return self.sh(f"kubectl -n {self.repo.namespace} exec deploy/{name} -c workspace -- sh -c '{script}'")

    def password(self, name: str) -> str:
        """The password, read with the command `reconcile status` prints for the workspace."""
        row = self.status(name)
        assert row["state"] == "ready", row
        return ides.credential("vscode", self.sh(row["credentialHint"]))

    def pod(self, name: str) -> Any:
        pods = self.admin.core.list_namespaced_pod(self.repo.namespace,
                                                   label_selector=f"app.kubernetes.io/instance={name}")
        running = [p for p in pods.items if p.metadata.deletion_timestamp is None]
        assert len(running) == 1, [p.metadata.name for p in pods.items]
        return self.admin.api.sanitize_for_serialization(running[0])

    def set_state(self, name: str, state: str) -> None:
        self.repo.edit(f"workspaces/{name}.yaml", lambda d: d["spec"].update(state=state))

    def wait_no_pod(self, name: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pods = self.admin.core.list_namespaced_pod(self.repo.namespace,
                                                       label_selector=f"app.kubernetes.io/instance={name}")
            if not pods.items:
                return
            time.sleep(1)
        raise AssertionError(f"the pod of {name} is still there after {timeout}s")


@pytest.fixture(scope="module")
def project(real_plane: RealPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    namespace = f"seed-{uuid.uuid4().hex[:6]}"
    admin = Admin(real_plane.kubeconfig, namespace)
    admin.core.create_namespace({"metadata": {"name": namespace}})
    tmp = tmp_path_factory.mktemp("seed-workspaces")
    volume = tmp / "volume"
    try:
        admin.bound_pvc(PVC, host_dir=volume)
        repo = Repo(tmp / "repo", namespace)
        for name in repo.workspaces():
            repo.remove(f"workspaces/{name}.yaml")
        yield Project(real_plane, repo, admin, volume)
    finally:
        admin.delete_namespace_and_wait()


def build_vsix(path: Path, publisher: str, name: str, version: str) -> None:
    """A minimal VS Code extension package: a zip with the manifest, the content types and package.json."""
    package = {"name": name, "publisher": publisher, "version": version, "displayName": name,
               "engines": {"vscode": "^1.60.0"}}
    manifest = (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<PackageManifest Version="2.0.0" xmlns="http://schemas.microsoft.com/developer/vsx-schema/2011">'
        f'<Metadata><Identity Language="en-US" Id="{name}" Version="{version}" Publisher="{publisher}"/>'
        f"<DisplayName>{name}</DisplayName><Description>built by the test</Description></Metadata>"
        '<Installation><InstallationTarget Id="Microsoft.VisualStudio.Code"/></Installation><Dependencies/>'
        '<Assets><Asset Type="Microsoft.VisualStudio.Code.Manifest" Path="extension/package.json" '
        'Addressable="true"/></Assets></PackageManifest>'
    )
    types = (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension=".json" ContentType="application/json"/>'
        '<Default Extension=".vsixmanifest" ContentType="text/xml"/></Types>'
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("[Content_Types].xml", types)
        z.writestr("extension.vsixmanifest", manifest)
        z.writestr("extension/package.json", json.dumps(package))


def test_the_password_and_a_conda_env_in_the_home_survive_a_stop_start_and_a_new_pod_template(
    project: Project,
) -> None:
    name = "jane-doe-vscode"
    project.repo.add_workspace(name, "jane-doe", compute="cpu-small")
    project.apply()
    password = project.password(name)
    env_dir = ".conda/envs/seed-py311"
    project.in_workspace(name, f'mkdir -p "$HOME/{env_dir}/conda-meta" && echo "python=3.11" '
                               f'> "$HOME/{env_dir}/conda-meta/history"')
    on_volume = project.volume / "workspaces" / "jane-doe" / ".home" / name
    assert (on_volume / env_dir / "conda-meta" / "history").read_text() == "python=3.11\n"
    assert (on_volume / ".config" / "code-server" / "config.yaml").exists(), "the password file is on the volume"

    project.set_state(name, "stopped")
    project.apply()
    project.wait_no_pod(name)
    project.set_state(name, "running")
    project.apply()
    assert project.password(name) == password, "the same password after stop and start"
    assert project.in_workspace(name, f'cat "$HOME/{env_dir}/conda-meta/history"') == "python=3.11\n"

    before = project.pod(name)["metadata"]["uid"]
    project.repo.edit(f"blocks/environments/{VSCODE}.yaml",
                      lambda d: d["spec"].update(env={"SEED_ROLLOUT": uuid.uuid4().hex}))
    project.apply()
    assert project.pod(name)["metadata"]["uid"] != before, "the environment change rolled the pod"
    password_after = project.password(name)
    assert password_after == password, "the same password in the new pod"
    assert project.in_workspace(name, f'cat "$HOME/{env_dir}/conda-meta/history"') == "python=3.11\n"
    url = project.status(name)["url"]
    assert ides.code_server_login(project.plane.ingress, url, password_after).status == 302, "it still logs in"

    project.repo.remove(f"workspaces/{name}.yaml")  # the real node has two cores: make room for the next test
    project.apply()
    project.wait_no_pod(name)


def test_an_extension_from_a_vsix_on_the_volume_is_installed_once_and_a_failed_one_is_reported(
    project: Project,
) -> None:
    name = "ext-user-vscode"
    vsix = project.volume / "vsix" / "seedtest.hello-0.0.1.vsix"
    build_vsix(vsix, "seedtest", "hello", "0.0.1")
    environment = "vscode-with-extensions"
    block = project.repo.read(f"blocks/environments/{VSCODE}.yaml")
    block["metadata"]["name"] = environment
    block["spec"]["vscode"] = {"extensions": [f"/{PVC}/vsix/{vsix.name}", "nosuch.extension"]}
    project.repo.write(f"blocks/environments/{environment}.yaml", block)
    # A gallery nobody serves: the named extension fails at once, as it would behind a firewall.
    project.repo.edit("project.yaml", lambda d: d["spec"].update(
        extensionsGallery={"serviceUrl": "https://127.0.0.1:9/vscode/gallery"}))
    project.repo.add_workspace(name, "ext-user", environment=environment, compute="cpu-small")
    project.apply()

    listed = project.in_workspace(name, "code-server --list-extensions").split()
    assert "seedtest.hello" in listed, listed
    row = project.status(name)
    assert row["state"] == "ready", row
    assert "extension nosuch.extension not installed: cannot reach 127.0.0.1:9 (ECONNREFUSED)" in row["reason"], row
    assert "seedtest" not in row["reason"], row
    installed = project.volume / "workspaces" / "ext-user" / ".home" / name / ".local/share/code-server/extensions"
    assert any(p.name.startswith("seedtest.hello") for p in installed.iterdir()), "installed on the volume"

    before = project.pod(name)["metadata"]["uid"]
    project.set_state(name, "stopped")
    project.apply()
    project.wait_no_pod(name)
    project.set_state(name, "running")
    project.apply()
    pod = project.pod(name)
    assert pod["metadata"]["uid"] != before
    (install,) = [s for s in pod["status"]["initContainerStatuses"] if s["name"] == "install-extensions"]
    report = install["state"]["terminated"]["message"]
    assert f"/{PVC}/vsix/{vsix.name}: kept" in report, report
    assert "nosuch.extension: failed" in report, report
    assert "seedtest.hello" in project.in_workspace(name, "code-server --list-extensions").split()
