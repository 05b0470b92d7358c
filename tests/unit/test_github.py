"""reconciler.github against a fake GitHub API on loopback: the exact requests it sends."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fakegithub  # noqa: E402
from fakegithub import SERVER_URL, FakeGitHub  # noqa: E402

from reconciler import github  # noqa: E402
from reconciler.errors import GitHubError  # noqa: E402
from reconciler.github import (  # noqa: E402
    MARKER_APPLY,
    MARKER_PLAN,
    MAX_COMMENT_CHARS,
    find_pull_request,
    fit_comment,
    post_report,
    write_step_summary,
)
from reconciler.github_api import GitHubContext, RetryPolicy  # noqa: E402

fake_github = fakegithub.fake_github  # the fixture

QUICK = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.02, max_rate_limit_wait=5.0)
PLAN = f"{MARKER_PLAN}\n## Plan: 1 to create\n\n| create | update |\n|---|---|\n| 1 | 0 |\n"
SHA = "a" * 40


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def context(
    fake: FakeGitHub, tmp_path: Path, sleeps: Sleeps | None = None, **kwargs: object
) -> GitHubContext:
    env = fake.environment(tmp_path, **kwargs)  # type: ignore[arg-type]
    return GitHubContext.from_env(env, retry=QUICK, sleep=sleeps if sleeps is not None else Sleeps())


def assert_no_secret_sent(fake: FakeGitHub, *secrets: str) -> None:
    for request in fake.requests:
        for secret in (fake.token, *secrets):
            assert secret.encode() not in request.raw_body, f"{request} sent a secret in its body"
            assert secret not in request.path and secret not in json.dumps(request.query)
            for name, value in request.headers.items():
                if name != "authorization":
                    assert secret not in value, f"{request} sent a secret in header {name}"


# ---------------------------------------------------------------------------------------------
# context


def test_from_env_names_the_missing_variable() -> None:
    with pytest.raises(GitHubError, match="GITHUB_TOKEN"):
        GitHubContext.from_env({"GITHUB_REPOSITORY": "acme/ws"})
    with pytest.raises(GitHubError, match="GITHUB_REPOSITORY"):
        GitHubContext.from_env({"GITHUB_TOKEN": "t0ken"})
    with pytest.raises(GitHubError, match="owner/name"):
        GitHubContext.from_env({"GITHUB_TOKEN": "t0ken", "GITHUB_REPOSITORY": "nope"})


def test_the_token_is_not_in_the_contexts_repr() -> None:
    ctx = GitHubContext.from_env({"GITHUB_TOKEN": "ghs_verysecret", "GITHUB_REPOSITORY": "acme/ws"})
    assert "ghs_verysecret" not in repr(ctx)
    assert ctx.api_url == "https://api.github.com"


def test_a_missing_event_path_is_named(fake_github: FakeGitHub, tmp_path: Path) -> None:
    env = fake_github.environment(tmp_path, pr=3)
    del env["GITHUB_EVENT_PATH"]
    ctx = GitHubContext.from_env(env, retry=QUICK)
    with pytest.raises(GitHubError, match="GITHUB_EVENT_PATH"):
        find_pull_request(ctx)


# ---------------------------------------------------------------------------------------------
# finding the pull request


def test_a_pull_request_event_uses_the_payloads_number_without_a_request(
    fake_github: FakeGitHub, tmp_path: Path
) -> None:
    ctx = context(fake_github, tmp_path, event_name="pull_request", pr=12)
    assert find_pull_request(ctx) == 12
    assert fake_github.requests == []


def test_a_push_finds_its_pr_after_two_empty_answers(fake_github: FakeGitHub, tmp_path: Path) -> None:
    fake_github.add_pull(7, merged=True, merge_commit_sha=SHA)
    fake_github.commit_pulls[SHA] = [7]
    fake_github.commit_pulls_empty_first = 2
    sleeps = Sleeps()
    ctx = context(fake_github, tmp_path, sleeps, event_name="push", sha=SHA)

    assert find_pull_request(ctx) == 7

    assert [str(r) for r in fake_github.requests] == [f"GET /repos/acme/workspaces/commits/{SHA}/pulls"] * 3
    assert sleeps == [0.01, 0.02]  # exponential backoff, capped by max_delay


def test_a_push_with_no_pr_gives_up_after_the_configured_attempts(
    fake_github: FakeGitHub, tmp_path: Path
) -> None:
    ctx = context(fake_github, tmp_path, event_name="push", sha=SHA)
    assert find_pull_request(ctx) is None
    assert len(fake_github.requests) == QUICK.attempts


def test_of_several_prs_the_one_merged_as_the_pushed_commit_wins(
    fake_github: FakeGitHub, tmp_path: Path
) -> None:
    fake_github.add_pull(3, state="open")
    fake_github.add_pull(4, merged=True, merge_commit_sha="b" * 40)
    fake_github.add_pull(5, merged=True, merge_commit_sha=SHA)
    fake_github.commit_pulls[SHA] = [3, 4, 5]
    assert find_pull_request(context(fake_github, tmp_path, event_name="push", sha=SHA)) == 5


def test_a_schedule_has_no_pull_request(fake_github: FakeGitHub, tmp_path: Path) -> None:
    assert find_pull_request(context(fake_github, tmp_path, event_name="schedule")) is None
    assert fake_github.requests == []


# ---------------------------------------------------------------------------------------------
# the sticky plan comment


def test_two_dry_runs_on_one_pr_post_once_then_patch_the_same_comment(
    fake_github: FakeGitHub, tmp_path: Path
) -> None:
    fake_github.add_pull(7)
    ctx = context(fake_github, tmp_path, pr=7)

    first = post_report(ctx, PLAN, marker=MARKER_PLAN)
    second = post_report(ctx, PLAN.replace("1 to create", "2 to create"), marker=MARKER_PLAN)

    writes = [r for r in fake_github.requests if r.method in ("POST", "PATCH")]
    comment_id = fake_github.comments[7][0]["id"]
    assert [str(r) for r in writes] == [
        "POST /repos/acme/workspaces/issues/7/comments",
        f"PATCH /repos/acme/workspaces/issues/comments/{comment_id}",
    ]
    assert writes[0].body == {"body": PLAN}
    assert len(fake_github.comments[7]) == 1
    assert "2 to create" in fake_github.comments[7][0]["body"]
    assert first == second == f"{SERVER_URL}/acme/workspaces/pull/7#issuecomment-{comment_id}"
    assert [str(r) for r in fake_github.requests] == [
        "GET /user",
        "GET /repos/acme/workspaces/issues/7/comments",
        "POST /repos/acme/workspaces/issues/7/comments",
        "GET /user",
        "GET /repos/acme/workspaces/issues/7/comments",
        f"PATCH /repos/acme/workspaces/issues/comments/{comment_id}",
    ]
    for request in fake_github.requests:
        assert request.headers["authorization"] == f"Bearer {fake_github.token}"
        assert request.headers["accept"] == "application/vnd.github+json"


def test_a_marker_planted_in_another_users_comment_is_never_edited(
    fake_github: FakeGitHub, tmp_path: Path
) -> None:
    fake_github.add_pull(7)
    planted = fake_github.add_comment(7, f"{MARKER_PLAN}\nlooks like a plan", login="mallory")
    ctx = context(fake_github, tmp_path, pr=7)

    post_report(ctx, PLAN, marker=MARKER_PLAN)

    assert fake_github.requests_to("PATCH") == []
    assert [str(r) for r in fake_github.requests_to("POST")] == [
        "POST /repos/acme/workspaces/issues/7/comments"
    ]
    assert planted["body"] == f"{MARKER_PLAN}\nlooks like a plan"
    assert [c["user"]["login"] for c in fake_github.comments[7]] == ["mallory", "workspace-bot"]


def test_our_own_login_matches_case_insensitively(fake_github: FakeGitHub, tmp_path: Path) -> None:
    fake_github.add_pull(7)
    ours = fake_github.add_comment(7, f"{MARKER_PLAN}\nold", login="Workspace-Bot")
    post_report(context(fake_github, tmp_path, pr=7), PLAN, marker=MARKER_PLAN)
    assert [str(r) for r in fake_github.requests_to("PATCH")] == [
        f"PATCH /repos/acme/workspaces/issues/comments/{ours['id']}"
    ]


def test_with_an_app_token_the_github_actions_bot_comment_is_edited(
    fake_github: FakeGitHub, tmp_path: Path
) -> None:
    fake_github.user_login = None  # GET /user answers 403, as for Actions' GITHUB_TOKEN
    fake_github.add_pull(7)
    fake_github.add_comment(7, f"{MARKER_PLAN}\nplanted", login="github-actions", type="User")
    fake_github.add_comment(
        7, f"{MARKER_PLAN}\nother app", login="other-app[bot]", type="Bot", app_slug="other-app"
    )
    ours = fake_github.add_comment(
        7, f"{MARKER_PLAN}\nold", login="github-actions[bot]", type="Bot", app_slug="github-actions"
    )
    post_report(context(fake_github, tmp_path, pr=7), PLAN, marker=MARKER_PLAN)
    assert [str(r) for r in fake_github.requests_to("PATCH")] == [
        f"PATCH /repos/acme/workspaces/issues/comments/{ours['id']}"
    ]
    assert fake_github.requests_to("POST") == []


def test_comments_are_read_across_pages_following_link_headers(
    fake_github: FakeGitHub, tmp_path: Path
) -> None:
    fake_github.add_pull(7)
    for i in range(230):
        fake_github.add_comment(7, f"comment {i}", login="someone")
    ours = fake_github.add_comment(7, f"{MARKER_PLAN}\nold", login="workspace-bot")

    post_report(context(fake_github, tmp_path, pr=7), PLAN, marker=MARKER_PLAN)

    pages = fake_github.requests_to("GET", r"/issues/7/comments$")
    assert [(r.query.get("per_page"), r.query.get("page")) for r in pages] == [
        (["100"], None),
        (["100"], ["2"]),
        (["100"], ["3"]),
    ]
    assert [str(r) for r in fake_github.requests_to("PATCH")] == [
        f"PATCH /repos/acme/workspaces/issues/comments/{ours['id']}"
    ]


def test_an_apply_report_is_always_a_new_comment_on_the_merged_pr(
    fake_github: FakeGitHub, tmp_path: Path
) -> None:
    fake_github.add_pull(7, merged=True, merge_commit_sha=SHA)
    fake_github.commit_pulls[SHA] = [7]
    fake_github.commit_pulls_empty_first = 1
    ctx = context(fake_github, tmp_path, event_name="push", sha=SHA)

    post_report(ctx, "## Applied\n", marker=MARKER_APPLY)
    post_report(ctx, "## Applied\n", marker=MARKER_APPLY)

    assert [str(r) for r in fake_github.requests if r.method != "GET" or "pulls" not in r.path] == [
        "POST /repos/acme/workspaces/issues/7/comments",
        "POST /repos/acme/workspaces/issues/7/comments",
    ]
    assert fake_github.requests_to("POST")[0].body == {"body": f"{MARKER_APPLY}\n## Applied\n"}


def test_a_push_without_a_pull_request_is_reported_not_posted(
    fake_github: FakeGitHub, tmp_path: Path
) -> None:
    ctx = context(fake_github, tmp_path, event_name="push", sha=SHA)
    with pytest.raises(GitHubError, match=r"no pull request found for commit aaaaaaaaaaaa \(push event\)"):
        post_report(ctx, "## Applied\n", marker=MARKER_APPLY)
    assert fake_github.requests_to("POST") == []


# ---------------------------------------------------------------------------------------------
# long reports


def test_a_65537_character_report_is_cut_to_a_summary_that_says_where_the_plan_is(
    fake_github: FakeGitHub, tmp_path: Path
) -> None:
    fake_github.add_pull(7)
    header = f"{MARKER_PLAN}\n## Plan: 300 to create\n\n| create | update |\n|---|---|\n| 300 | 0 |\n\n"
    section = "### jane-doe-vscode\n\n```diff\n+ a line of diff\n```\n\n"
    body = header + section * 2000
    body = body[: MAX_COMMENT_CHARS + 1]
    assert len(body) == 65_537

    post_report(context(fake_github, tmp_path, pr=7), body, marker=MARKER_PLAN)

    sent = fake_github.requests_to("POST")[0].body["body"]
    assert len(sent) < MAX_COMMENT_CHARS
    assert sent.startswith(header.rstrip("\n"))
    assert "### jane-doe-vscode" not in sent
    assert "The full plan is in [the job summary of this workflow run]" in sent
    assert f"({SERVER_URL}/acme/workspaces/actions/runs/4242)" in sent
    assert "65,537 characters" in sent


def test_a_cut_report_without_a_run_url_still_names_the_job_summary() -> None:
    body = MARKER_PLAN + "\n" + "x" * 70_000
    cut = fit_comment(body, marker=MARKER_PLAN, run_url=None)
    assert len(cut) <= MAX_COMMENT_CHARS
    assert cut.startswith(MARKER_PLAN)
    assert "The full plan is in the job summary of this workflow run." in cut


def test_a_cut_inside_a_code_block_closes_the_fence() -> None:
    body = MARKER_PLAN + "\n## Plan\n```diff\n" + "+ x\n" * 30_000
    cut = fit_comment(body, marker=MARKER_PLAN)
    assert cut.count("```") % 2 == 0
    assert len(cut) <= MAX_COMMENT_CHARS


def test_a_report_that_fits_is_sent_unchanged() -> None:
    body = MARKER_PLAN + "\n" + "x" * (MAX_COMMENT_CHARS - len(MARKER_PLAN) - 1)
    assert fit_comment(body, marker=MARKER_PLAN) == body


# ---------------------------------------------------------------------------------------------
# secrets


def test_no_request_carries_the_token_or_a_secret_in_its_body(
    fake_github: FakeGitHub, tmp_path: Path
) -> None:
    fake_github.add_pull(7)
    ctx = context(fake_github, tmp_path, pr=7)
    post_report(ctx, PLAN, marker=MARKER_PLAN, secrets=["hunter2-password"])
    post_report(ctx, PLAN, marker=MARKER_PLAN, secrets=["hunter2-password"])
    assert len(fake_github.requests) == 6
    assert_no_secret_sent(fake_github, "hunter2-password")


def test_a_report_containing_the_token_is_refused_before_any_request(
    fake_github: FakeGitHub, tmp_path: Path
) -> None:
    fake_github.add_pull(7)
    ctx = context(fake_github, tmp_path, pr=7)
    with pytest.raises(GitHubError, match="contains the value of GITHUB_TOKEN") as caught:
        post_report(ctx, PLAN + f"\nleaked: {fake_github.token}\n", marker=MARKER_PLAN)
    assert fake_github.token not in str(caught.value)
    with pytest.raises(GitHubError, match="declared secret"):
        post_report(
            ctx, PLAN + "\npassword: hunter2-password\n", marker=MARKER_PLAN, secrets=["hunter2-password"]
        )
    assert fake_github.requests == []


# ---------------------------------------------------------------------------------------------
# honest errors


def one_line_error(fake: FakeGitHub, tmp_path: Path, sleeps: Sleeps | None = None) -> str:
    fake.add_pull(7)
    with pytest.raises(GitHubError) as caught:
        post_report(context(fake, tmp_path, sleeps, pr=7), PLAN, marker=MARKER_PLAN)
    message = str(caught.value)
    assert "\n" not in message
    assert fake.token not in message
    return message


def test_a_bad_token_is_a_one_line_401(fake_github: FakeGitHub, tmp_path: Path) -> None:
    fake_github.token = "ghs_the_real_one"
    fake_github.add_pull(7)
    ctx = context(fake_github, tmp_path, pr=7)
    ctx = GitHubContext.from_env(
        {**fake_github.environment(tmp_path, pr=7), "GITHUB_TOKEN": "ghs_wrong"}, retry=QUICK
    )
    with pytest.raises(GitHubError) as caught:
        post_report(ctx, PLAN, marker=MARKER_PLAN)
    assert (
        str(caught.value)
        == "GET /user: 401 Unauthorized: GITHUB_TOKEN is invalid or expired: Bad credentials"
    )


def test_a_missing_permission_is_a_one_line_403_naming_it(fake_github: FakeGitHub, tmp_path: Path) -> None:
    fake_github.inject(
        "POST", r"/issues/7/comments$", 403, {"message": "Resource not accessible by integration"}
    )
    message = one_line_error(fake_github, tmp_path)
    assert message == (
        "POST /repos/acme/workspaces/issues/7/comments: 403 Forbidden: the token lacks permission (the job "
        "needs `permissions: pull-requests: write` or `issues: write`; a fork's PR gets a read-only token): "
        "Resource not accessible by integration"
    )


def test_a_wrong_repository_is_a_one_line_404(fake_github: FakeGitHub, tmp_path: Path) -> None:
    fake_github.add_pull(7)
    env = {**fake_github.environment(tmp_path, pr=7), "GITHUB_REPOSITORY": "acme/typo"}
    with pytest.raises(GitHubError) as caught:
        post_report(GitHubContext.from_env(env, retry=QUICK), PLAN, marker=MARKER_PLAN)
    assert str(caught.value) == (
        "GET /repos/acme/typo/issues/7/comments: 404 Not Found: wrong repository "
        "(GITHUB_REPOSITORY=acme/typo) or pull request, or the token cannot see it: Not Found"
    )


def test_a_wrong_pr_is_a_one_line_404(fake_github: FakeGitHub, tmp_path: Path) -> None:
    ctx = context(fake_github, tmp_path, pr=99)
    with pytest.raises(GitHubError, match=r"^GET /repos/acme/workspaces/issues/99/comments: 404 Not Found"):
        post_report(ctx, PLAN, marker=MARKER_PLAN)


def test_server_errors_are_retried_with_backoff(fake_github: FakeGitHub, tmp_path: Path) -> None:
    fake_github.add_pull(7)
    fake_github.inject("POST", r"/issues/7/comments$", 502, {"message": "Bad Gateway"}, times=2)
    sleeps = Sleeps()
    post_report(context(fake_github, tmp_path, sleeps, pr=7), PLAN, marker=MARKER_PLAN)
    assert len(fake_github.requests_to("POST")) == 3
    assert sleeps == [0.01, 0.02]
    assert len(fake_github.comments[7]) == 1


def test_server_errors_that_persist_become_one_line(fake_github: FakeGitHub, tmp_path: Path) -> None:
    fake_github.inject("GET", r"/issues/7/comments$", 503, {"message": "Service Unavailable"}, times=None)
    message = one_line_error(fake_github, tmp_path)
    assert message == (
        "GET /repos/acme/workspaces/issues/7/comments: "
        "GitHub answered 503 after 4 attempt(s): Service Unavailable"
    )
    assert len(fake_github.requests_to("GET", "comments")) == QUICK.attempts


def test_a_short_rate_limit_is_waited_out_once(fake_github: FakeGitHub, tmp_path: Path) -> None:
    fake_github.add_pull(7)
    fake_github.inject(
        "POST",
        r"/issues/7/comments$",
        403,
        {"message": "You have exceeded a secondary rate limit"},
        headers={"Retry-After": "3"},
    )
    sleeps = Sleeps()
    post_report(context(fake_github, tmp_path, sleeps, pr=7), PLAN, marker=MARKER_PLAN)
    assert sleeps == [3.0]
    assert len(fake_github.requests_to("POST")) == 2


def test_a_long_rate_limit_is_a_one_line_error(fake_github: FakeGitHub, tmp_path: Path) -> None:
    fake_github.inject(
        "GET",
        "/user",
        403,
        {"message": "API rate limit exceeded for installation ID 1."},
        headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "9999999999"},
    )
    sleeps = Sleeps()
    message = one_line_error(fake_github, tmp_path, sleeps)
    assert message.startswith("GitHub API rate limit exceeded for GET /user: try again in ")
    assert sleeps == []


def test_an_unreachable_api_is_a_one_line_error(tmp_path: Path) -> None:
    fake = FakeGitHub().start()
    env = fake.environment(tmp_path, pr=7)
    fake.stop()  # nothing listens on that port any more
    with pytest.raises(GitHubError, match=r"cannot reach GITHUB_API_URL .* after 4 attempt\(s\)") as caught:
        post_report(GitHubContext.from_env(env, retry=QUICK, sleep=Sleeps()), PLAN, marker=MARKER_PLAN)
    assert "\n" not in str(caught.value)


def test_a_pagination_link_to_another_host_is_not_followed(fake_github: FakeGitHub, tmp_path: Path) -> None:
    fake_github.add_pull(7)
    fake_github.inject(
        "GET",
        r"/issues/7/comments$",
        200,
        [],
        headers={"Link": '<http://127.0.0.2:1/steal?page=2>; rel="next"'},
    )
    message = one_line_error(fake_github, tmp_path)
    assert "refusing to send the token outside GITHUB_API_URL" in message


def test_an_unknown_marker_is_a_programming_error(fake_github: FakeGitHub, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        post_report(context(fake_github, tmp_path, pr=7), PLAN, marker="<!-- mine -->")


# ---------------------------------------------------------------------------------------------
# step summary


def test_the_step_summary_is_appended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("# Validation\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert write_step_summary("## Plan\n1 to create")
    assert write_step_summary("## Again\n")
    assert summary.read_text(encoding="utf-8") == "# Validation\n## Plan\n1 to create\n## Again\n"


def test_without_a_step_summary_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.chdir(tmp_path)
    assert write_step_summary("## Plan\n") is False
    assert list(tmp_path.iterdir()) == []


def test_a_step_summary_is_kept_under_githubs_size_limit(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    write_step_summary("x" * (github.MAX_STEP_SUMMARY_BYTES + 10), summary)
    assert summary.stat().st_size <= github.MAX_STEP_SUMMARY_BYTES
    assert summary.read_text(encoding="utf-8").endswith("per step)_\n")


def test_a_redirect_to_another_host_is_not_followed(fake_github: FakeGitHub, tmp_path: Path) -> None:
    fake_github.inject("GET", "/user", 301, headers={"Location": "http://127.0.0.2:9/user"})
    message = one_line_error(fake_github, tmp_path)
    assert message == "GET /user: GitHub answered 301"


def test_a_token_anywhere_in_the_report_is_refused_even_past_the_cut(
    fake_github: FakeGitHub, tmp_path: Path
) -> None:
    fake_github.add_pull(7)
    long_report = PLAN + "### details\n" + "x" * MAX_COMMENT_CHARS + fake_github.token
    with pytest.raises(GitHubError, match="GITHUB_TOKEN"):
        post_report(context(fake_github, tmp_path, pr=7), long_report, marker=MARKER_PLAN)
    assert fake_github.requests == []


# ---------------------------------------------------------------------------------------------
# the CLI's entry point


def test_publish_report_edits_the_plan_in_place_and_adds_apply_reports(
    fake_github: FakeGitHub, tmp_path: Path
) -> None:
    fake_github.add_pull(7)
    env = fake_github.environment(tmp_path, pr=7)
    first = github.publish_report("## Plan\n", dry_run=True, env=env)
    assert github.publish_report("## Plan again\n", dry_run=True, env=env) == first
    github.publish_report("## Applied\n", dry_run=False, env=env)
    assert [c["body"] for c in fake_github.comments[7]] == [
        f"{MARKER_PLAN}\n## Plan again\n",
        f"{MARKER_APPLY}\n## Applied\n",
    ]


def test_publish_report_outside_actions_names_the_missing_variable() -> None:
    with pytest.raises(GitHubError, match="GITHUB_TOKEN is not set"):
        github.publish_report("## Plan\n", dry_run=True, env={})
