"""The OCI layout writer: digests, the name containerd registers, and a layer that keeps what a root needs."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oci  # noqa: E402

NAME = "registry.example.net/team/app:1.2.3"


def _tree(root: Path) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "secret").write_text("s")
    (root / "etc" / "secret").chmod(0o640)
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\n")
    (root / "bin" / "tool").chmod(0o4755)
    os.link(root / "bin" / "tool", root / "bin" / "tool-again")
    (root / "bin" / "alias").symlink_to("tool")
    (root / "tmp").mkdir()
    (root / "tmp").chmod(0o1777)
    (root / "home" / "user").mkdir(parents=True)
    if os.geteuid() == 0:
        os.chown(root / "home" / "user", 1000, 1000)
    for skipped in ("dev", "proc", "sys"):
        (root / skipped).mkdir()
        (root / skipped / "junk").write_text("x")


def _blob(tar: tarfile.TarFile, digest: str) -> bytes:
    f = tar.extractfile("blobs/sha256/" + digest.split(":", 1)[1])
    assert f is not None
    data = f.read()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    return data


@pytest.mark.parametrize("gzip_level", [None, 1])
def test_layout_layer_and_config(tmp_path: Path, gzip_level: int | None) -> None:
    root = tmp_path / "root"
    _tree(root)
    config = oci.ImageConfig(user="1000", working_dir="/home/user", entrypoint=("/bin/tool",), cmd=("--x",))
    dest = oci.write_oci_archive(root, NAME, config, tmp_path / "out" / "app.tar", gzip_level=gzip_level)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["app.tar"]  # no temporary files left

    with tarfile.open(dest) as tar:
        assert json.loads(_read(tar, "oci-layout")) == {"imageLayoutVersion": "1.0.0"}
        index = json.loads(_read(tar, "index.json"))
        [desc] = index["manifests"]
        assert desc["annotations"] == {"io.containerd.image.name": NAME, "org.opencontainers.image.ref.name": "1.2.3"}
        manifest = json.loads(_blob(tar, desc["digest"]))
        assert len(_blob(tar, desc["digest"])) == desc["size"]
        image_config = json.loads(_blob(tar, manifest["config"]["digest"]))
        [layer_desc] = manifest["layers"]
        layer = _blob(tar, layer_desc["digest"])
    assert layer_desc["size"] == len(layer)
    assert layer_desc["mediaType"].endswith("+gzip") == (gzip_level is not None)
    plain = gzip.decompress(layer) if gzip_level is not None else layer
    assert image_config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(plain).hexdigest()]
    assert image_config["config"]["User"] == "1000"
    assert image_config["config"]["WorkingDir"] == "/home/user"
    assert image_config["config"]["Entrypoint"] == ["/bin/tool"]

    with tarfile.open(fileobj=io.BytesIO(plain)) as t:
        entries = {i.name: i for i in t.getmembers()}
    assert {"dev", "proc", "sys"} <= set(entries)
    assert not {"dev/junk", "proc/junk", "sys/junk"} & set(entries)
    assert entries["etc/secret"].mode == 0o640
    assert entries["bin/tool"].mode == 0o4755
    assert entries["tmp"].mode == 0o1777
    assert entries["bin/alias"].issym() and entries["bin/alias"].linkname == "tool"
    assert entries["bin/tool-again"].islnk() and entries["bin/tool-again"].linkname == "bin/tool"
    assert all(i.uname == "" and i.gname == "" for i in entries.values())
    if os.geteuid() == 0:
        assert (entries["home/user"].uid, entries["home/user"].gid) == (1000, 1000)
    names = list(entries)
    assert names == sorted(names, key=lambda n: n.split("/"))  # parents first, in name order


def test_same_tree_same_digests(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _tree(root)
    a = oci.write_oci_archive(root, NAME, oci.ImageConfig(), tmp_path / "a.tar")
    b = oci.write_oci_archive(root, NAME, oci.ImageConfig(), tmp_path / "b.tar")
    assert oci.read_index(a) == oci.read_index(b)


def test_name_needs_a_tag(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        oci.write_oci_archive(tmp_path, "registry.example.net:5000/team/app", oci.ImageConfig(), tmp_path / "x.tar")


def _read(tar: tarfile.TarFile, name: str) -> bytes:
    f = tar.extractfile(name)
    assert f is not None
    return f.read()
