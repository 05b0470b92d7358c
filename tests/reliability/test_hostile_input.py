"""Hostile repos: never a traceback, bounded time and memory, every error `path:line:col: message`,
nothing read from outside the repo, and never a request to the cluster.

tests/unit/test_fuzz_loader.py fuzzes one document or one file at a time. Here hypothesis builds
whole repos: several hostile files at once across every folder (random bytes, random YAML trees,
hostile values such as `../x` in names and references, deep nesting, scalars around the 1 MiB
limit, billion-laughs aliases, merge keys and Python tags, non-UTF-8 bytes), non-UTF-8 and
colon/newline file names, symlinks to files and folders outside the repo (holding a marker that
must never show up), to /dev/zero, to themselves and to nowhere, FIFOs, folders named `x.yaml`, a
missing or outside project file. Then a few such repos are applied (not dry-run) for real through
the recording proxy: exit 1, no request at all reaches the apiserver, no resourceVersion moves.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.errors import ValidationFailed
from reconciler.validate import load_repo
from tests.conftest import ControlPlane
from tests.e2e.helpers import ROOT, Admin, Repo
from tests.reliability.conftest import record
from tests.reliability.fleet import run_env
from tests.reliability.proxy import FaultProxy

BASE = ROOT / "tests" / "data" / "base"
FOLDERS = ("workspaces", "blocks/environments", "blocks/compute", "blocks/data-sources")
MARKER = "TOPSECRET-outside-the-repo-7f3a"
"""Written in every file outside the repo that a symlink points to: it must never be read."""
ERROR_LINE = re.compile(r"^(?P<path>[^:\n]+):(?P<line>\d+):(?P<col>\d+): [^\n]+$")
SUMMARY_LINE = re.compile(r"^error: \d+ validation errors?$")
MAX_SECONDS = 10.0
"""Bound on validating one hostile repo (the largest input is a file just over 1 MiB)."""
MAX_PEAK_MB = 64
"""Bound on the Python memory allocated while validating one hostile repo."""
MAX_RSS_MB = 400
"""Bound on the peak RSS of a `reconcile` process given a hostile repo."""
MAX_ERROR_CHARS = 2000
"""An error line quotes a short prefix of a bad value, never the whole value (a file may be 1 MiB); the
bound leaves room for a 255-byte file name escaped as `\\xNN`."""

# --- hostile file contents ----------------------------------------------------------------------

HOSTILE_VALUES = ["../x", "../../etc/passwd", "/etc/passwd", "..", "a" * 300, "x\u0000y", "${HOME}",
                  "$(touch /tmp/pwned)", "alice-code", "small", "vscode", "team-pvc", "ALICE", "-x", "x-",
                  "é", "\u202e", "", " ", "1e400", "-1", "0x10", ".inf", "~", "null", "true"]
_keys = st.sampled_from(["apiVersion", "kind", "metadata", "name", "spec", "owner", "environment", "compute",
                         "dataSources", "state", "image", "privileged", "hostNetwork", "volumes", "env",
                         "credentials", "file", "<<", "?", "!!python/object", "../x", "", "\x7f"])
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
                     st.sampled_from(HOSTILE_VALUES), st.text(max_size=20))
_trees: st.SearchStrategy[Any] = st.recursive(
    _scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(_keys, c, max_size=5), max_leaves=30)


@st.composite
def _near_valid_workspace(draw: st.DrawFn) -> bytes:
    spec = {"owner": draw(st.sampled_from(["alice", *HOSTILE_VALUES])),
            "environment": draw(st.sampled_from(["vscode", *HOSTILE_VALUES])),
            "compute": draw(st.sampled_from(["small", *HOSTILE_VALUES])),
            "dataSources": draw(st.lists(st.sampled_from(["team-pvc", *HOSTILE_VALUES]), max_size=3))}
    doc: dict[str, Any] = {"apiVersion": "workspaces/v1", "kind": "Workspace",
                           "metadata": {"name": draw(st.sampled_from(["alice-code", *HOSTILE_VALUES]))},
                           "spec": spec}
    for _ in range(draw(st.integers(0, 2))):  # stray keys at any level (a level may have become a scalar)
        where = draw(st.sampled_from(["top", "metadata", "spec"]))
        target = doc if where == "top" else doc.get(where)
        if isinstance(target, dict):
            target[draw(_keys)] = draw(_trees)
    return yaml.safe_dump(doc, allow_unicode=True).encode()


def _deep(depth: int, opener: str) -> bytes:
    return ("a: " + opener * depth).encode()


def _billion_laughs(levels: int) -> bytes:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"{'abcdefghij'[i]}: &{'abcdefghij'[i]} [" + ",".join([f"*{'abcdefghij'[i - 1]}"] * 9) + "]")
    return "\n".join(lines).encode()


def _huge(size: int) -> bytes:
    return b"apiVersion: workspaces/v1\nkind: Workspace\nmetadata: {name: " + b"a" * size + b"}\n"


class Content(bytes):
    """File bytes that remember which kind of hostile input they are (for the figures)."""

    kind: str


def _tagged(kind: str, strategy: st.SearchStrategy[bytes]) -> st.SearchStrategy[Content]:
    def tag(raw: bytes) -> Content:
        c = Content(raw)
        c.kind = kind
        return c

    return strategy.map(tag)


_contents = st.one_of(
    _tagged("random bytes", st.binary(max_size=2000)),
    _tagged("random YAML tree", _trees.map(lambda t: yaml.safe_dump(t, allow_unicode=True).encode())),
    _tagged("hostile values in a workspace", _near_valid_workspace()),
    _tagged("deep nesting", st.builds(_deep, st.integers(1, 20_000), st.sampled_from(["[", "{", "- [", "{a: "]))),
    _tagged("billion laughs", st.builds(_billion_laughs, st.integers(2, 9))),
    _tagged("scalar around 1 MiB", st.builds(_huge, st.integers((1 << 20) - 100, (1 << 20) + 100))),
    _tagged("YAML tricks", st.sampled_from([
        b"<<: {a: 1}\n", b"a: !!python/object/apply:os.system ['true']\n", b"a: 1\n---\nb: 2\n", b"a: 1\na: 2\n",
        b"", b"# only a comment\n", b"\xef\xbb\xbfa: 1\n", b"a: \xff\xfe\n",
        b"apiVersion: workspaces/v1\nkind: Workspace\nmetadata: {name: \xc3\x28}\n"])),
    _tagged("non-UTF-8 inside a workspace", _near_valid_workspace().flatmap(
        lambda raw: st.integers(0, len(raw)).map(lambda i: raw[:i] + b"\x80\xff" + raw[i:]))),
)
_stems = st.one_of(
    st.sampled_from(["alice-code", "bob-lab", "small", "vscode", "team-pvc", "x:y", "a\nb", "..x", "é", "CON",
                     "a" * 200, "-", "x.yaml"]),
    st.text(alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1,
            max_size=30).filter(lambda s: s not in (".", "..")),
)
_raw_names = st.binary(min_size=1, max_size=30).filter(lambda b: b"/" not in b and b"\x00" not in b
                                                       and b not in (b".", b".."))
_names = st.one_of(st.tuples(_stems.map(lambda s: s.encode("utf-8", "surrogateescape")),
                             st.sampled_from([b".yaml", b".yml"])).map(lambda t: t[0] + t[1]),
                   _raw_names.map(lambda b: b + b".yaml"))
SYMLINK_TARGETS = ("outside-file", "outside-dir", "etc-passwd", "dev-zero", "itself", "nowhere", "inside-file",
                   "fifo")
_entries = st.one_of(
    st.tuples(st.just("file"), st.sampled_from(FOLDERS), _names, _contents),
    st.tuples(st.just("symlink"), st.sampled_from(FOLDERS), _names, st.sampled_from(SYMLINK_TARGETS)),
    st.tuples(st.just("dir"), st.sampled_from(FOLDERS), _names, st.none()),
    st.tuples(st.just("folder-outside"), st.sampled_from(FOLDERS), st.none(), st.none()),
    st.tuples(st.just("project"), st.none(), st.none(), _contents),
    st.tuples(st.just("project"), st.none(), st.none(), st.sampled_from(["outside-file", "missing"])),
)
hostile_repos = st.lists(_entries, min_size=1, max_size=6)


# --- building a repo --------------------------------------------------------------------------

def build(root: Path, outside: Path, entries: list[tuple[Any, ...]]) -> None:
    """A copy of tests/data/base with `entries` written over it; `outside` is a folder beside it."""
    root.mkdir(parents=True)
    for part in ("project.yaml", "blocks", "workspaces"):
        src = BASE / part
        shutil.copytree(src, root / part) if src.is_dir() else shutil.copy(src, root / part)
    add_entries(root, outside, entries)


def add_entries(root: Path, outside: Path, entries: list[tuple[Any, ...]]) -> None:
    """Write hostile `entries` into the repo at `root`; symlinks "outside" point into `outside`."""
    outside.mkdir(exist_ok=True)
    (outside / "secret.yaml").write_text(f"apiVersion: workspaces/v1\nkind: Workspace\n# {MARKER}\n")
    (outside / "dir").mkdir(exist_ok=True)
    (outside / "dir" / "x.yaml").write_text(f"# {MARKER}\n")
    for kind, folder, name, what in entries:
        if kind == "folder-outside":
            if not (root / folder).is_symlink():
                shutil.rmtree(root / folder, ignore_errors=True)
                os.symlink(outside / "dir", root / folder)
            continue
        if kind == "project":
            (root / "project.yaml").unlink(missing_ok=True)
            if what == "outside-file":
                os.symlink(outside / "secret.yaml", root / "project.yaml")
            elif isinstance(what, bytes):
                (root / "project.yaml").write_bytes(what)
            continue
        directory = root / folder
        if directory.is_symlink() or not directory.is_dir():
            continue  # replaced by a symlink to outside: nothing is read from it anyway
        path = os.path.join(os.fsencode(directory), name)
        if os.path.lexists(path):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        if kind == "file":
            with open(path, "wb") as handle:
                handle.write(what)
        elif kind == "dir":
            os.mkdir(path)
        elif what == "fifo":
            os.mkfifo(path)
        else:
            target = {"outside-file": outside / "secret.yaml", "outside-dir": outside / "dir",
                      "etc-passwd": Path("/etc/passwd"), "dev-zero": Path("/dev/zero"),
                      "nowhere": root / "no-such-file.yaml", "inside-file": root / "workspaces" / "alice-code.yaml",
                      "itself": None}[what]
            os.symlink(path if target is None else os.fsencode(target), path)


def check_errors(errors: list[Any], context: str) -> None:
    """Every error is one `path:line:col: message` line about a repo-relative path, and reads no outside file."""
    assert errors, f"{context}: a failure carries at least one error"
    for e in errors:
        text = str(e)
        m = ERROR_LINE.match(text)
        assert m, f"{context}: not path:line:col: message: {text!r}"
        assert int(m["line"]) >= 1 and int(m["col"]) >= 1, text
        path = m["path"]
        assert not path.startswith("/") and ".." not in path.split("/"), f"{context}: {text!r}"
        assert MARKER not in text, f"{context}: a file outside the repo was read: {text!r}"
        assert len(text) <= MAX_ERROR_CHARS, f"{context}: a {len(text)}-character error line: {text[:200]!r}..."


class Stats:
    """The largest time and memory one input took, over a fuzz run."""

    def __init__(self) -> None:
        self.inputs = 0
        self.invalid = 0
        self.errors = 0
        self.max_seconds = 0.0
        self.max_peak_mb = 0.0
        self.kinds: collections.Counter[str] = collections.Counter()
        self.longest_error = 0


def validate_hostile(entries: list[tuple[Any, ...]], stats: Stats) -> None:
    top = Path(tempfile.mkdtemp(prefix="hostile-"))
    try:
        build(top / "repo", top / "outside", entries)
        tracemalloc.start()
        t0 = time.monotonic()
        try:
            load_repo(top / "repo")
            errors: list[Any] = []
        except ValidationFailed as failed:
            errors = failed.errors
        took = time.monotonic() - t0
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        context = f"entries {[(k, f, n, w if not isinstance(w, bytes) else w[:80]) for k, f, n, w in entries]}"
        assert took < MAX_SECONDS, f"{context}: validation took {took:.1f}s"
        assert peak < MAX_PEAK_MB, f"{context}: validation allocated {peak:.0f} MiB"
        if errors:
            check_errors(errors, context)
        stats.inputs += 1
        for kind, _folder, _name, what in entries:
            stats.kinds[what.kind if isinstance(what, Content) else f"{kind} {what or ''}".strip()] += 1
        stats.invalid += bool(errors)
        stats.errors += len(errors)
        stats.longest_error = max([stats.longest_error, *(len(str(e)) for e in errors)])
        stats.max_seconds = max(stats.max_seconds, took)
        stats.max_peak_mb = max(stats.max_peak_mb, peak)
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        shutil.rmtree(top, ignore_errors=True)


def _fuzz(examples: int, name: str) -> None:
    stats = Stats()

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(hostile_repos)
    def run(entries: list[tuple[Any, ...]]) -> None:
        validate_hostile(entries, stats)

    t0 = time.monotonic()
    run()
    record(name, inputs=stats.inputs, invalid=stats.invalid, errors_reported=stats.errors,
           max_validate_s=round(stats.max_seconds, 2), max_peak_mib=round(stats.max_peak_mb, 1),
           tracebacks=0, outside_reads=0, wall_s=round(time.monotonic() - t0, 1), entries_by_kind=dict(stats.kinds),
           longest_error_chars=stats.longest_error)


def test_whole_hostile_repos_only_ever_fail_validation_with_positions_in_bounded_time_and_memory() -> None:
    _fuzz(400, "hostile repos (fast)")


@pytest.mark.soak
def test_soak_whole_hostile_repos() -> None:
    _fuzz(5000, "hostile repos (soak)")


HUGE = "a" * 100_000


@pytest.mark.parametrize("rel, edit", [
    ("workspaces/alice-code.yaml", {"metadata": {"name": HUGE}}),
    ("workspaces/alice-code.yaml", {"spec": {"owner": HUGE}}),
    ("blocks/environments/vscode.yaml", {"spec": {"image": HUGE + " x"}}),
    ("blocks/compute/small.yaml", {"spec": {"cpu": HUGE}}),
    ("blocks/data-sources/team-pvc.yaml", {"spec": {"mountPath": "/" + HUGE + " x"}}),
], ids=["name", "owner", "image", "quantity", "mount-path"])
def test_an_error_line_quotes_only_a_short_prefix_of_a_huge_value(tmp_path: Path, rel: str,
                                                                  edit: dict[str, Any]) -> None:
    build(tmp_path / "repo", tmp_path / "outside", [])
    doc = yaml.safe_load((tmp_path / "repo" / rel).read_text())
    for key, value in edit.items():
        doc[key].update(value)
    (tmp_path / "repo" / rel).write_text(yaml.safe_dump(doc, width=10**7))
    with pytest.raises(ValidationFailed) as failed:
        load_repo(tmp_path / "repo")
    check_errors(failed.value.errors, rel)  # which bounds each line to MAX_ERROR_CHARS


# --- hostile repos against the real cluster ----------------------------------------------------

CASES: dict[str, list[tuple[Any, ...]]] = {
    "billion-laughs": [("file", "workspaces", b"eve-lol.yaml", _billion_laughs(9))],
    "symlink-to-a-file-outside": [("symlink", "workspaces", b"eve-steal.yaml", "outside-file")],
    "workspaces-folder-outside": [("folder-outside", "workspaces", None, None)],
    "symlink-to-dev-zero": [("symlink", "blocks/compute", b"zero.yaml", "dev-zero")],
    "fifo": [("symlink", "workspaces", b"eve-fifo.yaml", "fifo")],
    "non-utf8-content": [("file", "workspaces", b"eve-bytes.yaml", b"apiVersion: workspaces/v1\nkind: \xff\xfe\n")],
    "non-utf8-file-name": [("file", "workspaces", b"eve-\xff\xfe.yaml", b"a: 1\n")],
    "dot-dot-names": [("file", "workspaces", b"x.yaml", b"apiVersion: workspaces/v1\nkind: Workspace\n"
                       b"metadata: {name: ../x}\nspec: {owner: ../x, environment: ../../etc/passwd, compute: ..,"
                       b" dataSources: [../../x]}\n")],
    "deep-nesting": [("file", "blocks/environments", b"deep.yaml", _deep(20_000, "["))],
    "huge-scalar": [("file", "workspaces", b"eve-huge.yaml", _huge((1 << 20) + 10))],
    "random-bytes": [("file", "blocks/data-sources", b"noise.yaml", bytes(range(256)) * 8)],
    "python-tag": [("file", "workspaces", b"eve-tag.yaml", b"a: !!python/object/apply:os.system ['touch /tmp/x']\n")],
}


# Measures the peak RSS of the command alone. Linux records, at exec, the peak RSS of the memory the process had
# before it (for a child of this pytest process: pytest's own peak, shared through vfork or copied by fork) in
# the child's ru_maxrss; after a long pytest run that is the peak of the whole test session (a combined run once
# reported 1001 MiB for a command that takes ~110 MiB). So a small Python process spawns the command and
# reports the ru_maxrss wait4 gives for it: what the command inherits is the small spawner's peak, not pytest's.
_SPAWN_AND_MEASURE = """\
import os, sys
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(args: list[str], kubeconfig: Path, directory: Path) -> tuple[int, str, str, float, float]:
    """Run reconcile; exit code, stdout, stderr, seconds and the peak RSS in MiB of that command alone."""
    out, err, peak = directory / "stdout", directory / "stderr", directory / "peak-rss-kib"
    with open(out, "wb") as o, open(err, "wb") as e:
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-c", _SPAWN_AND_MEASURE, str(peak), sys.executable, "-m", "reconciler",
                            *args, "--kubeconfig", str(kubeconfig)], stdout=o, stderr=e, env=run_env(), cwd=ROOT)
        took = time.monotonic() - t0
    return (p.returncode, out.read_text(errors="replace"), err.read_text(errors="replace"), took,
            int(peak.read_text()) / 1024)


def test_the_memory_bound_measures_the_command_not_the_test_process(tmp_path: Path) -> None:
    """After this process peaked above the bound, a small command still measures as small (it once read 1001 MiB)."""
    ballast = bytearray((MAX_RSS_MB + 100) << 20)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1  # touch every page: this process's peak RSS is now above the bound
    del ballast
    code, _, err, _, rss = run_measured(["--version"], tmp_path / "no-kubeconfig", tmp_path)
    assert code == 0, err
    assert rss < 100, f"`reconcile --version` measured at {rss:.0f} MiB"


@pytest.mark.cluster
def test_applying_a_hostile_repo_exits_1_and_sends_no_request_to_the_cluster(
        control_plane: ControlPlane, admin: Admin, namespace: str, tmp_path: Path) -> None:
    valid = Repo(tmp_path / "valid", namespace)
    r = subprocess.run([sys.executable, "-m", "reconciler", "--repo", str(valid.path), "--no-wait",
                        "--kubeconfig", str(control_plane.kubeconfig)], capture_output=True, text=True,
                       env=run_env(), cwd=ROOT)
    assert r.returncode == 0, r.stderr
    before = admin.resource_versions()
    assert len(before) == 6
    worst_s, worst_mb = 0.0, 0.0
    with FaultProxy(control_plane.kubeconfig) as proxy:
        kc = proxy.kubeconfig(tmp_path)
        for name, entries in CASES.items():
            top = tmp_path / name
            top.mkdir()
            root = top / "repo"
            valid_copy = Repo(root, namespace)  # the deployed repo, plus a change apply would make ...
            valid_copy.edit("blocks/compute/cpu-mid.yaml", lambda d: d["spec"].update(cpu="3"))
            add_entries(root, top / "outside", entries)  # ... plus the hostile entry
            code, out, err, took, rss = run_measured(["--repo", str(root), "--no-wait"], kc, top)
            assert "Traceback" not in out + err, f"{name}: {err}"
            assert code == 1, f"{name}: exit {code}\n{err}"
            lines = [line for line in err.splitlines() if line.strip()]
            assert SUMMARY_LINE.match(lines[-1]), f"{name}: {lines[-1]!r}"
            check_errors(lines[:-1], name)
            assert MARKER not in out + err
            assert proxy.requests == [], f"{name}: {[str(s) for s in proxy.requests]}"
            assert took < 30 and rss < MAX_RSS_MB, f"{name}: {took:.1f}s, {rss:.0f} MiB"
            worst_s, worst_mb = max(worst_s, took), max(worst_mb, rss)
    assert admin.resource_versions() == before
    assert not admin.coord.list_namespaced_lease(namespace).items
    record("hostile repos applied to the real cluster", cases=len(CASES), exit_1=len(CASES), requests_to_cluster=0,
           resource_versions_changed=0, max_run_s=round(worst_s, 2), max_rss_mib=round(worst_mb))
