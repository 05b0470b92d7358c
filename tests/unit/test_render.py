"""Rendering: golden files with the exact objects, and the rules behind them."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.models import Repo
from reconciler.render import (
    ANNOTATION_COMMIT,
    ANNOTATION_SOURCE,
    INGRESS_ANNOTATIONS,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_PART_OF,
    MANAGED_BY,
    DesiredWorkspace,
    render,
)
from reconciler.validate import load_repo

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def _as_data(workspace: DesiredWorkspace) -> dict[str, Any]:
    data = dataclasses.asdict(workspace)
    return json.loads(json.dumps(data))  # tuples -> lists, and proves it is JSON-able


def _check_golden(repo: Repo, folder: str) -> None:
    directory = GOLDEN / folder
    rendered = {w.name: _as_data(w) for w in render(dataclasses.replace(repo, commit=COMMIT))}
    if UPDATE:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.yaml"):
            stale.unlink()
        for name, data in rendered.items():
            (directory / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    expected = {p.stem: yaml.safe_load(p.read_text(encoding="utf-8")) for p in directory.glob("*.yaml")}
    assert sorted(rendered) == sorted(expected), "run with UPDATE_GOLDEN=1 to regenerate tests/data/golden"
    for name in rendered:
        assert rendered[name] == expected[name], f"{folder}/{name}.yaml differs (UPDATE_GOLDEN=1 regenerates)"


def test_the_example_workspaces_render_exactly_as_the_golden_files(example_repo: Path) -> None:
    _check_golden(load_repo(example_repo), "examples")


def test_the_base_test_workspaces_render_exactly_as_the_golden_files(base_repo: Path) -> None:
    _check_golden(load_repo(base_repo), "base")


@pytest.fixture
def repo(base_repo: Path) -> Repo:
    return dataclasses.replace(load_repo(base_repo), commit=COMMIT)


def _objects(workspace: DesiredWorkspace) -> dict[str, dict[str, Any]]:
    return {obj["kind"]: obj for obj in workspace.objects}


def _by_name(repo: Repo) -> dict[str, DesiredWorkspace]:
    return {w.name: w for w in render(repo)}


def test_render_returns_workspaces_sorted_by_name_with_deployment_service_ingress(repo: Repo) -> None:
    rendered = render(repo)
    assert [w.name for w in rendered] == ["alice-code", "bob-lab"]
    for workspace in rendered:
        assert [o["kind"] for o in workspace.objects] == ["Deployment", "Service", "Ingress"]
        for obj in workspace.objects:
            assert list(obj) == ["apiVersion", "kind", "metadata", "spec"]
            assert obj["metadata"]["name"] == workspace.name
            assert obj["metadata"]["namespace"] == "demo"


def test_every_object_and_pod_template_carries_the_labels_but_only_objects_carry_annotations(
    repo: Repo,
) -> None:
    labels = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PART_OF: "demo",
        LABEL_INSTANCE: "alice-code",
        LABEL_NAME: "vscode",
    }
    objects = _objects(_by_name(repo)["alice-code"])
    for obj in objects.values():
        assert obj["metadata"]["labels"] == labels
        extra = INGRESS_ANNOTATIONS if obj["kind"] == "Ingress" else {}
        assert obj["metadata"]["annotations"] == {
            ANNOTATION_SOURCE: "workspaces/alice-code.yaml",
            ANNOTATION_COMMIT: COMMIT,
            **extra,
        }
    template = objects["Deployment"]["spec"]["template"]["metadata"]
    assert template == {"labels": labels}


def test_outside_a_git_checkout_there_is_no_commit_annotation(base_repo: Path) -> None:
    repo = load_repo(base_repo)
    assert repo.commit is None
    for workspace in render(repo):
        for obj in workspace.objects:
            extra = INGRESS_ANNOTATIONS if obj["kind"] == "Ingress" else {}
            assert obj["metadata"]["annotations"] == {ANNOTATION_SOURCE: workspace.source, **extra}


def test_a_stopped_workspace_has_zero_replicas_and_keeps_its_service_and_ingress(
    write: Callable[[str, str], Path], base_repo: Path
) -> None:
    text = (base_repo / "workspaces" / "bob-lab.yaml").read_text() + "  state: stopped\n"
    write("workspaces/bob-lab.yaml", text)
    bob = _by_name(load_repo(base_repo))["bob-lab"]
    assert bob.state == "stopped"
    assert _objects(bob)["Deployment"]["spec"]["replicas"] == 0
    assert set(_objects(bob)) == {"Deployment", "Service", "Ingress"}


def test_requests_equal_limits_and_gpus_appear_only_when_requested(repo: Repo) -> None:
    rendered = _by_name(repo)
    alice = _objects(rendered["alice-code"])["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    bob = _objects(rendered["bob-lab"])["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert alice["resources"] == {
        "requests": {"cpu": "2", "memory": "8Gi"},
        "limits": {"cpu": "2", "memory": "8Gi"},
    }
    assert bob["resources"]["limits"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
    assert bob["resources"]["requests"] == bob["resources"]["limits"]
    assert rendered["bob-lab"].gpu == 1


def test_the_working_directory_is_the_owners_folder_on_the_first_data_source(repo: Repo) -> None:
    pod = _objects(_by_name(repo)["alice-code"])["Deployment"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["workingDir"] == "/team-pvc/workspaces/alice"
    (init,) = pod["initContainers"]
    assert init["command"][:2] == ["sh", "-c"]
    assert init["command"][-2:] == ["/team-pvc/workspaces/alice", "/team-pvc/workspaces/alice/.home/alice-code"]
    assert init["volumeMounts"] == pod["containers"][0]["volumeMounts"][:1], "the home is made, not mounted"
    assert init["securityContext"] == pod["containers"][0]["securityContext"]
    assert init["resources"]["requests"] == init["resources"]["limits"]
    assert pod["volumes"] == [
        {"name": "team-pvc", "persistentVolumeClaim": {"claimName": "team-pvc", "readOnly": False}}
    ]


def test_the_init_container_creates_the_folder_or_says_who_must_make_the_volume_writable(
    repo: Repo, tmp_path: Path
) -> None:
    """A real hostPath volume is owned by root: the pod (UID 1000) gets a message, not a bare EACCES."""
    import subprocess

    (init,) = _objects(_by_name(repo)["alice-code"])["Deployment"]["spec"]["template"]["spec"]["initContainers"]
    assert init["terminationMessagePolicy"] == "FallbackToLogsOnError"
    volume = tmp_path / "workspaces"
    volume.mkdir()
    home = volume / "alice" / ".home" / "alice-code"
    argv = [*init["command"][:-2], str(volume / "alice"), str(home)]
    assert subprocess.run(argv, capture_output=True).returncode == 0
    assert (volume / "alice").is_dir()
    assert home.stat().st_mode & 0o777 == 0o700, "the home holds the IDE's password: private"
    if os.geteuid() == 0:  # as root the permission check would pass: drop to the pod's UID
        volume.chmod(0o755)
        denied = subprocess.run(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", *argv[:-2],
                                 str(volume / "bob")], capture_output=True, text=True)
        assert denied.returncode == 1
        assert f"the platform team must make {volume} writable by group 1000" in denied.stderr


def test_the_ingress_lifts_ingress_nginx_upload_and_websocket_limits(repo: Repo) -> None:
    annotations = _objects(_by_name(repo)["alice-code"])["Ingress"]["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600


def test_without_a_data_source_there_is_no_working_directory_init_container_or_volume(repo: Repo) -> None:
    pod = _objects(_by_name(repo)["bob-lab"])["Deployment"]["spec"]["template"]["spec"]
    assert "initContainers" not in pod and "volumes" not in pod
    container = pod["containers"][0]
    assert "workingDir" not in container and "volumeMounts" not in container
    assert container["args"] == ["--ServerApp.authenticate_prometheus=False"], "only the activity endpoint's flag"


def test_jupyterlab_is_started_with_its_root_dir_in_the_working_directory(
    write: Callable[[str, str], Path], base_repo: Path
) -> None:
    text = (base_repo / "workspaces" / "bob-lab.yaml").read_text() + "  dataSources: [team-pvc]\n"
    write("workspaces/bob-lab.yaml", text)
    bob = _by_name(load_repo(base_repo))["bob-lab"]
    container = _objects(bob)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == [
        "--ServerApp.root_dir=/team-pvc/workspaces/bob",
        "--ServerApp.authenticate_prometheus=False",
    ]
    assert bob.url == "https://demo-bob-lab.example.org/lab"


def test_workdir_placeholders_in_args_are_substituted_and_env_is_sorted(
    write: Callable[[str, str], Path], base_repo: Path
) -> None:
    write(
        "blocks/environments/vscode.yaml",
        "apiVersion: workspaces/v1\nkind: Environment\nmetadata:\n  name: vscode\nspec:\n"
        "  image: registry.example.org/vscode:4.16.1\n  tool: vscode\n  port: 8080\n"
        '  args: ["--open", "{workdir}/notes", "{other}"]\n'
        "  env: {ZED: z, ALPHA: a, MIDDLE: m}\n"
        "  credentials: {file: /config.yaml}\n",
    )
    alice = _objects(_by_name(load_repo(base_repo))["alice-code"])["Deployment"]
    container = alice["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["--open", "/team-pvc/workspaces/alice/notes", "{other}"]
    assert container["env"] == [
        {"name": "ALPHA", "value": "a"},
        {"name": "HOME", "value": "/home/coder"},
        {"name": "MIDDLE", "value": "m"},
        {"name": "ZED", "value": "z"},
    ]


def test_ports_probe_and_service_use_the_environment_port_with_explicit_protocols(repo: Repo) -> None:
    objects = _objects(_by_name(repo)["alice-code"])
    container = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"]["tcpSocket"] == {"port": 8080}
    service = objects["Service"]["spec"]
    assert service["type"] == "ClusterIP"
    assert service["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    assert service["selector"] == objects["Deployment"]["spec"]["selector"]["matchLabels"]
    rule = objects["Ingress"]["spec"]["rules"][0]
    assert rule["host"] == "demo-alice-code.example.org"
    assert rule["http"]["paths"][0]["backend"] == {"service": {"name": "alice-code", "port": {"number": 8080}}}


def test_the_pod_runs_restricted(repo: Repo) -> None:
    deployment = _objects(_by_name(repo)["alice-code"])["Deployment"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = pod["containers"][0]["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize(
    ("hints", "workspace", "expected"),
    [
        (
            "kubectl",
            "alice-code",
            "kubectl -n demo exec deploy/alice-code -- cat /home/coder/.config/code-server/config.yaml",
        ),
        ("kubectl", "bob-lab", 'kubectl -n demo logs deploy/bob-lab | grep "lab?token"'),
        (
            "runai",
            "alice-code",
            "runai exec alice-code -p demo -- cat /home/coder/.config/code-server/config.yaml",
        ),
        ("runai", "bob-lab", 'runai logs bob-lab -p demo | grep "lab?token"'),
    ],
)
def test_the_credential_hint_follows_the_projects_cli(
    write: Callable[[str, str], Path], base_repo: Path, hints: str, workspace: str, expected: str
) -> None:
    project = (base_repo / "project.yaml").read_text().replace("  domain:", f"  hints: {hints}\n  domain:")
    write("project.yaml", project)
    assert _by_name(load_repo(base_repo))[workspace].credential_hint == expected


def test_the_namespace_comes_from_the_project(write: Callable[[str, str], Path], base_repo: Path) -> None:
    project = (base_repo / "project.yaml").read_text().replace("  domain:", "  namespace: team-ns\n  domain:")
    write("project.yaml", project)
    alice = _by_name(load_repo(base_repo))["alice-code"]
    assert {o["metadata"]["namespace"] for o in alice.objects} == {"team-ns"}
    assert alice.credential_hint.startswith("kubectl -n team-ns exec deploy/alice-code")
    assert alice.url == "https://demo-alice-code.example.org"


def test_render_is_pure(repo: Repo) -> None:
    before = copy.deepcopy(repo.workspaces)
    first, second = render(repo), render(repo)
    assert first == second
    assert repo.workspaces == before
    first[0].objects[0]["spec"]["replicas"] = 7  # the dicts are fresh: nothing shared between calls
    assert render(repo)[0].objects[0]["spec"]["replicas"] == 1


def test_the_desired_workspace_describes_its_blocks(repo: Repo) -> None:
    alice = _by_name(repo)["alice-code"]
    assert (alice.owner, alice.environment, alice.compute, alice.tool) == (
        "alice",
        "vscode",
        "small",
        "vscode",
    )
    assert (alice.data_sources, alice.pvcs) == (("team-pvc",), ("team-pvc",))
    assert alice.source == "workspaces/alice-code.yaml"
