"""What a workspace becomes in the cluster: models in, plain JSON-able dicts out. Pure."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

from reconciler import extensions, placement, powershell
from reconciler.models import ComputeResource, DataSource, Environment, Project, Repo, Workspace

MANAGED_BY = "workspace-reconciler"
"""Value of app.kubernetes.io/managed-by; also the server-side apply field manager."""
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_NAME = "app.kubernetes.io/name"
ANNOTATION_SOURCE = "workspace-gitops.io/source"
"""Repo-relative path of the workspace file."""
ANNOTATION_COMMIT = "workspace-gitops.io/commit"
"""Git commit of the last write; ignored by the diff."""

CONTAINER_NAME = "workspace"
INIT_CONTAINER_NAME = "init-workdir"
PORT_NAME = "http"
RUN_AS_USER = 1000
WORKDIR_PLACEHOLDER = "{workdir}"
JUPYTER_ACTIVITY_ARG = "--ServerApp.authenticate_prometheus=False"
"""Lets `reconcile lifecycle` read JupyterLab's last activity (`/metrics`) without the token; every
other endpoint (/lab, /api/...) still needs it. The metrics hold counters and timestamps, no secret."""
INIT_RESOURCES = {"cpu": "100m", "memory": "64Mi"}
"""requests = limits of the container that creates the working directory."""
GPU_RESOURCE = "nvidia.com/gpu"
INGRESS_ANNOTATIONS = {
    # ingress-nginx cuts request bodies at 1 MiB (a notebook upload) and idle WebSockets at 60 s (the
    # IDE's connection); other controllers ignore these keys (Traefik's 60 s request read timeout is
    # an entrypoint setting, not an annotation: see docs/CLUSTER.md).
    "nginx.ingress.kubernetes.io/proxy-body-size": "0",
    "nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
    "nginx.ingress.kubernetes.io/proxy-send-timeout": "3600",
}
MKDIR_SCRIPT = (
    'for d in "$@"; do mkdir -p "$d" || { echo "cannot create $d as UID $(id -u): the platform team must make'
    ' $(dirname "$d") writable by group $(id -g) (or by all, with the sticky bit)" >&2; exit 1; }; done;'
    ' if [ -n "$2" ]; then chmod 700 "$2"; fi'
)
"""The init container's command: the working directory and the home ($2, private) are created if missing,
and a volume it cannot write says who fixes it."""
HOME_FOLDER = ".home"
"""Homes live at <first data source>/workspaces/<owner>/.home/<workspace>."""


@dataclass(frozen=True)
class DesiredWorkspace:
    """One workspace as the cluster should hold it, with what reports need to say about it."""

    name: str
    owner: str
    environment: str
    compute: str
    data_sources: tuple[str, ...]
    pvcs: tuple[str, ...]
    gpu: int | float
    tool: str
    state: str
    url: str
    credential_hint: str
    source: str
    objects: Sequence[dict[str, Any]]
    """Deployment, Service, Ingress, in that order (plain dicts); `RenderedObjects` renders them when read."""
    node_pool: str = ""
    node_selector: tuple[tuple[str, str], ...] = ()
    """The node pool's nodeSelector, as the pod template carries it."""
    extensions: tuple[str, ...] = ()
    default_certificate: bool = False
    """No ingress.tlsSecret: the ingress serves its https URL with the controller's default certificate."""
    credential_hint_powershell: str = ""
    """`credential_hint` for Windows PowerShell."""


class RenderedObjects(Sequence[dict[str, Any]]):
    """A workspace's objects, rendered each time they are read and never kept.

    `render(lazy=True)` gives these, so a plan of 5,000 workspaces, which reads each workspace's
    objects once, compares them and keeps only what changes, never holds 15,000 rendered objects
    at once; `ids` names them without rendering them."""

    def __init__(self, make: Callable[[], tuple[dict[str, Any], ...]], ids: tuple[tuple[str, str, str], ...]) -> None:
        self._make = make
        self.ids = ids
        """(kind, namespace, name) of each object, in order."""

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[dict[str, Any], ...]: ...
    def __getitem__(self, i: int | slice) -> dict[str, Any] | tuple[dict[str, Any], ...]:
        return self._make()[i]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._make())

    def __len__(self) -> int:
        return len(self.ids)


def object_ids(w: DesiredWorkspace) -> list[tuple[str, str, str]]:
    """(kind, namespace, name) of each of `w`'s objects ("" for a namespace the object does not say)."""
    if isinstance(w.objects, RenderedObjects):
        return list(w.objects.ids)
    return [object_id(o) for o in w.objects]


def object_id(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    """(kind, namespace, name) of one object ("" for what it does not say)."""
    meta = obj.get("metadata") or {}
    return str(obj.get("kind", "")), str(meta.get("namespace") or ""), str(meta.get("name", ""))


def render(repo: Repo, only: Collection[str] | None = None, *, lazy: bool = False) -> list[DesiredWorkspace]:
    """Every workspace of a validated repo (or those named in `only`), sorted by name.

    `lazy`: each workspace's objects are `RenderedObjects`, rendered when read (the plan's memory)."""
    names = sorted(repo.workspaces if only is None else set(only) & set(repo.workspaces))
    return [render_workspace(repo, repo.workspaces[name], lazy=lazy) for name in names]


def render_workspace(repo: Repo, workspace: Workspace, *, lazy: bool = False) -> DesiredWorkspace:
    """One workspace of a validated repo (its blocks must exist in `repo`)."""
    project = repo.project
    environment = repo.environments[workspace.spec.environment]
    compute = repo.compute[workspace.spec.compute]
    sources = [repo.data_sources[name] for name in workspace.spec.data_sources]
    source_path = repo.sources[("Workspace", workspace.name)]
    labels = workspace_labels(project.name, workspace.name, environment.spec.tool)
    annotations = {ANNOTATION_SOURCE: source_path}
    if repo.commit:
        annotations[ANNOTATION_COMMIT] = repo.commit

    def make() -> tuple[dict[str, Any], ...]:
        return (
            _deployment(project, workspace, environment, compute, sources, labels, annotations),
            _service(project, workspace, environment, labels, annotations),
            _ingress(project, workspace, environment, labels, annotations),
        )

    objects: Sequence[dict[str, Any]] = make() if not lazy else RenderedObjects(
        make, tuple((kind, project.namespace, workspace.name) for kind in ("Deployment", "Service", "Ingress")))
    pool = project.spec.node_pools.get(compute.spec.node_pool or "")
    return DesiredWorkspace(
        name=workspace.name,
        owner=workspace.spec.owner,
        environment=environment.name,
        compute=compute.name,
        data_sources=tuple(s.name for s in sources),
        pvcs=tuple(s.spec.pvc for s in sources),
        gpu=compute.spec.gpu,
        tool=environment.spec.tool,
        state=workspace.spec.state,
        url=workspace_url(project, workspace.name, environment.spec.tool),
        credential_hint=credential_hint(project, workspace.name, environment),
        source=source_path,
        objects=objects,
        node_pool=compute.spec.node_pool or "",
        node_selector=tuple(sorted(pool.node_selector.items())) if pool is not None and pool.node_selector else (),
        extensions=tuple(environment.spec.vscode.extensions) if environment.spec.vscode else (),
        default_certificate=not (project.spec.ingress and project.spec.ingress.tls_secret),
        credential_hint_powershell=powershell.credential_hint_powershell(project, workspace.name, environment),
    )


def workspace_labels(project: str, workspace: str, tool: str) -> dict[str, str]:
    """The labels on every object of a workspace and on its pod template."""
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PART_OF: project,
        LABEL_INSTANCE: workspace,
        LABEL_NAME: tool,
    }


def selector_labels(project: str, workspace: str) -> dict[str, str]:
    """The labels that select a workspace's pods (immutable on a Deployment: no tool in it)."""
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_PART_OF: project, LABEL_INSTANCE: workspace}


def managed_selector(project: str) -> str:
    """The label selector of every object the reconciler manages for `project`."""
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_PART_OF}={project}"


def instances_selector(workspaces: Collection[str]) -> str:
    """The label selector of the named workspaces' objects (with `managed_selector`, or on its own)."""
    return f"{LABEL_INSTANCE} in ({','.join(sorted(workspaces))})"


def host(project: Project, workspace: str) -> str:
    """`<project>-<workspace>.<domain>`."""
    return f"{project.name}-{workspace}.{project.spec.domain}"


def workspace_url(project: Project, workspace: str, tool: str) -> str:
    """`https://<project>-<workspace>.<domain>`, with `/lab` for JupyterLab."""
    url = f"https://{host(project, workspace)}"
    return f"{url}/lab" if tool == "jupyterlab" else url


def credential_hint(project: Project, workspace: str, environment: Environment) -> str:
    """The command that prints the workspace's password or token (never the secret itself)."""
    credentials = environment.spec.credentials
    if project.spec.hints == "runai":
        if credentials.file is not None:
            return f"runai exec {workspace} -p {project.name} -- cat {credentials.file}"
        return f'runai logs {workspace} -p {project.name} | grep "{credentials.log_pattern}"'
    if credentials.file is not None:
        return f"kubectl -n {project.namespace} exec deploy/{workspace} -- cat {credentials.file}"
    return f'kubectl -n {project.namespace} logs deploy/{workspace} | grep "{credentials.log_pattern}"'


def workdir(workspace: Workspace, sources: list[DataSource]) -> str | None:
    """`<first data source mountPath>/workspaces/<owner>`, or None without a data source."""
    if not sources:
        return None
    return f"{sources[0].mount_path.rstrip('/')}/workspaces/{workspace.spec.owner}"


def home_subpath(workspace: Workspace, sources: list[DataSource]) -> str | None:
    """`workspaces/<owner>/.home/<workspace>` on the first data source, or None without a writable one."""
    if not sources or sources[0].spec.read_only:
        return None
    return f"workspaces/{workspace.spec.owner}/{HOME_FOLDER}/{workspace.name}"


def _metadata(project: Project, name: str, labels: dict[str, str], annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": project.namespace,
        "labels": dict(labels),
        "annotations": dict(annotations),
    }


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _args(environment: Environment, directory: str | None) -> list[str]:
    # Without a data source there is no working directory to name: "." is the container's own.
    value = directory or "."
    args = [arg.replace(WORKDIR_PLACEHOLDER, value) for arg in environment.spec.args]
    if environment.spec.tool == "jupyterlab" and directory is not None:
        # The seed's warning: JupyterLab only sees the PVC when its root dir is there.
        # (Not the pre-jupyter_server notebook_dir option: JupyterLab 4 warns it is deprecated.)
        args += [f"--ServerApp.root_dir={directory}"]
    if environment.spec.tool == "jupyterlab":
        args += [JUPYTER_ACTIVITY_ARG]
    return args


def _deployment(
    project: Project,
    workspace: Workspace,
    environment: Environment,
    compute: ComputeResource,
    sources: list[DataSource],
    labels: dict[str, str],
    annotations: dict[str, str],
) -> dict[str, Any]:
    spec = environment.spec
    directory = workdir(workspace, sources)
    quantities: dict[str, str] = {"cpu": compute.spec.cpu, "memory": compute.spec.memory}
    if compute.spec.gpu > 0 and not placement.is_fraction(compute.spec.gpu):
        quantities[GPU_RESOURCE] = str(compute.spec.gpu)
    mounts = [{"name": s.name, "mountPath": s.mount_path, "readOnly": s.spec.read_only} for s in sources]
    home = spec.home_dir
    subpath = home_subpath(workspace, sources)
    # The home on the volume keeps the IDE's password, extensions, conda envs and history over restarts.
    home_mounts = [{"name": sources[0].name, "mountPath": home, "subPath": subpath}] if subpath else []
    home_env = [{"name": "HOME", "value": home}] if subpath else []
    container: dict[str, Any] = {"name": CONTAINER_NAME, "image": spec.image}
    args = _args(environment, directory)
    if args:
        container["args"] = args
    env = [{"name": key, "value": spec.env[key]} for key in sorted(spec.env) if key != "HOME" or not subpath]
    env = sorted([*env, *home_env, *(extensions.gallery_env(project) if spec.vscode else [])], key=lambda e: e["name"])
    if env:
        container["env"] = env
    if directory is not None:
        container["workingDir"] = directory
    container["ports"] = [{"name": PORT_NAME, "containerPort": spec.port, "protocol": "TCP"}]
    container["resources"] = {"requests": dict(quantities), "limits": dict(quantities)}
    if mounts:
        container["volumeMounts"] = mounts + home_mounts
    container["readinessProbe"] = {"tcpSocket": {"port": spec.port}, "periodSeconds": 5}
    container["securityContext"] = _container_security()

    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            # A team PVC can hold millions of files: chown them only when the root's group is wrong.
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if directory is not None:
        # The seed's personal folder on the PVC, created if missing before the server starts.
        pod["initContainers"] = [
            {
                "name": INIT_CONTAINER_NAME,
                "image": spec.image,
                "command": ["sh", "-c", MKDIR_SCRIPT, INIT_CONTAINER_NAME, directory,
                            *([f"{sources[0].mount_path.rstrip('/')}/{subpath}"] if subpath else [])],
                # The message reaches the pod's status, so `reconcile status` can say why it waits.
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "resources": {"requests": dict(INIT_RESOURCES), "limits": dict(INIT_RESOURCES)},
                "volumeMounts": [dict(m) for m in mounts],
                "securityContext": _container_security(),
            }
        ]
    if spec.vscode and spec.vscode.extensions:
        install_resources = {k: v for k, v in quantities.items() if k != GPU_RESOURCE}
        pod.setdefault("initContainers", []).append(
            extensions.init_container(spec.image, spec.vscode.extensions, project, install_resources,
                                      mounts + home_mounts, home_env, _container_security())
        )
    pod["containers"] = [container]
    if sources:
        pod["volumes"] = [
            {"name": s.name, "persistentVolumeClaim": {"claimName": s.spec.pvc, "readOnly": s.spec.read_only}}
            for s in sources
        ]
    placement.place(pod, container, project, compute)
    template_metadata: dict[str, Any] = {"labels": dict(labels)}
    fraction = placement.pod_annotations(project, compute)
    if fraction:
        template_metadata["annotations"] = fraction
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(project, workspace.name, labels, annotations),
        "spec": {
            "replicas": 1 if workspace.spec.state == "running" else 0,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector_labels(project.name, workspace.name)},
            "template": {"metadata": template_metadata, "spec": pod},
        },
    }


def _service(
    project: Project,
    workspace: Workspace,
    environment: Environment,
    labels: dict[str, str],
    annotations: dict[str, str],
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(project, workspace.name, labels, annotations),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(project.name, workspace.name),
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": environment.spec.port,
                    "targetPort": PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def _ingress(
    project: Project,
    workspace: Workspace,
    environment: Environment,
    labels: dict[str, str],
    annotations: dict[str, str],
) -> dict[str, Any]:
    settings = project.spec.ingress
    extra = dict(sorted(settings.annotations.items())) if settings else {}
    spec: dict[str, Any] = {}
    if settings and settings.class_name:
        spec["ingressClassName"] = settings.class_name
    if settings and settings.tls_secret:
        spec["tls"] = [{"hosts": [host(project, workspace.name)], "secretName": settings.tls_secret}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": _metadata(project, workspace.name, labels, {**annotations, **INGRESS_ANNOTATIONS, **extra}),
        "spec": {
            **spec,
            "rules": [
                {
                    "host": host(project, workspace.name),
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {
                                    "service": {
                                        "name": workspace.name,
                                        "port": {"number": environment.spec.port},
                                    }
                                },
                            }
                        ]
                    },
                }
            ]
        },
    }
