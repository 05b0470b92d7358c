"""The Run:ai backend's pure parts: files -> Run:ai workspace specs, the spec hash, the hints, the plan's words."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from runai.models import WorkspaceCreationRequest

from reconciler.changeset import LiveState, PlanOptions
from reconciler.plan import compute_plan
from reconciler.runai import annotate
from reconciler.runai_spec import (
    ANNOTATION_SPEC_HASH,
    KIND,
    api_spec,
    live_object,
    powershell_hint,
    render_runai,
)
from reconciler.validate import load_repo
from tests.fakerunai import _unknown_fields


def _runai(root: Path) -> Path:
    project = yaml.safe_load((root / "project.yaml").read_text())
    project["spec"].update(backend="runai", runai={"url": "https://runai.example.com", "cluster": "c1",
                                                   "project": "team-a"})
    (root / "project.yaml").write_text(yaml.safe_dump(project))
    return root


def _by_name(root: Path) -> dict[str, Any]:
    return {w.name: w for w in render_runai(load_repo(root))}


def test_every_rendered_spec_is_a_valid_creation_request_of_the_published_schema(base_repo: Path) -> None:
    for w in _by_name(_runai(base_repo)).values():
        body = {"name": w.name, "projectId": "4", "clusterId": "c", "spec": api_spec(w.objects[0]["spec"])}
        parsed = WorkspaceCreationRequest.from_dict(body)
        assert _unknown_fields(body, parsed.to_dict()) == [], "no field runapy's model would drop"


def test_a_workspace_maps_to_image_args_env_compute_pvcs_and_its_tool_connection(base_repo: Path) -> None:
    w = _by_name(_runai(base_repo))["bob-lab"]
    obj = w.objects[0]
    assert (obj["kind"], obj["metadata"]["name"], obj["metadata"]["namespace"]) == (KIND, "bob-lab", "team-a")
    spec = obj["spec"]
    assert spec["compute"]["gpuDevicesRequest"] == 1, "whole GPUs are devices"
    assert spec["compute"]["cpuCoreRequest"] == 4.0 and spec["compute"]["cpuMemoryRequest"] == "16Gi"
    assert spec["exposedUrls"] == [{"container": spec["exposedUrls"][0]["container"],
                                    "toolType": "jupyter-notebook", "toolName": "Jupyter"}]
    assert isinstance(api_spec({**spec, "args": ["--a", "b c"]})["args"], str), "Run:ai takes args as one string"
    assert api_spec({"args": ["--a", "b c"]})["args"] == "--a 'b c'"
    names = {a["name"]: a["value"] for a in spec["annotations"]}
    assert names["workspace-gitops/managed-by"] == "workspace-reconciler"
    assert names[ANNOTATION_SPEC_HASH] == obj["metadata"]["annotations"][ANNOTATION_SPEC_HASH]
    assert w.url == "", "the URL is Run:ai's, known once the workspace exists"


def test_a_gpu_portion_is_one_device_with_that_portion(base_repo: Path, write: Callable[[str, str], Path]) -> None:
    write("blocks/compute/gpu-one.yaml", "apiVersion: workspaces/v1\nkind: ComputeResource\n"
          "metadata: {name: gpu-one}\nspec: {cpu: '4', memory: 16Gi, gpu: 0.5}\n")
    compute = _by_name(_runai(base_repo))["bob-lab"].objects[0]["spec"]["compute"]
    got = (compute["gpuDevicesRequest"], compute["gpuRequestType"], compute["gpuPortionRequest"])
    assert got == (1, "portion", 0.5)


def test_the_spec_hash_is_stable_and_changes_with_the_spec_only(base_repo: Path,
                                                               write: Callable[[str, str], Path]) -> None:
    root = _runai(base_repo)
    first = _by_name(root)["bob-lab"].objects[0]["metadata"]["annotations"][ANNOTATION_SPEC_HASH]
    assert _by_name(root)["bob-lab"].objects[0]["metadata"]["annotations"][ANNOTATION_SPEC_HASH] == first
    write("blocks/compute/gpu-one.yaml", "apiVersion: workspaces/v1\nkind: ComputeResource\n"
          "metadata: {name: gpu-one}\nspec: {cpu: '4', memory: 32Gi, gpu: 1}\n")
    assert _by_name(root)["bob-lab"].objects[0]["metadata"]["annotations"][ANNOTATION_SPEC_HASH] != first


def test_credential_hints_are_the_seeds_runai_workspace_commands(example_repo: Path) -> None:
    ws = _by_name(_runai(example_repo))
    assert ws["jane-doe-vscode"].credential_hint == (
        "runai workspace exec jane-doe-vscode -p team-a -- cat /home/coder/.config/code-server/config.yaml")
    hint = ws["john-tan-jupyterlab"].credential_hint
    assert hint == 'runai workspace logs john-tan-jupyterlab -p team-a | grep "lab?token"'
    assert powershell_hint(hint) == \
        'runai workspace logs john-tan-jupyterlab -p team-a | Select-String -SimpleMatch "lab?token"'


def _plan_against(desired: list[Any], live: dict[str, Any]) -> Any:
    from reconciler.changeset import ObjectId

    objects = {ObjectId(KIND, "team-a", name): obj for name, obj in live.items()}
    return annotate(compute_plan(desired, LiveState(objects, None, None), "demo", "team-a", PlanOptions()), desired, {})


def test_a_changed_spec_is_a_recreate_and_a_state_change_a_suspend(base_repo: Path) -> None:
    desired = list(_by_name(_runai(base_repo)).values())
    bob = next(w for w in desired if w.name == "bob-lab")
    ours = {"spec": {**bob.objects[0]["spec"], "annotations": [
        {"name": "workspace-gitops/managed-by", "value": "workspace-reconciler"},
        {"name": ANNOTATION_SPEC_HASH, "value": "0000000000000000"}]}, "desiredPhase": "Running"}
    listed = {"name": "bob-lab", "id": "w-1", "type": "workspace", "phase": "Running", "urls": ["https://x/bob"]}
    plan = _plan_against(desired, {"bob-lab": live_object(listed, ours, "demo", "team-a")})
    w = next(w for w in plan.workspaces if w.name == "bob-lab")
    assert w.action.value == "update" and w.restarts and w.url == "https://x/bob"
    assert w.notes[0].startswith("recreate:")

    same = {**ours, "spec": bob.objects[0]["spec"], "desiredPhase": "Stopped"}
    plan = _plan_against(desired, {"bob-lab": live_object(listed, same, "demo", "team-a")})
    w = next(w for w in plan.workspaces if w.name == "bob-lab")
    assert w.action.value == "update" and not w.restarts
    assert w.notes[0].startswith("resume"), "live Stopped, desired running"


def test_a_workload_without_our_annotation_is_a_conflict(base_repo: Path) -> None:
    desired = list(_by_name(_runai(base_repo)).values())
    listed = {"name": "bob-lab", "id": "w-2", "type": "training", "phase": "Running"}
    plan = _plan_against(desired, {"bob-lab": live_object(listed, None, "demo", "team-a")})
    assert next(w for w in plan.workspaces if w.name == "bob-lab").action.value == "conflict"


def test_a_secret_in_args_is_masked_in_the_plan_as_for_kubernetes(base_repo: Path,
                                                                  write: Callable[[str, str], Path]) -> None:
    write("blocks/environments/jupyter.yaml", (base_repo / "blocks/environments/jupyter.yaml").read_text()
          .replace("spec:\n", "spec:\n  args: [--ServerApp.token, s3cr3t-value]\n", 1))
    desired = list(_by_name(_runai(base_repo)).values())
    bob = next(w for w in desired if w.name == "bob-lab")
    assert bob.objects[0]["spec"]["args"][:2] == ["--ServerApp.token", "s3cr3t-value"]
    live_spec = {**api_spec(bob.objects[0]["spec"]), "args": "--ServerApp.token older-secret"}
    live_spec["annotations"] = [{"name": "workspace-gitops/managed-by", "value": "workspace-reconciler"}]
    listed = {"name": "bob-lab", "id": "w-1", "type": "workspace", "phase": "Running"}
    plan = _plan_against(desired, {"bob-lab": live_object(listed, {"spec": live_spec}, "demo", "team-a")})
    text = repr(next(w for w in plan.workspaces if w.name == "bob-lab").objects[0].diff)
    assert "s3cr3t-value" not in text and "older-secret" not in text and "***" in text


def test_shm_node_pool_and_a_home_on_the_volume_map_to_what_runai_has(base_repo: Path,
                                                                      write: Callable[[str, str], Path]) -> None:
    project = yaml.safe_load((base_repo / "project.yaml").read_text())
    project["spec"]["nodePools"] = {"a100": {}}
    (base_repo / "project.yaml").write_text(yaml.safe_dump(project))
    write("blocks/compute/gpu-one.yaml", "apiVersion: workspaces/v1\nkind: ComputeResource\n"
          "metadata: {name: gpu-one}\nspec: {cpu: '4', memory: 16Gi, gpu: 1, shm: 8Gi, nodePool: a100}\n")
    spec = _by_name(_runai(base_repo))["bob-lab"].objects[0]["spec"]
    assert spec["compute"]["largeShmRequest"] is True
    assert spec["nodePools"] == ["a100"]
    assert "storage" not in spec, "the memory-backed /dev/shm is not a claim to mount"


def test_a_home_kept_in_a_pvc_sub_folder_is_not_mounted_whole(example_repo: Path) -> None:
    spec = _by_name(_runai(example_repo))["jane-doe-vscode"].objects[0]["spec"]
    assert [(p["claimName"], p["path"]) for p in spec["storage"]["pvc"]] == [("sample-project-pvc",
                                                                             "/sample-project-pvc")]


def test_the_client_secret_is_not_in_the_options_repr() -> None:
    """A traceback (RECONCILE_DEBUG=1) or a log line that shows the options never shows the secret."""
    from reconciler.runai_client import RunaiOptions

    opts = RunaiOptions(url="https://runai.example", cluster="c", project="p", client_id="id",
                        client_secret="s3cr3t-v4l")
    assert "s3cr3t-v4l" not in repr(opts) and opts.client_secret == "s3cr3t-v4l"
