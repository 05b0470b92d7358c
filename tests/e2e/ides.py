"""The real IDEs as a user reaches them: through the ingress on loopback, with curl and with Chromium.

A workspace URL is ``https://<project>-<workspace>.<domain>[/lab]``; the ingress listens on
``127.0.0.1:<port>``. curl reaches it with ``--connect-to`` (the URL is used exactly as posted, so
the Host header and TLS server name are the workspace's) and checks the certificate against the
ingress's throwaway CA. Chromium (Debian's, driven by Playwright) maps the host names with
``--host-resolver-rules``.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Page

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("WORKSPACE_GITOPS_ARTIFACTS", ROOT / "test-artifacts"))
"""Screenshots of the IDEs the browser reached (CI keeps this folder)."""


@dataclass(frozen=True)
class Ingress:
    """Where the ingress controller listens, and the CA its certificate chains to."""

    port: int
    ca_cert: Path


@dataclass(frozen=True)
class Response:
    status: int
    headers: str
    body: str

    def cookie(self, name: str) -> str | None:
        match = re.search(rf"^set-cookie:\s*{re.escape(name)}=([^;\s]+)", self.headers, re.I | re.M)
        return match.group(1) if match else None


def curl(ingress: Ingress, url: str, *args: str, timeout: float = 30) -> Response:
    """One request to `url` through the ingress, TLS verified against its CA."""
    host = urllib.parse.urlsplit(url).hostname
    with tempfile.TemporaryDirectory() as tmp:
        headers, body = Path(tmp) / "headers", Path(tmp) / "body"
        argv = ["curl", "-sS", "--max-time", str(timeout), "--cacert", str(ingress.ca_cert),
                "--connect-to", f"{host}:443:127.0.0.1:{ingress.port}", "-D", str(headers), "-o", str(body),
                "-w", "%{http_code}", *args, url]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 10)
        assert p.returncode == 0, f"curl {url} failed ({p.returncode}): {p.stderr}"
        return Response(int(p.stdout.strip()), headers.read_text(errors="replace"), body.read_text(errors="replace"))


def base(url: str) -> str:
    """The workspace's origin (its URL without the `/lab` path)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def credential(tool: str, printed: str) -> str:
    """The password (code-server's config.yaml) or token (JupyterLab's log) the posted command printed."""
    pattern = r"^password:\s*(\S+)\s*$" if tool == "vscode" else r"[?&]token=([0-9A-Za-z]+)"
    found = re.findall(pattern, printed, re.M)
    assert found, f"no {tool} credential in what the command printed:\n{printed}"
    assert len(set(found)) == 1, f"the command printed different credentials: {found}"
    return str(found[0])


def run_posted_command(command: str, kubeconfig: Path, kubectl_dir: Path) -> subprocess.CompletedProcess[str]:
    """The credential command exactly as posted, in a shell, as a user with this kubeconfig would run it."""
    env = {"PATH": f"{kubectl_dir}:/usr/local/bin:/usr/bin:/bin", "KUBECONFIG": str(kubeconfig),
           "HOME": str(kubeconfig.parent), "LANG": "C.UTF-8"}
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=60)


def jupyter_api(ingress: Ingress, url: str, token: str, path: str = "/api/status", *args: str) -> Response:
    """A JupyterLab REST call with the token in the Authorization header."""
    return curl(ingress, base(url) + path, "-H", f"Authorization: token {token}", *args)


def code_server_login(ingress: Ingress, url: str, password: str) -> Response:
    """code-server's login form, posted as a browser would."""
    return curl(ingress, base(url) + "/login", "--data-urlencode", f"password={password}")


LOGIN = {
    # tool: (its login page's password field, its submit button, what shows once logged in)
    "jupyterlab": ("#password_input", "#login_submit", ".jp-Launcher"),
    "vscode": ("input[type=password]", "input[type=submit], button[type=submit], .submit", ".monaco-workbench"),
}


@contextlib.contextmanager
def _login_page(ingress: Ingress, url: str, tool: str, secret: str) -> Iterator[Page]:
    """Headless Chromium at `url` (mapped to the ingress), `secret` pasted into the login page and submitted."""
    from playwright.sync_api import sync_playwright

    host = urllib.parse.urlsplit(url).hostname
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            f"--host-resolver-rules=MAP {host} 127.0.0.1:{ingress.port}", "--no-sandbox",
            "--disable-dev-shm-usage"])
        try:
            # The ingress's certificate chains to a throwaway CA that this browser profile doesn't hold.
            context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.goto(url, timeout=60_000)
            page.locator(LOGIN[tool][0]).fill(secret)
            page.locator(LOGIN[tool][1]).first.click()
            yield page
        finally:
            browser.close()


def browser_login(ingress: Ingress, url: str, tool: str, secret: str, screenshot: Path) -> str:
    """Log in as a person would and wait for JupyterLab's launcher or VS Code's workbench; save a screenshot.

    Returns the page's title. A login that does not open the IDE fails with the page's error text.
    """
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    with _login_page(ingress, url, tool, secret) as page:
        try:
            page.locator(LOGIN[tool][2]).first.wait_for(state="visible", timeout=90_000)
        except Exception as e:
            page.screenshot(path=str(screenshot.with_suffix(".failed.png")))
            raise AssertionError(f"{tool} at {url} did not open after login; the page says: "
                                 f"{page.locator('body').inner_text()[:500]!r}") from e
        page.wait_for_timeout(3_000)  # let the IDE finish painting for the screenshot
        page.screenshot(path=str(screenshot))
        return page.title()


def browser_login_refused(ingress: Ingress, url: str, tool: str, secret: str) -> str:
    """Log in with a wrong secret; the IDE must not open. Returns the login page's text."""
    with _login_page(ingress, url, tool, secret) as page:
        page.wait_for_load_state("networkidle", timeout=30_000)
        page.wait_for_timeout(2_000)
        assert page.locator(LOGIN[tool][2]).count() == 0, f"{tool} opened with a wrong secret"
        assert page.locator(LOGIN[tool][0]).count() == 1, "the login page is shown again"
        return page.locator("body").inner_text()


def browser_console(ingress: Ingress, url: str, token: str, code: str) -> str:
    """Log in to JupyterLab, open a Python console from the launcher, run `code`; the output it shows.

    The kernel's messages travel over a WebSocket through the ingress: an output proves both ran.
    """
    with _login_page(ingress, url, "jupyterlab", token) as page:
        page.locator('.jp-LauncherCard[data-category="Console"]').first.click(timeout=90_000)
        prompt = page.locator(".jp-CodeConsole-promptCell .cm-content")
        prompt.wait_for(state="visible", timeout=60_000)
        # The console's kernel starts in the background: wait for it, so no keystroke goes astray.
        # The status bar says "Python 3 (ipykernel) | Idle" once it is (the person's cue too).
        page.locator(".jp-StatusBar-TextItem", has_text="Idle").first.wait_for(timeout=90_000)
        prompt.fill(code)
        prompt.press("Shift+Enter")
        output = page.locator(".jp-CodeConsole-content .jp-OutputArea-output").first
        output.wait_for(state="visible", timeout=90_000)
        return output.inner_text()


def browser_vscode_terminal(ingress: Ingress, url: str, password: str, command: str,
                            done: Callable[[], bool]) -> None:
    """Log in to code-server, open VS Code's integrated terminal and type `command` until `done()`.

    The terminal is a shell on a pseudo-terminal (node-pty) behind the IDE's WebSocket: a command's
    effect on the volume proves the IDE's native modules and its connection through the ingress work.
    The first keystrokes after the terminal opens are sometimes swallowed (seen under load: a
    command arrived without its first word), so the command is typed again, up to three times.
    """
    with _login_page(ingress, url, "vscode", password) as page:
        page.locator(LOGIN["vscode"][2]).first.wait_for(state="visible", timeout=90_000)
        page.locator(".part.statusbar").first.wait_for(state="visible", timeout=60_000)
        page.wait_for_timeout(3_000)  # the workbench restores its views before it takes commands
        page.locator(".part.statusbar").first.click()
        page.keyboard.press("F1")  # the command palette, as a person would
        palette = page.locator(".quick-input-widget input").first
        palette.wait_for(state="visible", timeout=30_000)
        palette.fill(">Terminal: Create New Terminal")
        page.locator(".quick-input-list .monaco-list-row").first.wait_for(state="visible", timeout=30_000)
        page.keyboard.press("Enter")
        # VS Code's workspace trust asks before the first terminal in a folder: the person trusts
        # their own folder (the environment may instead pass --disable-workspace-trust).
        trust = page.get_by_role("button", name="Trust Folder & Continue")
        with contextlib.suppress(Exception):
            trust.click(timeout=10_000)
        terminal = page.locator(".terminal-wrapper .xterm").first
        terminal.wait_for(state="visible", timeout=60_000)
        terminal.click()
        # Keys typed before the shell prints its prompt are lost: wait for the prompt ("$ "), as a
        # person would (xterm's DOM rows, when it renders to the DOM; else give it time).
        rows = page.locator(".terminal-wrapper .xterm-rows").first
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if rows.count() and "$" in rows.inner_text():
                break
            page.wait_for_timeout(500)
        page.wait_for_timeout(1_000)
        for _ in range(3):
            page.keyboard.type(command, delay=20)
            page.keyboard.press("Enter")
            deadline = time.monotonic() + 10
            while not done() and time.monotonic() < deadline:
                page.wait_for_timeout(500)
            if done():
                break
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "vscode-terminal.png"))


def browser_first_open(ingress: Ingress, url: str, tool: str, secret: str, screenshot: Path,
                       settle_ms: int = 12_000) -> str:
    """Log in, let the IDE settle as a person reading it would, save a screenshot; all the text it shows.

    What the IDE puts in front of a person on first open (dialogs, notification toasts, the status
    bar) is in the text; the wait covers prompts that come a few seconds after the IDE has painted.
    """
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    with _login_page(ingress, url, tool, secret) as page:
        page.locator(LOGIN[tool][2]).first.wait_for(state="visible", timeout=90_000)
        page.wait_for_timeout(settle_ms)
        page.screenshot(path=str(screenshot))
        return page.locator("body").inner_text()
