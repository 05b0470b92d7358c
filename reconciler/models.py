"""The file kinds (pydantic v2, strict, no extra fields at any depth) and the resolved `Repo`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from reconciler.fields import (
    AbsolutePath,
    Admin,
    ControlPlaneUrl,
    Date,
    Duration,
    EnvName,
    Extension,
    Gpu,
    HttpsUrl,
    Image,
    Label,
    LabelKey,
    LabelValue,
    LogPattern,
    MountPath,
    Name,
    Owner,
    Price,
    Quantity,
    Subdomain,
    duration_seconds,
)

API_VERSION = "workspaces/v1"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=False)


class Metadata(_Model):
    """Identifies the object; the name is also the file's stem."""

    name: Name
    description: Annotated[str, Field(max_length=500)] | None = Field(
        default=None, description="What it is for, in a sentence: `reconcile blocks` shows it to users."
    )


class _File(_Model):
    api_version: Literal["workspaces/v1"] = Field(alias="apiVersion")
    kind: str
    metadata: Metadata

    @property
    def name(self) -> str:
        """`metadata.name`."""
        return self.metadata.name


class WorkspaceSpec(_Model):
    """What a workspace is made of: one environment, one compute resource, any data sources."""

    owner: Owner = Field(description="The user it belongs to: their Git host login, lower-case.")
    environment: Name = Field(description="Name of a block in blocks/environments/.")
    compute: Name = Field(description="Name of a block in blocks/compute/.")
    data_sources: list[Name] = Field(
        default=[],
        alias="dataSources",
        description="Names of blocks in blocks/data-sources/; the first holds the working directory.",
    )
    state: Literal["running", "stopped"] = Field(
        default="running", description="stopped: scaled to zero, nothing deleted."
    )
    expires: Date | None = Field(
        default=None,
        description="YYYY-MM-DD: from this day on, `reconcile lifecycle` proposes its teardown (the PVC is kept).",
    )


class Workspace(_File):
    """A user's development workspace (workspaces/<name>.yaml)."""

    kind: Literal["Workspace"]
    spec: WorkspaceSpec


class Credentials(_Model):
    """How to find the login password or token: exactly one of `file` or `logPattern`."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["file"]}, {"required": ["logPattern"]}]})

    file: AbsolutePath | None = Field(default=None, description="A file to read inside the container.")
    log_pattern: LogPattern | None = Field(
        default=None, alias="logPattern", description="Text to grep the server log for."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Credentials:
        if (self.file is None) == (self.log_pattern is None):
            got = "both" if self.file is not None else "neither"
            raise PydanticCustomError(
                "credentials", "set exactly one of 'file' or 'logPattern' (got {got})", {"got": got}
            )
        return self


DEFAULT_HOMES = {"vscode": "/home/coder", "jupyterlab": "/home/jovyan"}
"""The home directory of the user each tool's usual image runs as (UID 1000)."""


class VSCode(_Model):
    """What VS Code starts with."""

    extensions: list[Extension] = Field(
        default=[],
        max_length=100,
        description="Extensions installed before code-server starts: publisher.name from the project's gallery, "
        "or the absolute path of a .vsix file on a data source. Kept on the volume; installed once.",
    )


class EnvironmentSpec(_Model):
    """The image, the tool it serves, its port, and how to get its credentials."""

    image: Image
    tool: Literal["vscode", "jupyterlab"]
    port: Annotated[int, Field(ge=1, le=65535)]
    args: list[str] = Field(
        default=[], description="Container args (they replace the image's CMD); '{workdir}' is substituted."
    )
    env: dict[EnvName, str] = Field(default={}, description="Environment variables, name -> value.")
    credentials: Credentials
    home: AbsolutePath | None = Field(
        default=None,
        description="The image's home directory, kept on the first data source "
        'under workspaces/<owner>/.home/<workspace>. Default: "/home/coder" (vscode), "/home/jovyan" (jupyterlab).',
    )
    vscode: VSCode | None = Field(default=None, description="VS Code settings (tool: vscode only).")

    @field_validator("vscode")
    @classmethod
    def _vscode_only_for_vscode(cls, value: VSCode | None, info: ValidationInfo) -> VSCode | None:
        tool = info.data.get("tool")
        if value is not None and tool not in (None, "vscode"):
            raise PydanticCustomError(
                "vscode_block",
                "'vscode' is set but tool is '{tool}': extensions install into VS Code only; "
                "remove the 'vscode' block or use tool: vscode",
                {"tool": tool},
            )
        return value

    @property
    def home_dir(self) -> str:
        """`home`, defaulting to the home of the user the usual image of `tool` runs as."""
        return (self.home or DEFAULT_HOMES[self.tool]).rstrip("/") or "/"


class Environment(_File):
    """A shared building block: what runs (blocks/environments/<name>.yaml)."""

    kind: Literal["Environment"]
    spec: EnvironmentSpec


class ComputeSpec(_Model):
    """Requests (= limits) for the workspace container."""

    cpu: Quantity
    memory: Quantity
    gpu: Gpu = Field(
        default=0,
        description="Whole GPUs (nvidia.com/gpu), or a fraction of one (0.5; needs scheduler: runai in project.yaml).",
    )
    node_pool: Name | None = Field(
        default=None, alias="nodePool", description="A node pool named in project.yaml's nodePools."
    )
    shm: Quantity | None = Field(
        default=None,
        description="Size of /dev/shm (a memory-backed emptyDir); counts toward the memory quota.",
    )


class ComputeResource(_File):
    """A shared building block: how much it gets (blocks/compute/<name>.yaml)."""

    kind: Literal["ComputeResource"]
    spec: ComputeSpec


class DataSourceSpec(_Model):
    """An existing PersistentVolumeClaim and where it is mounted."""

    pvc: Subdomain = Field(description="An EXISTING claim; never created or deleted by the reconciler.")
    mount_path: MountPath | None = Field(default=None, alias="mountPath", description='Default: "/<metadata.name>".')
    read_only: bool = Field(default=False, alias="readOnly")


class DataSource(_File):
    """A shared building block: persistent storage (blocks/data-sources/<name>.yaml)."""

    kind: Literal["DataSource"]
    spec: DataSourceSpec

    @property
    def mount_path(self) -> str:
        """`spec.mountPath`, defaulting to `/<metadata.name>`."""
        return self.spec.mount_path or f"/{self.metadata.name}"


class Quota(_Model):
    """Upper bounds on the sum of the running workspaces' compute; each is optional."""

    cpu: Quantity | None = None
    memory: Quantity | None = None
    gpu: Annotated[int | float, Field(ge=0)] | None = None


class Toleration(_Model):
    """A pod toleration (core/v1 Toleration)."""

    key: LabelKey | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: LabelValue | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class NodePool(_Model):
    """A set of nodes: the selector that picks them and the tolerations their taints need."""

    node_selector: dict[LabelKey, LabelValue] = Field(default={}, alias="nodeSelector")
    tolerations: list[Toleration] = []


class Ingress(_Model):
    """How the cluster's ingress controller serves the workspace hosts."""

    class_name: Subdomain | None = Field(
        default=None, alias="className", description="The IngressClass (e.g. nginx); default: the cluster's default."
    )
    tls_secret: Subdomain | None = Field(
        default=None,
        alias="tlsSecret",
        description="A TLS Secret in the namespace whose certificate covers *.<domain>; without it the plan warns.",
    )
    annotations: dict[LabelKey, str] = Field(
        default={}, description="Added to every workspace Ingress (they win over the defaults)."
    )


class ExtensionsGallery(_Model):
    """A VS Code extension gallery (code-server's EXTENSIONS_GALLERY); default: Open VSX."""

    service_url: HttpsUrl = Field(alias="serviceUrl", description="e.g. https://open-vsx.org/vscode/gallery")
    item_url: HttpsUrl | None = Field(default=None, alias="itemUrl", description="e.g. https://open-vsx.org/vscode/item")
    resource_url_template: HttpsUrl | None = Field(default=None, alias="resourceUrlTemplate")


class RunaiSpec(_Model):
    """Where the Run:ai backend puts workspaces (credentials come from the environment, never from here)."""

    url: ControlPlaneUrl = Field(
        description="The control plane's base URL, e.g. https://myorg.run.ai."
    )
    cluster: Annotated[str, Field(min_length=1, max_length=253)] = Field(description="The Run:ai cluster's name.")
    project: Annotated[str, Field(min_length=1, max_length=253)] = Field(description="The Run:ai project's name.")


class IdlePolicy(_Model):
    """When `reconcile lifecycle` proposes to stop a running workspace nobody uses."""

    stop_after: Duration = Field(
        alias="stopAfter", description="Idle this long (no activity in the IDE): a pull request stops it."
    )
    warn_after: Duration | None = Field(
        default=None, alias="warnAfter", description="Idle this long: the lifecycle run lists it as about to stop."
    )

    @model_validator(mode="after")
    def _warn_before_stop(self) -> IdlePolicy:
        if self.warn_after is not None and duration_seconds(self.warn_after) >= duration_seconds(self.stop_after):
            raise PydanticCustomError(
                "idle_warn", "warnAfter ({warn}) must be shorter than stopAfter ({stop})",
                {"warn": self.warn_after, "stop": self.stop_after},
            )
        return self


class ExpiryPolicy(_Model):
    """How workspace expiry dates (`spec.expires`) are checked and announced."""

    warn_days: Annotated[int, Field(ge=0, le=3650)] = Field(
        default=7, alias="warnDays", description="The plan comment warns this many days before a workspace expires."
    )
    max_days: Annotated[int, Field(ge=1, le=36500)] | None = Field(
        default=None, alias="maxDays", description="A new or changed expiry date may be at most this many days ahead."
    )


class Prices(_Model):
    """What one running hour costs, per resource: the plan comment shows each workspace's cost."""

    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = Field(default="USD", description="ISO 4217 code.")
    cpu: Price = Field(default=0, description="Per CPU per running hour.")
    memory_gib: Price = Field(default=0, alias="memoryGiB", description="Per GiB of memory per running hour.")
    gpu: Price = Field(default=0, description="Per GPU per running hour.")
    gpu_by_pool: dict[Name, Price] = Field(
        default={}, alias="gpuByPool",
        description="Per GPU per running hour on a node pool of project.yaml's nodePools (else `gpu`).",
    )


class ProjectSpec(_Model):
    """Where workspaces go and the rules they follow."""

    namespace: Label | None = Field(default=None, description="Default: metadata.name.")
    domain: Subdomain = Field(description="Workspace URLs are https://<project>-<workspace>.<domain>.")
    owner_prefix: bool = Field(
        default=True, alias="ownerPrefix", description='Workspace names must start with "<owner>-".'
    )
    hints: Literal["kubectl", "runai"] = Field(default="kubectl", description="The CLI that credential hints use.")
    admins: list[Admin] = Field(
        default=[],
        description="GitHub logins or teams (org/team-slug) allowed to change any file of the repository.",
    )
    quota: Quota | None = None
    backend: Literal["kubernetes", "runai"] = Field(
        default="kubernetes", description="Where workspaces run: Kubernetes objects, or Run:ai workspaces."
    )
    runai: RunaiSpec | None = Field(default=None, description="Required with backend: runai.")

    scheduler: Literal["default", "runai"] = Field(
        default="default", description="runai: pods use runai-scheduler, and compute may ask for GPU fractions."
    )
    node_pools: dict[Name, NodePool] = Field(
        default={}, alias="nodePools", description="Named node pools that compute blocks pick with nodePool."
    )
    ingress: Ingress | None = None
    extensions_gallery: ExtensionsGallery | None = Field(
        default=None, alias="extensionsGallery", description="Where VS Code extensions come from (default: Open VSX)."
    )
    idle: IdlePolicy | None = Field(default=None, description="Off when unset: idle workspaces are never stopped.")
    expiry: ExpiryPolicy = Field(default=ExpiryPolicy(), description="Expiry warnings and the longest expiry.")
    prices: Prices | None = Field(default=None, description="Hourly prices; unset: no cost in the plan.")


class Project(_File):
    """The project (project.yaml)."""

    kind: Literal["Project"]
    spec: ProjectSpec

    @property
    def namespace(self) -> str:
        """`spec.namespace`, defaulting to `metadata.name`."""
        return self.spec.namespace or self.metadata.name


FileKind = Workspace | Environment | ComputeResource | DataSource | Project

KIND_MODELS: dict[str, type[FileKind]] = {
    "Workspace": Workspace,
    "Environment": Environment,
    "ComputeResource": ComputeResource,
    "DataSource": DataSource,
    "Project": Project,
}
"""The model of each kind, by `kind`."""


@dataclass(frozen=True)
class Repo:
    """A validated repository: every file, resolved, and where each came from."""

    root: Path
    project: Project
    environments: dict[str, Environment]
    compute: dict[str, ComputeResource]
    data_sources: dict[str, DataSource]
    workspaces: dict[str, Workspace]
    sources: dict[tuple[str, str], str]
    """(kind, name) -> repo-relative path of its file, e.g. ("Workspace", "jane-doe-vscode")."""
    commit: str | None = None
    """HEAD of the Git checkout holding `root`; None outside a checkout."""

    @property
    def block_count(self) -> int:
        """How many building blocks (environments, compute resources, data sources)."""
        return len(self.environments) + len(self.compute) + len(self.data_sources)


SCHEMA_FILES: dict[str, str] = {
    "Workspace": "workspace.json",
    "Environment": "environment.json",
    "ComputeResource": "compute-resource.json",
    "DataSource": "data-source.json",
    "Project": "project.json",
}
"""The file name of each kind's committed JSON Schema under schemas/."""


class _SchemaGenerator(GenerateJsonSchema):
    """Optional fields are simply optional: `null` is not advertised as a value to write."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        result = super().default_schema(schema)
        if result.get("default", ...) is None:
            del result["default"]
        return result


def json_schema(kind: str, block_names: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one file kind, for editors and CI.

    `block_names` (kind -> names, e.g. {"Environment": [...]}): a Workspace's references then offer
    the existing blocks as `examples`, which editors complete (the loader still decides what exists)."""
    schema = KIND_MODELS[kind].model_json_schema(by_alias=True, schema_generator=_SchemaGenerator)
    if kind == "Workspace" and block_names:
        spec = schema["$defs"]["WorkspaceSpec"]["properties"]
        for field, block_kind in (("environment", "Environment"), ("compute", "ComputeResource")):
            if block_names.get(block_kind):
                spec[field]["examples"] = block_names[block_kind]
        if block_names.get("DataSource"):
            spec["dataSources"]["items"]["examples"] = block_names["DataSource"]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
