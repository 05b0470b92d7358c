"""The create floor: what the same apiserver needs for the same server-side applies from a minimal client.

The rendered objects are read and serialized to JSON before the clock starts; then every PATCH
(`application/apply-patch+yaml`, field manager `workspace-reconciler`, force) goes out with the
reconciler's concurrency over one keep-alive connection pool (urllib3, TLS with the kubeconfig's
client certificate), and nothing else is done. The reconciler's create time divided by this is
the `create_floor_ratio`: what the reconciler itself adds on top of the server.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import urllib3
import yaml
from kubernetes import client, config

from bench.config import UA_FLOOR, BenchError

RECONCILER_WORKERS = 8
"""The reconciler's write concurrency (`ClusterOptions.workers`)."""
PATHS = {"Deployment": ("/apis/apps/v1", "deployments"), "Service": ("/api/v1", "services"),
         "Ingress": ("/apis/networking.k8s.io/v1", "ingresses")}
ORDER = ("Deployment", "Service", "Ingress")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def bodies(render_dir: Path, namespace: str) -> list[list[tuple[str, bytes]]]:
    """Per workspace, its objects' (path, JSON body) in the reconciler's apply order."""
    by_workspace: dict[str, list[tuple[int, str, bytes]]] = {}
    for f in sorted(render_dir.glob("*.yaml")):
        obj = yaml.load(f.read_text(), Loader=_LOADER)  # noqa: S506 - the safe loader (libyaml's)
        obj["metadata"]["namespace"] = namespace
        prefix, plural = PATHS[obj["kind"]]
        name = obj["metadata"]["name"]
        instance = (obj["metadata"].get("labels") or {}).get("app.kubernetes.io/instance", name)
        path = f"{prefix}/namespaces/{namespace}/{plural}/{name}?fieldManager=workspace-reconciler&force=true"
        by_workspace.setdefault(instance, []).append((ORDER.index(obj["kind"]), path, json.dumps(obj).encode()))
    return [[(p, b) for _, p, b in sorted(objs)] for _, objs in sorted(by_workspace.items())]


def create_floor(kubeconfig: Path, namespace: str, render_dir: Path,
                 workers: int = RECONCILER_WORKERS) -> tuple[float, int]:
    """(wall seconds, requests) to server-side apply every rendered object into `namespace`."""
    return send_all(kubeconfig, bodies(render_dir, namespace), workers, "the floor's server-side applies")


FOREIGN_CONFIGMAPS = 20_000
FOREIGN_SERVICES = 2_000
"""Somebody else's objects in the namespace: many of a kind the plan never lists, some of one it does."""


def add_foreign_objects(kubeconfig: Path, namespace: str, configmaps: int = FOREIGN_CONFIGMAPS,
                        services: int = FOREIGN_SERVICES) -> tuple[float, int]:
    """Create `configmaps` ConfigMaps (1 KiB of data each) and `services` Services of another manager."""
    def body(kind: str, name: str) -> tuple[str, bytes]:
        obj: dict[str, object] = {"apiVersion": "v1", "kind": kind,
                                  "metadata": {"name": name, "labels": {"app": "someone-else"}}}
        if kind == "ConfigMap":
            obj["data"] = {"blob": "x" * 1024}
        else:
            obj["spec"] = {"selector": {"app": "someone-else"}, "ports": [{"port": 80}]}
        plural = "configmaps" if kind == "ConfigMap" else "services"
        return (f"/api/v1/namespaces/{namespace}/{plural}/{name}?fieldManager=someone-else&force=true",
                json.dumps(obj).encode())

    objs = [body("ConfigMap", f"other-{i}") for i in range(configmaps)]
    objs += [body("Service", f"other-svc-{i}") for i in range(services)]
    batches = [objs[i:i + 100] for i in range(0, len(objs), 100)]
    return send_all(kubeconfig, batches, RECONCILER_WORKERS, "creating others' objects")


def send_all(kubeconfig: Path, jobs: list[list[tuple[str, bytes]]], workers: int, what: str) -> tuple[float, int]:
    """(wall seconds, requests) to PATCH (server-side apply) every (path, body) of `jobs`, each job's in
    order, `workers` jobs at a time over one keep-alive pool."""
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)  # type: ignore[no-untyped-call]
    url = urlsplit(cfg.host)
    pool = urllib3.HTTPSConnectionPool(
        url.hostname or "127.0.0.1", url.port or 443, maxsize=max(workers * 2, 10), block=True,
        cert_reqs="CERT_REQUIRED", ca_certs=cfg.ssl_ca_cert, cert_file=cfg.cert_file, key_file=cfg.key_file,
        retries=False, timeout=urllib3.Timeout(connect=5, read=60))
    headers = {"Content-Type": "application/apply-patch+yaml", "Accept": "application/json", "User-Agent": UA_FLOOR}
    token = cfg.get_api_key_with_prefix("BearerToken") if cfg.api_key else None
    if token:
        headers["Authorization"] = token
    failures: list[str] = []

    def one_job(objs: list[tuple[str, bytes]]) -> int:
        for path, body in objs:
            r = pool.urlopen("PATCH", path, body=body, headers=headers, preload_content=True)
            if not 200 <= r.status < 300:
                failures.append(f"{path}: {r.status} {r.data[:200]!r}")
        return len(objs)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as ex:
        sent = sum(ex.map(one_job, jobs))
    seconds = time.perf_counter() - start
    pool.close()
    if failures:
        raise BenchError(f"{what} failed ({len(failures)}): {failures[0]}")
    return seconds, sent
