"""`reconcile import`: workspace files for the workspaces that already run in the namespace.

Reads the namespace once (cluster.read_live: one LIST per kind) and, for every Deployment that is
neither ours nor in the repo, says which blocks it is made of. A Deployment matches when:

* its pod selector is the reconciler's (a Deployment's selector is immutable, so any other one
  could only be taken over by deleting and re-creating the Deployment, which import never asks for);
* its one container's image is the image of an environment (and its port, when declared, that
  environment's port);
* its requests (or limits) equal a compute size's CPU, memory and GPUs;
* each volume is a PersistentVolumeClaim mounted where a data source mounts that claim;
* its owner is known (a label, or `--owner NAME=LOGIN`).

A match becomes a workspace file (the Service and Ingress of the same name are then taken over
by the apply's `--adopt`; missing ones are created). Anything else is listed per object with what
does not match. Nothing is written to the cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.catalog import TOOLS, workspace_text
from reconciler.changeset import ObjectId
from reconciler.cluster import Cluster, ClusterOptions
from reconciler.errors import ReconcileError, ValidationFailed
from reconciler.fields import parse_quantity
from reconciler.models import DataSource, Repo
from reconciler.plan import is_ours
from reconciler.render import GPU_RESOURCE, selector_labels
from reconciler.writer import write_new_file

Json = dict[str, Any]
OWNER_LABEL = "owner"


@dataclass
class Candidate:
    """One Deployment of the namespace, as a workspace to import or the reasons it cannot be."""

    name: str
    owner: str = ""
    environment: str = ""
    compute: str = ""
    data_sources: list[str] = field(default_factory=list)
    state: str = "running"
    problems: list[str] = field(default_factory=list)
    """What does not match, one line each, naming the object."""
    notes: list[str] = field(default_factory=list)
    """What the adopt will change that a user notices (URL, missing Service)."""

    @property
    def matches(self) -> bool:
        return not self.problems


def read_namespace(namespace: str, opts: ClusterOptions) -> dict[ObjectId, Json]:
    """Every Deployment, Service and Ingress of the namespace (read rights only)."""
    return dict(Cluster(namespace, opts).read_live(gpu_check=False).objects)  # decoded once: matching reads them often


def candidates(repo: Repo, objects: dict[ObjectId, Json], owners: dict[str, str],
               owner_label: str = OWNER_LABEL) -> list[Candidate]:
    """Every Deployment that is not ours and not in the repo, matched against the repo's blocks."""
    project = repo.project.metadata.name
    out: list[Candidate] = []
    for oid in sorted(o for o in objects if o.kind == "Deployment"):
        dep = objects[oid]
        if is_ours(dep, project) or oid.name in repo.workspaces:
            continue
        out.append(_match(repo, oid.name, dep, objects, owners, owner_label))
    return out


def _match(repo: Repo, name: str, dep: Json, objects: dict[ObjectId, Json], owners: dict[str, str],
           owner_label: str) -> Candidate:
    c = Candidate(name=name)
    where = f"Deployment/{name}"
    meta, spec = dep.get("metadata") or {}, dep.get("spec") or {}
    pod = ((spec.get("template") or {}).get("spec")) or {}
    want = selector_labels(repo.project.metadata.name, name)
    have = (spec.get("selector") or {}).get("matchLabels") or {}
    if have != want or (spec.get("selector") or {}).get("matchExpressions"):
        c.problems.append(f"{where}: selector {_labels(have)} is not the reconciler's {_labels(want)}; "
                          "a Deployment's selector cannot change, so taking it over would delete and re-create "
                          "it: re-create it by hand with that selector, or let the reconciler create a new one")
    containers = pod.get("containers") or []
    if len(containers) != 1:
        c.problems.append(f"{where}: {len(containers)} containers; a workspace has exactly one")
    else:
        _match_container(repo, c, where, containers[0], pod)
    if spec.get("replicas", 1) == 0:
        c.state = "stopped"
    owner = owners.get(name) or (meta.get("labels") or {}).get(owner_label, "")
    if not owner:
        c.problems.append(f"{where}: owner unknown: label it {owner_label}=<login> or pass --owner {name}=<login>")
    elif repo.project.spec.owner_prefix and not name.startswith(f"{owner}-"):
        c.problems.append(f"{where}: name does not start with its owner's '{owner}-' (project.yaml sets "
                          "ownerPrefix: true); a workspace cannot be renamed in place")
    c.owner = owner
    for kind in ("Service", "Ingress"):
        if ObjectId(kind, repo.project.namespace, name) not in objects:
            c.notes.append(f"no {kind} named {name}: the apply creates one")
    ingress = objects.get(ObjectId("Ingress", repo.project.namespace, name))
    if ingress is not None and c.environment:
        from reconciler.render import workspace_url

        hosts = [r.get("host") for r in (ingress.get("spec") or {}).get("rules") or [] if r.get("host")]
        url = workspace_url(repo.project, name, repo.environments[c.environment].spec.tool)
        if hosts and f"https://{hosts[0]}" not in url:
            c.notes.append(f"its URL changes from https://{hosts[0]} to {url}")
    return c


def _match_container(repo: Repo, c: Candidate, where: str, container: Json, pod: Json) -> None:
    image = container.get("image", "")
    envs = sorted(n for n, e in repo.environments.items() if e.spec.image == image)
    if not envs:
        known = ", ".join(sorted({e.spec.image for e in repo.environments.values()})) or "none"
        c.problems.append(f"{where}: image {image} is no environment's image (blocks/environments/ has: {known})")
    else:
        ports = [p.get("containerPort") for p in container.get("ports") or []]
        fitting = [n for n in envs if not ports or repo.environments[n].spec.port in ports]
        if not fitting:
            c.problems.append(f"{where}: container port {ports} is not environment {envs[0]}'s port "
                              f"{repo.environments[envs[0]].spec.port}")
        else:
            c.environment = fitting[0]
    resources = container.get("resources") or {}
    amounts = resources.get("requests") or resources.get("limits") or {}
    size = _compute_for(repo, amounts)
    if size is None:
        have = ", ".join(f"{k}={v}" for k, v in sorted(amounts.items())) or "none"
        sizes = "; ".join(f"{n}: cpu={b.spec.cpu}, memory={b.spec.memory}, gpu={b.spec.gpu}"
                          for n, b in sorted(repo.compute.items()))
        c.problems.append(f"{where}: resources ({have}) match no compute size ({sizes})")
    else:
        c.compute = size
    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount.get("name")) or {}
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        path = mount.get("mountPath", "")
        if not claim:
            kinds = sorted(k for k in volume if k != "name") or ["unknown"]
            c.problems.append(f"{where}: mount {path} is a volume of type {kinds[0]}, not a PersistentVolumeClaim; "
                              "a workspace mounts data sources only")
            continue
        source = _data_source_for(repo.data_sources, claim, path, bool(mount.get("readOnly")))
        if source is None:
            c.problems.append(f"{where}: mount {path} of claim {claim} is no data source's "
                              f"(blocks/data-sources/ has: {_sources(repo.data_sources)})")
        elif source not in c.data_sources:
            c.data_sources.append(source)
    # The reconciler's working directory lives on the first data source: keep the one in use first.
    workdir = container.get("workingDir") or ""
    first = [d for d in c.data_sources if workdir.startswith(repo.data_sources[d].mount_path.rstrip("/") + "/")]
    if first:
        c.data_sources.remove(first[0])
        c.data_sources.insert(0, first[0])


def _compute_for(repo: Repo, amounts: Json) -> str | None:
    try:
        cpu = parse_quantity(str(amounts.get("cpu", "")))
        memory = parse_quantity(str(amounts.get("memory", "")))
        gpu = int(str(amounts.get(GPU_RESOURCE, "0")))
    except ValueError:
        return None
    for name in sorted(repo.compute):
        s = repo.compute[name].spec
        if parse_quantity(s.cpu) == cpu and parse_quantity(s.memory) == memory and s.gpu == gpu:
            return name
    return None


def _data_source_for(sources: dict[str, DataSource], claim: str, path: str, read_only: bool) -> str | None:
    for name in sorted(sources):
        d = sources[name]
        if d.spec.pvc == claim and d.mount_path.rstrip("/") == path.rstrip("/") and d.spec.read_only == read_only:
            return name
    return None


def _sources(sources: dict[str, DataSource]) -> str:
    return ", ".join(f"{n} (claim {d.spec.pvc} at {d.mount_path})" for n, d in sorted(sources.items())) or "none"


def _labels(labels: Json) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"


def file_text(repo: Repo, c: Candidate) -> str:
    """The workspace file of a matching candidate."""
    tool = repo.environments[c.environment].spec.tool
    assert tool in TOOLS
    return workspace_text(repo, c.owner, tool, c.name, c.environment, c.compute, c.data_sources,
                          origin=f"`reconcile import` from Deployment/{c.name}", state=c.state)


def write_matches(root: Path, repo: Repo, found: list[Candidate]) -> list[str]:
    """Write workspaces/<name>.yaml for every matching candidate; the names written.

    Each file must validate with the repo (name rules, URL length, quota), or it is not kept: its
    candidate then gets the reasons as problems (and no longer matches)."""
    written: list[str] = []
    for c in found:
        if not c.matches:
            continue
        rel = f"workspaces/{c.name}.yaml"
        try:
            write_new_file(root, rel, file_text(repo, c), c.name)
            written.append(c.name)
        except ValidationFailed as e:
            c.problems += [f"{rel}: {err.message}" for err in e.errors]
        except ReconcileError as e:
            c.problems.append(str(e))
    return written
