"""The workflows with `backend: runai`: Run:ai credentials, read-only for plan, writing only in production."""

from __future__ import annotations

import json

from tests.unit.test_workflows import Runner, jobs, load, runner, step  # noqa: F401  (the fixture)


def test_plan_gets_the_read_only_runai_secrets_and_apply_the_production_ones_only() -> None:
    plan, apply, drift = load("plan.yml"), load("apply.yml"), load("drift.yml")
    assert step(plan, "plan", "Plan")["env"]["RUNAI_CLIENT_SECRET"] == "${{ secrets.RUNAI_PLAN_CLIENT_SECRET }}"
    assert step(apply, "apply", "Apply")["env"]["RUNAI_CLIENT_SECRET"] == "${{ secrets.RUNAI_APPLY_CLIENT_SECRET }}"
    assert jobs(apply)["apply"]["environment"] == "production"
    for doc in (plan, drift):
        assert "RUNAI_APPLY" not in json.dumps(doc), "the writing credentials exist only in apply's production job"
    assert "secrets.RUNAI" not in json.dumps(jobs(plan)["validate"]), "the validate job gets no Run:ai credential"


def test_without_a_kubeconfig_the_runai_credentials_are_enough(runner: Runner) -> None:  # noqa: F811
    for workflow, job, secret in (("plan.yml", "plan", "PLAN"), ("apply.yml", "apply", "APPLY")):
        runner.expressions[f"secrets.KUBECONFIG_{secret}"] = ""
        runner.expressions[f"secrets.RUNAI_{secret}_CLIENT_ID"] = "runai-app"
        result = runner.run(load(workflow), job, "Write the")
        assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr
        assert not (runner.temp / "kubeconfig").exists()
        runner.expressions[f"secrets.RUNAI_{secret}_CLIENT_ID"] = ""
        assert runner.run(load(workflow), job, "Write the").returncode == 1, "neither: the missing secret is named"
