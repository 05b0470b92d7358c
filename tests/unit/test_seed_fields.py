"""The fields the seed guide's users set by hand before: home on the volume, VS Code extensions, Run:ai
scheduling (GPU fractions, node pools), /dev/shm, and the ingress class and TLS secret.

The repo under tests/data/seed sets every one of them; its golden files hold the exact objects.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from reconciler import extensions
from reconciler.changeset import LiveState, ObjectId, Plan, PlanOptions
from reconciler.plan import compute_plan
from reconciler.readiness import status_rows
from reconciler.render import LABEL_INSTANCE, DesiredWorkspace, render
from reconciler.report import plan_markdown, plan_text
from reconciler.status_report import status_markdown, status_text
from reconciler.validate import load_repo
from tests.unit.test_render import _check_golden

SEED = Path(__file__).resolve().parents[1] / "data" / "seed"


def test_the_seed_fields_repo_renders_exactly_as_its_golden_files() -> None:
    _check_golden(load_repo(SEED), "seed")


# --- the plan: field diffs, blast radius, warnings ------------------------------------------------


def _seed_copy(tmp_path: Path) -> Path:
    root = tmp_path / "seed"
    shutil.copytree(SEED, root)
    return root


def _edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _as_live(desired: list[DesiredWorkspace], node_gpus: list[int] | None = None,
             node_labels: list[dict[str, str]] | None = None) -> LiveState:
    """What the cluster holds after these were applied (the fields we set, nothing else)."""
    objects: dict[ObjectId, dict[str, Any]] = {}
    for w in desired:
        for obj in w.objects:
            live = copy.deepcopy(obj)
            if live["kind"] == "Deployment":
                live["status"] = {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}
            objects[ObjectId(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])] = live
    claims = {c: "Bound" for w in desired for c in w.pvcs}
    return LiveState(objects=objects, pvcs=claims, node_gpus=[8] if node_gpus is None else node_gpus,
                     node_labels=node_labels)


def _plan(before: Path, after: Path, **live: Any) -> Plan:
    desired = render(load_repo(after))
    repo = load_repo(after)
    return compute_plan(desired, _as_live(render(load_repo(before)), **live), repo.project.name,
                        repo.project.namespace, PlanOptions())


def _diff_paths(plan: Plan, name: str) -> list[str]:
    workspace = next(w for w in plan.workspaces if w.name == name)
    return [d.path for o in workspace.objects for d in o.diff]


def test_a_node_pool_and_shm_added_to_a_compute_block_show_as_field_diffs_and_restart_its_workspaces(
    tmp_path: Path,
) -> None:
    before = _seed_copy(tmp_path / "a")
    _edit(before / "blocks/compute/half-a100.yaml", lambda d: [d["spec"].pop(k) for k in ("nodePool", "shm")])
    plan = _plan(before, SEED)
    paths = _diff_paths(plan, "alice-code")
    pod = "spec.template.spec"
    assert f"{pod}.nodeSelector" in paths and f"{pod}.tolerations" in paths
    assert f"{pod}.volumes[name=dshm]" in paths
    assert f"{pod}.containers[name=workspace].volumeMounts[mountPath=/dev/shm]" in paths
    assert [(b.kind, b.name, b.workspaces) for b in plan.blast_radius] == [("compute", "half-a100", ["alice-code"])]


def test_a_whole_gpu_becoming_a_fraction_shows_the_gpu_fraction_annotation(tmp_path: Path) -> None:
    before = _seed_copy(tmp_path / "b")
    _edit(before / "blocks/compute/half-a100.yaml", lambda d: d["spec"].update(gpu=1))
    plan = _plan(before, SEED)
    diffs = {d.path: d for w in plan.workspaces if w.name == "alice-code" for o in w.objects for d in o.diff}
    added = diffs["spec.template.metadata.annotations"]
    assert (added.live, added.desired) == (None, {"gpu-fraction": "0.5"})
    assert ("compute", "half-a100") in [(b.kind, b.name) for b in plan.blast_radius]
    assert ("compute", "half-a100") in [(b.kind, b.name) for b in plan.blast_radius]


def test_a_new_extension_is_a_change_of_the_environment_block(tmp_path: Path) -> None:
    after = _seed_copy(tmp_path / "c")
    _edit(after / "blocks/environments/vscode-ext.yaml",
          lambda d: d["spec"]["vscode"]["extensions"].append("redhat.vscode-yaml"))
    plan = _plan(SEED, after)
    assert "spec.template.spec.initContainers[name=install-extensions].command" in _diff_paths(plan, "alice-code")
    assert [(b.kind, b.name) for b in plan.blast_radius] == [("environment", "vscode-ext")]


def test_changing_the_ingress_class_tls_and_annotations_shows_in_the_ingress_diff(tmp_path: Path) -> None:
    after = _seed_copy(tmp_path / "d")
    _edit(after / "project.yaml", lambda d: d["spec"]["ingress"].update(
        className="traefik", tlsSecret="other-tls", annotations={"example.org/team": "gpu"}))
    paths = _diff_paths(_plan(SEED, after), "alice-code")
    assert "spec.ingressClassName" in paths
    assert "spec.tls" in paths or "spec.tls[0].secretName" in paths
    assert "metadata.annotations.example.org/team" in paths


def test_the_plan_warns_when_no_tls_secret_is_set_and_not_when_one_is(tmp_path: Path, base_repo: Path) -> None:
    assert not [w for w in _plan(SEED, SEED).warnings if "tlsSecret" in w]
    (warning,) = [w for w in _plan(base_repo, base_repo).warnings if "tlsSecret" in w]
    assert "default certificate" in warning


def test_the_capacity_warning_names_the_node_pool_that_cannot_fit_the_request() -> None:
    a100 = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    h100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    plan = _plan(SEED, SEED, node_gpus=[8, 1], node_labels=[h100, a100])
    assert plan.warnings == [
        "bob-lab: requests 2 GPU(s) but no node of node pool a100 has that many allocatable nvidia.com/gpu "
        "(largest: 1); the pod would stay Pending"
    ], "half a GPU fits the A100 node with one GPU; two do not, though the H100 node has 8"
    none = _plan(SEED, SEED, node_gpus=[8], node_labels=[h100])
    assert sorted(none.warnings) == [
        f"{name}: no node matches node pool a100 (nodeSelector nvidia.com/gpu.product=NVIDIA-A100-SXM4-80GB); "
        "the pod would stay Pending" for name in ("alice-code", "bob-lab")
    ]


# --- the install container: what it does, and what status reads from it ---------------------------


FAKE_CODE_SERVER = """#!/bin/sh
# A stand-in for code-server: installs anything but names 'broken.*', and counts its calls.
echo "$@" >> "$CALLS"
case "$2" in
  broken.*) echo "Installing extensions..."; echo "Extension '$2' not found."
            echo "Make sure you use the full extension ID, including the publisher, e.g.: ms-dotnettools.csharp"
            echo "Failed Installing Extensions: $2" >&2; exit 1;;
  offline.*) echo "Installing extensions..."
             echo "Error while installing extensions: getaddrinfo EAI_AGAIN open-vsx.org"
             echo "getaddrinfo EAI_AGAIN open-vsx.org" >&2; exit 1;;
esac
echo "Extension '$2' was successfully installed."
"""


def test_the_install_script_installs_once_records_failures_and_never_fails(tmp_path: Path) -> None:
    bin_dir, home = tmp_path / "bin", tmp_path / "home"
    bin_dir.mkdir()
    (bin_dir / "code-server").write_text(FAKE_CODE_SERVER)
    (bin_dir / "code-server").chmod(0o755)
    log, calls = tmp_path / "termination-log", tmp_path / "calls"
    script = extensions.SCRIPT.replace("/dev/termination-log", str(log))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home), "CALLS": str(calls)}
    argv = ["sh", "-c", script, extensions.CONTAINER_NAME, "ms-python.python", "/data/x.vsix", "broken.one",
            "offline.one"]

    first = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert first.returncode == 0
    assert log.read_text().splitlines() == [
        "ms-python.python: installed",
        "/data/x.vsix: installed",
        "broken.one: failed: Extension 'broken.one' not found.",
        "offline.one: failed: Error while installing extensions: getaddrinfo EAI_AGAIN open-vsx.org",
    ]
    pod = _pod("alice-code", "2024-05-01T08:00:00Z", log.read_text())
    assert extensions.extension_failures(pod) == (
        "extension broken.one not installed: Extension 'broken.one' not found.; "
        "extension offline.one not installed: cannot reach open-vsx.org (EAI_AGAIN)")
    second = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert second.returncode == 0
    assert log.read_text().splitlines()[:2] == ["ms-python.python: kept", "/data/x.vsix: kept"]
    assert calls.read_text().count("ms-python.python") == 1, "a restart does not install it again"
    assert calls.read_text().count("broken.one") == 2, "a failed one is tried again at the next start"


def test_a_failed_extension_reads_as_one_short_line_whatever_code_server_printed() -> None:
    reason = extensions.failure_reason
    # what an install container before this version recorded: two output lines joined, the error twice
    assert reason("Error while installing extensions: getaddrinfo EAI_AGAIN open-vsx.org "
                  "getaddrinfo EAI_AGAIN open-vsx.org ") == "cannot reach open-vsx.org (EAI_AGAIN)"
    assert reason("getaddrinfo ENOTFOUND open-vsx.org") == "cannot reach open-vsx.org (ENOTFOUND)"
    assert reason("Error while installing extensions: connect ECONNREFUSED 127.0.0.1:9") == (
        "cannot reach 127.0.0.1:9 (ECONNREFUSED)")
    assert reason("Installing extensions... Failed Installing Extensions: broken.one ") == "code-server gave no reason"
    assert reason("") == "code-server gave no reason"
    long = reason("Corrupt ZIP: end of central directory record signature not found " * 5)
    assert len(long) == extensions.REASON_CHARS and long.endswith("...") and "  " not in long


def _pod(name: str, created: str, message: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {LABEL_INSTANCE: name}, "creationTimestamp": created},
        "status": {"initContainerStatuses": [
            {"name": "init-workdir", "state": {"terminated": {"exitCode": 0}}},
            {"name": extensions.CONTAINER_NAME, "state": {"terminated": {"exitCode": 0, "message": message}}},
        ]},
    }


def test_status_names_each_failed_extension_and_why_from_the_newest_pod() -> None:
    old = _pod("alice-code", "2024-05-01T08:00:00Z", "a.b: failed: old\n")
    new = _pod("alice-code", "2024-05-01T09:00:00Z",
               "ms-python.python: kept\nbroken.one: failed: getaddrinfo ENOTFOUND\n")
    fine = _pod("carol-code", "2024-05-01T09:00:00Z", "ms-python.python: installed\n")
    assert extensions.extension_notes(["alice-code", "carol-code"], [old, new, fine]) == {
        "alice-code": "extension broken.one not installed: getaddrinfo ENOTFOUND"
    }


def test_the_gallery_is_open_vsx_unless_the_project_names_one(base_repo: Path) -> None:
    assert extensions.gallery_env(load_repo(base_repo).project) == []
    (env,) = extensions.gallery_env(load_repo(SEED).project)
    assert env["name"] == "EXTENSIONS_GALLERY"
    assert json.loads(env["value"]) == {"serviceUrl": "https://vsx.example.org/vscode/gallery",
                                        "itemUrl": "https://vsx.example.org/vscode/item"}


def test_switching_the_project_to_the_runai_scheduler_restarts_pods_but_changes_no_block(tmp_path: Path) -> None:
    before = _seed_copy(tmp_path / "e")
    after = _seed_copy(tmp_path / "f")
    for root in (before, after):  # whole GPUs only: a fraction needs the Run:ai scheduler
        _edit(root / "blocks/compute/half-a100.yaml", lambda d: d["spec"].update(gpu=1))
    _edit(before / "project.yaml", lambda d: d["spec"].update(scheduler="default"))
    plan = _plan(before, after)
    assert "spec.template.spec.schedulerName" in _diff_paths(plan, "alice-code")
    assert all(w.restarts for w in plan.workspaces)
    assert plan.blast_radius == []


def test_the_pr_comment_plan_text_and_status_give_the_powershell_command_next_to_the_posix_one(
    tmp_path: Path,
) -> None:
    empty = _seed_copy(tmp_path / "g")
    for name in ("alice-code", "bob-lab"):
        (empty / "workspaces" / f"{name}.yaml").unlink()
    plan = _plan(empty, SEED)  # both workspaces are created
    markdown = plan_markdown(plan, dry_run=False)
    assert "```sh\nkubectl -n runai-gpu-team logs deploy/bob-lab | grep \"lab?token\"\n```" in markdown
    assert ("On Windows PowerShell:\n\n```powershell\nkubectl -n runai-gpu-team logs deploy/bob-lab | "
            "Select-String -SimpleMatch -Pattern 'lab?token'\n```") in markdown
    assert ("(PowerShell): kubectl -n runai-gpu-team exec deploy/alice-code '--' cat "
            "'/home/coder/.config/code-server/config.yaml'") in plan_text(plan, False)
    rows = status_rows(render(load_repo(SEED)), {w: _ready(w) for w in ("alice-code", "bob-lab")}, {},
                       dt.datetime(2024, 5, 1, 9, tzinfo=dt.UTC))
    assert "(PowerShell): kubectl -n runai-gpu-team logs deploy/bob-lab | Select-String" in status_text(rows, False)
    assert "PowerShell: `kubectl -n runai-gpu-team exec deploy/alice-code '--' cat" in status_markdown(rows)


def _ready(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "generation": 1, "creationTimestamp": "2024-05-01T08:00:00Z"},
            "spec": {"replicas": 1},
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}}
