"""Write a directory tree as a single-layer OCI image layout tar (stdlib only).

The result imports with `ctr -n k8s.io images import FILE` (containerd registers the full name from the
index's `io.containerd.image.name` annotation; `org.opencontainers.image.ref.name` carries the tag, as
BuildKit and the OCI image-layout spec have it) and loads into anything else that reads OCI layouts.

    write_oci_archive(root, "registry.example/team/app:1.0", ImageConfig(user="1000", ...), Path("app.tar"))

The layer keeps numeric ownership, modes, symlinks, hardlinks and device nodes; the contents of
/dev, /proc and /sys are left out (the directories themselves stay). Entries are sorted; timestamps are
kept unless `mtime` is given, which clamps them (kept by default: Python checks each .pyc against its
source's mtime, and a clamped tree would recompile every module at every start in a read-only /opt).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
# Top-level directories whose contents belong to the runtime, not the image.
SKIP_CONTENTS = frozenset({"dev", "proc", "sys"})
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an OCI image config (the fields a container engine reads)."""

    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    user: str = ""
    working_dir: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    exposed_ports: tuple[str, ...] = ()  # e.g. "8888/tcp"
    labels: dict[str, str] = field(default_factory=dict)
    stop_signal: str = ""

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.env:
            out["Env"] = list(self.env)
        if self.user:
            out["User"] = self.user
        if self.working_dir:
            out["WorkingDir"] = self.working_dir
        if self.entrypoint:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            out["Cmd"] = list(self.cmd)
        if self.exposed_ports:
            out["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        if self.labels:
            out["Labels"] = dict(sorted(self.labels.items()))
        if self.stop_signal:
            out["StopSignal"] = self.stop_signal
        return out


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str  # "sha256:<hex>"
    size: int

    def to_json(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


class _HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to `sink` (if any)."""

    def __init__(self, sink: IO[bytes] | None) -> None:
        super().__init__()
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        data = bytes(b)
        self.sha.update(data)
        self.size += len(data)
        if self.sink is not None:
            self.sink.write(data)
        return len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


def _sorted_walk(root: Path) -> Iterator[tuple[str, str]]:
    def visit(path: str, arc: str) -> Iterator[tuple[str, str]]:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            child_arc = f"{arc}/{e.name}" if arc else e.name
            yield e.path, child_arc
            if e.is_dir(follow_symlinks=False) and not (arc == "" and e.name in SKIP_CONTENTS):
                yield from visit(e.path, child_arc)

    yield from visit(str(root), "")


def write_layer(
    root: Path, out: IO[bytes], *, gzip_level: int | None = None, mtime: int | None = None
) -> tuple[Descriptor, str]:
    """Write the tree under `root` as a layer tar to `out`; return (layer descriptor, diff_id)."""
    compressed = _HashingWriter(out)
    gz: gzip.GzipFile | None = None
    if gzip_level is not None:
        gz = gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=gzip_level, mtime=0)
        plain = _HashingWriter(gz)  # type: ignore[arg-type]
    else:
        plain = compressed
    with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for path, arc in _sorted_walk(root):
            info = tar.gettarinfo(path, arcname=arc)  # lstat: symlinks stay symlinks; hardlinks tracked by inode
            if info is None:  # sockets
                continue
            info.uname = info.gname = ""  # numeric ownership only: host names mean nothing in the image
            # whole seconds: a fractional mtime costs each entry a PAX header (~5% of a root's size)
            info.mtime = int(info.mtime) if mtime is None else min(int(info.mtime), mtime)
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    if gz is not None:
        gz.close()
    media = MEDIA_LAYER_GZIP if gzip_level is not None else MEDIA_LAYER
    return Descriptor(media, compressed.digest, compressed.size), plain.digest


def _blob(data: bytes, media_type: str) -> Descriptor:
    return Descriptor(media_type, "sha256:" + hashlib.sha256(data).hexdigest(), len(data))


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def write_oci_archive(
    root: Path,
    name: str,
    config: ImageConfig,
    dest: Path,
    *,
    gzip_level: int | None = None,
    mtime: int | None = None,
    architecture: str = "amd64",
    created_by: str = "workspace-gitops tests/cluster/images",
) -> Path:
    """Write `root` as a single-layer OCI image layout tar named `name` (registry/repo:tag) at `dest`.

    The file appears atomically (written beside `dest`, then renamed). `gzip_level=None` writes an
    uncompressed layer (faster to write and to import; bigger). Returns `dest`.
    """
    if ":" not in name.rsplit("/", 1)[-1]:
        raise ValueError(f"image name needs a tag: {name!r}")
    tag = name.rsplit(":", 1)[1]
    dest.parent.mkdir(parents=True, exist_ok=True)
    layer_tmp = dest.with_name(f".{dest.name}.layer.tmp")
    out_tmp = dest.with_name(f".{dest.name}.tmp")
    try:
        with open(layer_tmp, "wb") as f:
            layer, diff_id = write_layer(root, f, gzip_level=gzip_level, mtime=mtime)
        created = "1970-01-01T00:00:00Z"
        image_config = {
            "architecture": architecture,
            "os": "linux",
            "created": created,
            "config": config.to_json(),
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": created, "created_by": created_by}],
        }
        config_bytes = _canonical(image_config)
        config_desc = _blob(config_bytes, MEDIA_CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": config_desc.to_json(),
            "layers": [layer.to_json()],
        }
        manifest_bytes = _canonical(manifest)
        manifest_desc = _blob(manifest_bytes, MEDIA_MANIFEST)
        index = {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [
                {
                    **manifest_desc.to_json(),
                    "annotations": {ANNOTATION_CONTAINERD_NAME: name, ANNOTATION_REF_NAME: tag},
                    "platform": {"architecture": architecture, "os": "linux"},
                }
            ],
        }
        with tarfile.open(out_tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, "oci-layout", _canonical({"imageLayoutVersion": "1.0.0"}))
            _add_bytes(tar, "index.json", _canonical(index))
            _add_dir(tar, "blobs")
            _add_dir(tar, "blobs/sha256")
            _add_bytes(tar, "blobs/sha256/" + config_desc.digest.split(":")[1], config_bytes)
            _add_bytes(tar, "blobs/sha256/" + manifest_desc.digest.split(":")[1], manifest_bytes)
            info = tarfile.TarInfo("blobs/sha256/" + layer.digest.split(":")[1])
            info.size = layer.size
            info.mode = 0o644
            with open(layer_tmp, "rb") as f:
                tar.addfile(info, f)
        os.replace(out_tmp, dest)
    finally:
        for p in (layer_tmp, out_tmp):
            p.unlink(missing_ok=True)
    return dest


def read_index(archive: Path) -> dict[str, object]:
    """The index.json of an OCI layout tar (for checks)."""
    with tarfile.open(archive) as tar:
        f = tar.extractfile("index.json")
        assert f is not None
        data: dict[str, object] = json.load(f)
        return data
