"""Reports: the JSON contract, terraform-like text, PR Markdown and status, against golden files.

Regenerate the golden files with ``UPDATE_GOLDEN=1 pytest tests/unit/test_report.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from reconciler.plan import Action, LiveState, Plan, StatusRow, WorkspaceResult
from reconciler.report import (
    APPLY_MARKER,
    PLAN_MARKER,
    plan_json,
    plan_markdown,
    plan_text,
    summary_line,
)
from reconciler.status_report import status_json, status_markdown, status_text
from tests.unit.test_plan import (
    CONFIG_FILE,
    PVC_DS,
    SCRATCH_DS,
    SECRET_VALUE,
    live_of,
    oid,
    plan_of,
    workspace,
)

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "plan"
ANSI = re.compile(r"\x1b\[")


def assert_golden(name: str, text: str) -> None:
    """``text`` equals tests/data/plan/<name> exactly (UPDATE_GOLDEN=1 rewrites the file)."""
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text


def scenario() -> Plan:
    """One of everything: a create with capacity warnings, a compute block change with a secret
    change and a removed env var, an unchanged workspace, a delete keeping PVCs and a conflict."""
    bob_before = workspace("bob-vscode", "bob", env={"B": "2", "HF_TOKEN": SECRET_VALUE})
    carol_before = workspace("carol-vscode", "carol")
    dave = workspace(
        "dave-lab",
        "dave",
        tool="jupyterlab",
        environment="aisg-jupyterlab",
        image="jupyter:4",
        compute="cpu-small",
        cpu="1",
    )
    erin = workspace("erin-vscode", "erin", data_sources=(PVC_DS, SCRATCH_DS))
    frank = workspace("frank-vscode", "frank")
    live = live_of(
        bob_before,
        carol_before,
        dave,
        erin,
        frank,
        pvcs={"sample-project-pvc": "Bound", "scratch-pvc": "Pending"},
    )
    live.node_gpus = [0, 2]
    live.objects[oid(frank.objects[1])]["metadata"]["labels"] = {"app": "hand-made"}
    desired = [
        workspace(
            "alice-vscode",
            "alice",
            compute="gpu-4",
            cpu="8",
            memory="64Gi",
            gpu=4,
            env={"WANDB_API_KEY": SECRET_VALUE},
            data_sources=(PVC_DS, SCRATCH_DS),
        ),
        workspace("bob-vscode", "bob", env={"HF_TOKEN": SECRET_VALUE + "-rotated"}, cpu="8"),
        workspace("carol-vscode", "carol", cpu="8"),
        dave,
        frank,
    ]
    return plan_of(desired, live)


def noop() -> Plan:
    """Two workspaces, nothing to do."""
    ws = [workspace("a-vscode", "a"), workspace("b-vscode", "b")]
    return plan_of(ws, live_of(*ws))


RESULTS = {
    "alice-vscode": WorkspaceResult(
        ready=False, reason="0/2 nodes are available: 2 Insufficient nvidia.com/gpu"
    ),
    "bob-vscode": WorkspaceResult(ready=True, reason="ready"),
    "carol-vscode": WorkspaceResult(
        ready=None, errors=["Deployment/sample-project/carol-vscode apply failed: 409 Conflict"]
    ),
    "erin-vscode": WorkspaceResult(ready=None),
}

STATUS = [
    StatusRow(
        "jane-doe-vscode",
        "jane-doe",
        "ready",
        "https://sample-project-jane-doe-vscode.runai.aisingapore.net",
        f"kubectl -n sample-project exec deploy/jane-doe-vscode -- cat {CONFIG_FILE}",
        "3d",
        "",
        last_active="2026-12-02T05:40:12Z",
    ),
    StatusRow(
        "john-tan-jupyterlab",
        "john-tan",
        "not ready",
        "https://sample-project-john-tan-jupyterlab.runai.aisingapore.net/lab",
        'kubectl -n sample-project logs deploy/john-tan-jupyterlab | grep "lab?token"',
        "5m",
        "ImagePullBackOff: pull access denied",
    ),
    StatusRow("old-vscode", "", "orphaned", "", "", "40d", "in the cluster but not in the repo"),
    StatusRow(
        "new-vscode", "new", "missing", "https://x", "kubectl ...", "", "in the repo but not in the cluster"
    ),
    StatusRow(
        "idle-vscode", "idle", "stopped", "https://y", "kubectl ...", "1d", "scaled to zero; data kept"
    ),
]


# ---------------------------------------------------------------------------------------------
# JSON


def test_plan_json_has_exactly_the_contract_shape() -> None:
    out = plan_json(scenario())
    assert list(out["summary"]) == ["create", "update", "delete", "unchanged", "conflict"]
    assert out["summary"] == {"create": 1, "update": 2, "delete": 1, "unchanged": 1, "conflict": 1}
    alice = out["workspaces"][0]
    assert list(alice)[:6] == ["name", "owner", "action", "url", "credentialHint", "objects"]
    assert alice["objects"][0] == {
        "kind": "Deployment",
        "name": "alice-vscode",
        "action": "create",
        "diff": [],
    }
    carol = next(w for w in out["workspaces"] if w["name"] == "carol-vscode")
    assert carol["objects"][0]["diff"][0] == {
        "path": "spec.template.spec.containers[name=workspace].resources.requests.cpu",
        "live": "4",
        "desired": "8",
    }
    assert {w["action"] for w in out["workspaces"]} == {a.value for a in Action}
    json.dumps(out)


def test_plan_json_marks_a_masked_diff_and_carries_extras() -> None:
    out = plan_json(scenario())
    bob = next(w for w in out["workspaces"] if w["name"] == "bob-vscode")
    assert bob["objects"][0]["diff"][0] == {
        "path": "spec.template.spec.containers[name=workspace].env[name=HF_TOKEN].value",
        "live": "***",
        "desired": "***",
        "masked": True,
    }
    assert bob["restarts"] is True
    erin = next(w for w in out["workspaces"] if w["name"] == "erin-vscode")
    assert erin["keptPvcs"] == ["sample-project-pvc", "scratch-pvc"]
    assert out["blastRadius"] == [
        {"kind": "compute", "name": "cpu-mid", "workspaces": ["bob-vscode", "carol-vscode"]}
    ]
    assert len(out["warnings"]) == 2


def test_plan_json_with_apply_results_adds_ready_reason_and_errors() -> None:
    out = plan_json(scenario(), RESULTS)
    alice = out["workspaces"][0]
    assert (alice["ready"], alice["reason"], alice["errors"]) == (False, RESULTS["alice-vscode"].reason, [])
    assert "ready" not in next(w for w in out["workspaces"] if w["name"] == "dave-lab")


# ---------------------------------------------------------------------------------------------
# No secret anywhere


def test_no_secret_value_appears_in_any_report() -> None:
    plan = scenario()
    outputs = [
        json.dumps(plan_json(plan, RESULTS)),
        plan_text(plan, False),
        plan_text(plan, True, RESULTS),
        plan_markdown(plan, dry_run=True),
        plan_markdown(plan, dry_run=False, results=RESULTS),
    ]
    for out in outputs:
        assert SECRET_VALUE not in out
        assert "***" in out


# ---------------------------------------------------------------------------------------------
# Text


def test_the_summary_line_counts_workspaces_per_action() -> None:
    assert summary_line(scenario()) == "Plan: 1 to create, 2 to update, 1 to delete, 1 unchanged, 1 conflict."
    assert summary_line(noop()) == "Plan: 0 to create, 0 to update, 0 to delete, 2 unchanged, 0 conflicts."


def test_plain_text_has_no_colour_codes_and_coloured_text_has_them() -> None:
    plan = scenario()
    assert not ANSI.search(plan_text(plan, False))
    coloured = plan_text(plan, True)
    assert ANSI.search(coloured)
    assert ANSI.sub("", re.sub(r"\x1b\[[0-9;]*m", "", coloured)) == plan_text(plan, False)


def test_the_text_plan_matches_its_golden_file() -> None:
    assert_golden("scenario.txt", plan_text(scenario(), False))


def test_the_text_plan_with_apply_results_matches_its_golden_file() -> None:
    assert_golden("scenario-applied.txt", plan_text(scenario(), False, RESULTS))


def test_a_plan_without_changes_says_so() -> None:
    assert_golden("noop.txt", plan_text(noop(), False))


# ---------------------------------------------------------------------------------------------
# Markdown


def test_the_dry_run_markdown_starts_with_the_plan_marker_and_matches_its_golden_file() -> None:
    md = plan_markdown(
        scenario(),
        dry_run=True,
        commit="0123456789abcdef0123456789abcdef01234567",
        details_url="https://github.com/org/workspaces/actions/runs/42",
    )
    assert md.startswith(PLAN_MARKER + "\n")
    assert_golden("scenario.md", md)


def test_the_apply_markdown_starts_with_the_apply_marker_and_shows_readiness() -> None:
    md = plan_markdown(scenario(), dry_run=False, results=RESULTS, commit="0123456789abcdef")
    assert md.startswith(APPLY_MARKER + "\n")
    assert "| `+` create | `alice-vscode` |" in md
    assert "not ready: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu" in md
    assert_golden("scenario-applied.md", md)


def test_the_markdown_of_a_plan_without_changes_is_short() -> None:
    assert_golden("noop.md", plan_markdown(noop(), dry_run=True))


def test_a_credential_command_with_backticks_keeps_its_code_block_intact() -> None:
    w = workspace("a-vscode", "a")
    w = type(w)(**{**w.__dict__, "credential_hint": "kubectl logs deploy/a | grep ```token```"})
    md = plan_markdown(plan_of([w], LiveState({}, {}, [])), dry_run=True)
    assert "````sh\nkubectl logs deploy/a | grep ```token```\n````" in md


# ---------------------------------------------------------------------------------------------
# Status


def test_status_json_lists_every_workspace_with_counts_per_state() -> None:
    out = status_json(STATUS)
    assert out["summary"] == {"ready": 1, "not ready": 1, "stopped": 1, "missing": 1, "orphaned": 1}
    assert out["workspaces"][1] == {
        "name": "john-tan-jupyterlab",
        "owner": "john-tan",
        "state": "not ready",
        "url": "https://sample-project-john-tan-jupyterlab.runai.aisingapore.net/lab",
        "credentialHint": 'kubectl -n sample-project logs deploy/john-tan-jupyterlab | grep "lab?token"',
        "age": "5m",
        "reason": "ImagePullBackOff: pull access denied",
        "credentialHintPowerShell": "",
        "lastActive": None,
    }


def test_status_text_and_markdown_match_their_golden_files() -> None:
    assert not ANSI.search(status_text(STATUS, False))
    assert ANSI.search(status_text(STATUS, True))
    assert_golden("status.txt", status_text(STATUS, False))
    assert_golden("status.md", status_markdown(STATUS))


def test_status_markdown_and_json_show_when_a_running_workspace_was_last_active() -> None:
    md = status_markdown(STATUS).splitlines()
    header = md[2].split(" | ")
    column = header.index("Last active (UTC)")
    jane = next(line for line in md if "`jane-doe-vscode`" in line).split(" | ")
    john = next(line for line in md if "`john-tan-jupyterlab`" in line).split(" | ")
    assert jane[column] == "2026-12-02 05:40:12"
    assert john[column] == "—"  # running but no reading
    assert status_json(STATUS)["workspaces"][0]["lastActive"] == "2026-12-02T05:40:12Z"


@pytest.mark.parametrize("rows", [[], STATUS[:1]])
def test_status_of_zero_or_one_workspace_reads_well(rows: list[StatusRow]) -> None:
    text = status_text(rows, False)
    assert text.splitlines()[-1] == ("0 workspaces" if not rows else "1 workspace: 1 ready")
