"""docs/INSTALL.md's GitHub half is not run (no GitHub here), so it is checked against what it configures:
every bash block parses, the JSON bodies sent with `gh api` parse, and the names it sets (required
checks, secrets, the environment) are the ones the workflows use. The cluster half is run as written
by tests/e2e/test_install.py."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
INSTALL = (ROOT / "docs" / "INSTALL.md").read_text()
BLOCKS = re.findall(r"^```bash[^\n]*\n(.*?)^```$", INSTALL, re.M | re.S)


def _workflow(name: str) -> dict[object, object]:
    return yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())  # type: ignore[no-any-return]


def test_every_bash_block_parses() -> None:
    assert len(BLOCKS) >= 8
    for block in BLOCKS:
        p = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, f"{p.stderr}\n--- block\n{block}"


def test_the_json_bodies_parse_and_protect_main_with_the_plan_workflows_jobs() -> None:
    bodies = [json.loads(b.replace("$TEAM_ID", "1"))
              for b in re.findall(r"--input - <<'?EOF'?\n(.*?)^EOF$", INSTALL, re.M | re.S)]
    protection, environment = bodies
    jobs = {job["name"] for job in _workflow("plan.yml")["jobs"].values()}  # type: ignore[union-attr]
    assert set(protection["required_status_checks"]["contexts"]) == {"validate", "plan"} <= jobs
    assert protection["required_pull_request_reviews"]["require_code_owner_reviews"] is True
    assert environment["reviewers"] and environment["deployment_branch_policy"]["protected_branches"] is True


def test_the_secrets_and_environment_it_sets_are_the_ones_the_workflows_read() -> None:
    plan, apply = (ROOT / ".github/workflows/plan.yml").read_text(), (ROOT / ".github/workflows/apply.yml").read_text()
    assert "gh secret set KUBECONFIG_PLAN --repo" in INSTALL and "secrets.KUBECONFIG_PLAN" in plan
    assert "gh secret set KUBECONFIG_APPLY --env production" in INSTALL and "secrets.KUBECONFIG_APPLY" in apply
    assert _workflow("apply.yml")["jobs"]["apply"]["environment"] == "production"  # type: ignore[index]
    assert 'base64 -d > "$RUNNER_TEMP/kubeconfig"' in plan  # the workflows decode what `base64 -w0` stored
