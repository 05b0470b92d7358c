#!/usr/bin/env python3
"""Check the built images in a private containerd, without Kubernetes, the way the pods use them.

    python tests/cluster/images/verify.py [--only NAME]...

Builds (or takes from the cache) the images, starts a containerd of its own (its own root, state and socket
under a temporary directory; never the system's), imports the tars with `ctr images import` and checks that
exactly the expected names are registered, then runs each image with host networking (only loopback is
contacted) as its image user, UID 1000, with the Deployment's arguments:

- pause: runs as PID 1 and exits on SIGTERM.
- JupyterLab: the token from its log opens /api/status (200), a wrong token gets 403; a terminal starts
  through the REST API. Any log line about NotebookApp is printed.
- code-server: the password from ~/.config/code-server/config.yaml (read with `ctr task exec`, as
  `kubectl exec` would) gives the code-server-session cookie on POST /login (302), a wrong one does not;
  with the cookie / serves the workbench; the native-module check (terminal through node-pty, file watcher)
  runs inside the running container.

Everything started is stopped and removed at the end: tasks, containers, shims, mounts, containerd.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import build  # noqa: E402

CONFIG = """version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"""


def log(msg: str) -> None:
    print(f"[verify {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Ctr:
    def __init__(self, address: str, namespace: str = "k8s.io") -> None:
        self.base = ["ctr", "--address", address, "--namespace", namespace]

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        p = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=timeout, check=False)
        if check and p.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {p.stderr.strip() or p.stdout.strip()}")
        return p.stdout


def _mounts_under(prefix: str) -> list[str]:
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)


@contextlib.contextmanager
def private_containerd() -> Iterator[tuple[str, Ctr]]:
    """A containerd with its own root, state and socket in a temporary directory; yields (socket, ctr)."""
    d = Path(tempfile.mkdtemp(prefix="wg-ctrd-", dir="/tmp"))
    (d / "config.toml").write_text(CONFIG.format(d=d))
    address = str(d / "containerd.sock")
    logf = open(d / "containerd.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        ["containerd", "--config", str(d / "config.toml")], stdout=logf, stderr=logf, start_new_session=True
    )
    ctr = Ctr(address)
    try:
        deadline = time.monotonic() + 30
        while not Path(address).exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not start: {(d / 'containerd.log').read_text()[-2000:]}")
            time.sleep(0.2)
        log(f"private containerd pid {proc.pid} at {address}")
        yield address, ctr
    finally:
        with contextlib.suppress(Exception):
            for line in ctr("tasks", "ls", "-q", check=False).split():
                ctr("tasks", "kill", "-s", "SIGKILL", line, check=False)
                ctr("tasks", "delete", "-f", line, check=False, timeout=30)
            for line in ctr("containers", "ls", "-q", check=False).split():
                ctr("containers", "delete", line, check=False)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        logf.close()
        for m in _mounts_under(str(d)):
            subprocess.run(["umount", "-l", m], check=False)
        shutil.rmtree(d, ignore_errors=True)
        log("private containerd stopped and removed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def request(
    method: str, port: int, path: str, body: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        hdrs: dict[str, str] = {}
        for k, v in r.getheaders():
            hdrs[k.lower()] = f"{hdrs[k.lower()]}\n{v}" if k.lower() in hdrs else v
        return r.status, hdrs, r.read().decode(errors="replace")
    finally:
        conn.close()


def wait_for(what: str, probe: Callable[[], str | None], timeout: float, task_alive: Callable[[], bool]) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        if not task_alive():
            raise RuntimeError(f"{what}: the container exited")
        time.sleep(0.5)
    raise RuntimeError(f"{what}: not within {timeout:.0f}s")


def _alive(ctr: Ctr, cid: str) -> Callable[[], bool]:
    return lambda: any(
        line.split()[0] == cid and "RUNNING" in line for line in ctr("tasks", "ls").splitlines()[1:] if line.strip()
    )


def _run_detached(ctr: Ctr, image: str, cid: str, logfile: Path, args: list[str], extra: list[str]) -> None:
    ctr("run", "-d", "--net-host", "--seccomp", f"--log-uri=file://{logfile}", *extra, image, cid, *args)


def check_pause(ctr: Ctr, work: Path) -> None:
    cid = "verify-pause"
    _run_detached(ctr, build.PAUSE_IMAGE, cid, work / "pause.log", ["/pause"], [])
    time.sleep(1)
    assert _alive(ctr, cid)(), "pause is not running"
    ctr("tasks", "kill", "-s", "SIGTERM", cid)
    wait_for("pause stops on SIGTERM", lambda: "" if _alive(ctr, cid)() else "stopped", 10, lambda: True)
    ctr("tasks", "delete", cid, check=False)
    ctr("containers", "delete", cid)
    log("pause: ran as PID 1 and stopped on SIGTERM")


def check_jupyterlab(ctr: Ctr, work: Path) -> None:
    cid, port = "verify-jupyterlab", free_port()
    ws_host = work / "jl-ws"
    ws_host.mkdir()
    os.chown(ws_host, 1000, 1000)  # as the PVC's directory the init container made
    ws = "/sample-project-pvc/workspaces/john-tan"
    logfile = work / "jupyterlab.log"
    args = ["/usr/bin/tini", "--"]  # the image's Entrypoint, then the Deployment's args
    args += ["jupyter", "lab", "--ip=0.0.0.0", f"--port={port}", "--no-browser"]
    args += [f"--ServerApp.root_dir={ws}"]
    mount = f"type=bind,src={ws_host},dst={ws},options=rbind:rw"
    _run_detached(ctr, build.JUPYTERLAB_IMAGE, cid, logfile, args, ["--mount", mount, "--cwd", ws])
    alive = _alive(ctr, cid)

    def token() -> str | None:
        text = logfile.read_text(errors="replace") if logfile.exists() else ""
        m = re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=([0-9a-f]+)", text)
        return m.group(1) if m else None

    tok = wait_for("JupyterLab prints its token", token, 120, alive)
    text = logfile.read_text(errors="replace")
    for line in text.splitlines():
        if re.search(r"NotebookApp|notebook_dir|WARNING|\[W |Serving notebooks from", line):
            log(f"jupyterlab log: {line.strip()}")
    status, _, body = request("GET", port, f"/api/status?token={tok}")
    assert status == 200 and "last_activity" in body, (status, body)
    bad, _, _ = request("GET", port, "/api/status?token=" + "0" * len(tok))
    assert bad == 403, bad
    t_status, _, t_body = request("POST", port, f"/api/terminals?token={tok}", body="{}")
    assert t_status == 200 and '"name"' in t_body, (t_status, t_body)
    out = ctr(
        "tasks", "exec", "--exec-id", "whoami", cid, "sh", "-c", "id -u; echo $HOME; ls -d ~/.local/share/jupyter"
    )
    log(
        f"jupyterlab: /api/status 200 with the logged token, 403 with a wrong one; terminal {t_body.strip()}; "
        f"uid/home/runtime: {' '.join(out.split())}"
    )
    ctr("tasks", "kill", "-s", "SIGTERM", cid)
    wait_for("JupyterLab stops", lambda: "" if alive() else "stopped", 30, lambda: True)
    ctr("tasks", "delete", cid, check=False)
    ctr("containers", "delete", cid)


def check_vscode(ctr: Ctr, work: Path) -> None:
    cid, port = "verify-vscode", free_port()
    ws_host = work / "cs-ws"
    ws_host.mkdir()
    os.chown(ws_host, 1000, 1000)
    ws = "/sample-project-pvc/workspaces/jane-doe"
    logfile = work / "vscode.log"
    args = ["/usr/bin/tini", "--", "/usr/local/bin/code-server"]  # the image's Entrypoint
    args += ["--bind-addr", f"0.0.0.0:{port}", ws]  # the Deployment's args
    mounts = ["--mount", f"type=bind,src={ws_host},dst={ws},options=rbind:rw"]
    mounts += [
        "--mount",
        f"type=bind,src={HERE / 'vscode' / 'check-native.js'},dst=/tmp/check-native.js,options=rbind:ro",
    ]
    _run_detached(ctr, build.VSCODE_IMAGE, cid, logfile, args, [*mounts, "--cwd", ws])
    alive = _alive(ctr, cid)

    def healthy() -> str | None:
        try:
            status, _, body = request("GET", port, "/healthz")
        except OSError:
            return None
        return body if status == 200 else None

    wait_for("code-server answers /healthz", healthy, 120, alive)
    config = ctr("tasks", "exec", "--exec-id", "cat-config", cid, "cat", "/home/coder/.config/code-server/config.yaml")
    m = re.search(r"^password: (\S+)$", config, re.M)
    assert m and re.search(r"^auth: password$", config, re.M), config
    password = m.group(1)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, hdrs, _ = request("POST", port, "/login", urllib.parse.urlencode({"password": password}), form)
    cookie = re.search(r"code-server-session=([^;]+)", hdrs.get("set-cookie", ""))
    assert status == 302 and cookie, (status, hdrs)
    bad_status, bad_hdrs, _ = request(
        "POST", port, "/login", urllib.parse.urlencode({"password": "wrong" + password}), form
    )
    assert "code-server-session" not in bad_hdrs.get("set-cookie", ""), bad_hdrs
    jar = {"Cookie": f"code-server-session={cookie.group(1)}"}
    status, hdrs, _ = request("GET", port, "/", headers=jar)
    path = "/"
    if status in (301, 302):
        path = "/" + hdrs["location"].removeprefix("./").lstrip("/")
        status, hdrs, body = request("GET", port, path, headers=jar)
    else:
        body = ""
    assert status == 200 and "workbench" in body, (status, body[:500])
    log(
        f"code-server: login 302 + session cookie with the config.yaml password; wrong password {bad_status} "
        f"without cookie; GET {path} with the cookie: the workbench ({len(body)} bytes)"
    )
    check = subprocess.run(
        [*ctr.base, "tasks", "exec", "--exec-id", "native", cid, "/usr/local/bin/node", "/tmp/check-native.js"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    for line in (check.stdout + check.stderr).splitlines():
        log(f"code-server native: {line}")
    assert check.returncode == 0, "native modules failed inside the running container"
    ctr("tasks", "kill", "-s", "SIGTERM", cid)
    wait_for("code-server stops", lambda: "" if alive() else "stopped", 30, lambda: True)
    ctr("tasks", "delete", cid, check=False)
    ctr("containers", "delete", cid)


CHECKS: dict[str, Callable[[Ctr, Path], None]] = {
    build.PAUSE_IMAGE: check_pause,
    build.JUPYTERLAB_IMAGE: check_jupyterlab,
    build.VSCODE_IMAGE: check_vscode,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check the built images in a private containerd.")
    parser.add_argument("--only", action="append", metavar="NAME", help="pause, jupyterlab, vscode or a full name")
    args = parser.parse_args(argv)
    tars = build.build(args.only)
    failed: list[str] = []
    with private_containerd() as (address, ctr), tempfile.TemporaryDirectory(prefix="wg-verify-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        build.import_images("ctr", address, list(tars.values()))
        names = set(ctr("images", "ls", "-q").split())
        assert names == set(tars), f"registered {sorted(names)}, expected {sorted(tars)}"
        log(f"ctr images import registered exactly: {', '.join(sorted(names))}")
        for name in tars:
            try:
                CHECKS[name](ctr, work)
            except Exception as e:  # report every image, then fail
                failed.append(name)
                log(f"FAILED {name}: {e!r}")
                for f in work.glob("*.log"):
                    log(f"--- {f.name} (tail)\n{f.read_text(errors='replace')[-3000:]}")
    print(f"{len(tars) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
