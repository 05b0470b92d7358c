"""The file kinds (pydantic v2, strict, no extra fields at any depth) and the resolved `Repo`."""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from reconciler.errors import quote

API_VERSION = "workspaces/v1"

DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
ADMIN = r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(/[a-z0-9][a-z0-9_-]*)?$"
"""A GitHub login, or a team as `org/team-slug`."""
# The Kubernetes quantity grammar (k8s.io/apimachinery/pkg/api/resource), without a sign:
# resource requests are never negative.
QUANTITY = (
    r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)"
    r"(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)
# An absolute path without whitespace or shell metacharacters: it is pasted into a hint.
ABSOLUTE_PATH = r"^/[^\s\"'`$\\;&|<>(){}*?!#]*$"
LOG_PATTERN = r"^[^\"`$\\\n\r]+$"

MAX_QUANTITY = Decimal(2**63 - 1)
"""Kubernetes stores quantities in an int64."""
MAX_GPUS = 1024

_DNS1035_RE = re.compile(DNS1035_LABEL)
_DNS1123_RE = re.compile(DNS1123_LABEL)
_SUBDOMAIN_RE = re.compile(DNS1123_SUBDOMAIN)
_QUANTITY_RE = re.compile(QUANTITY)
_ABSOLUTE_PATH_RE = re.compile(ABSOLUTE_PATH)
_ADMIN_RE = re.compile(ADMIN)
_LOG_PATTERN_RE = re.compile(LOG_PATTERN)
_IMAGE_RE = re.compile(r"^[^\s]+$")
_ENV_NAME_RE = re.compile(ENV_NAME)



def _string(value: object) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", "Input should be a valid string")
    return value


def _dns1035_label(value: object) -> str:
    text = _string(value)
    if len(text) > 63 or not _DNS1035_RE.fullmatch(text):
        raise PydanticCustomError(
            "dns1035_label",
            "{value} is not a valid name: use a DNS-1035 label (lower-case letters, digits and '-', "
            "starting with a letter, not ending with '-', at most 63 characters)",
            {"value": quote(text)},
        )
    return text


def _dns1123_label(value: object) -> str:
    text = _string(value)
    if len(text) > 63 or not _DNS1123_RE.fullmatch(text):
        raise PydanticCustomError(
            "dns1123_label",
            "{value} is not a valid DNS-1123 label (lower-case letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters)",
            {"value": quote(text)},
        )
    return text


def _dns1123_subdomain(value: object) -> str:
    text = _string(value)
    if len(text) > 253 or not _SUBDOMAIN_RE.fullmatch(text) or any(len(p) > 63 for p in text.split(".")):
        raise PydanticCustomError(
            "dns1123_subdomain",
            "{value} is not a valid DNS-1123 name (lower-case letters, digits, '-' and '.', "
            "labels of at most 63 characters, at most 253 in all)",
            {"value": quote(text)},
        )
    return text


def _admin(value: object) -> str:
    text = _string(value)
    if len(text) > 140 or not _ADMIN_RE.fullmatch(text) or len(text.split("/")[0]) > 39:
        raise PydanticCustomError(
            "admin",
            "{value} is not a GitHub login or team: use a login, or org/team-slug (lower-case slug)",
            {"value": quote(text)},
        )
    return text


def _owner(value: object) -> str:
    text = _string(value)
    if len(text) > 39 or not _DNS1123_RE.fullmatch(text):
        raise PydanticCustomError(
            "owner",
            "{value} is not a valid owner: use the lower-case login (letters, digits and '-', at most 39)",
            {"value": quote(text)},
        )
    return text


def _absolute_path(value: object) -> str:
    text = _string(value)
    if not _ABSOLUTE_PATH_RE.fullmatch(text) or "/../" in f"{text}/" or len(text) > 1024:
        raise PydanticCustomError(
            "absolute_path",
            "{value} is not a plain absolute path (starts with '/', no '..', spaces or shell characters)",
            {"value": quote(text)},
        )
    return text


def _mount_path(value: object) -> str:
    text = _absolute_path(value)
    if text.rstrip("/") == "":
        raise PydanticCustomError("mount_path", "cannot mount over '/'")
    return text


def _log_pattern(value: object) -> str:
    text = _string(value)
    if len(text) > 256 or not _LOG_PATTERN_RE.fullmatch(text):
        raise PydanticCustomError(
            "log_pattern",
            "{value} is not a usable log pattern (non-empty, no quotes, backslashes, '$' or backticks)",
            {"value": quote(text)},
        )
    return text


def _env_name(value: object) -> str:
    text = _string(value)
    if len(text) > 256 or not _ENV_NAME_RE.fullmatch(text):
        raise PydanticCustomError(
            "env_name",
            "{value} is not a valid environment variable name (letters, digits and '_', not starting with a digit)",
            {"value": quote(text)},
        )
    return text


def _image(value: object) -> str:
    text = _string(value)
    if len(text) > 1024 or not _IMAGE_RE.fullmatch(text):
        raise PydanticCustomError("image", "{value} is not a valid image reference", {"value": quote(text)})
    return text


def _quantity(value: object) -> str:
    """A Kubernetes quantity as text; YAML numbers (`cpu: 4`, `cpu: 0.5`) are accepted as written."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PydanticCustomError(
            "quantity_type", 'Input should be a Kubernetes quantity such as "4", "500m" or "16Gi"'
        )
    text = value if isinstance(value, str) else (repr(value) if math.isfinite(value) else "")
    if text.startswith("-") and _QUANTITY_RE.fullmatch(text[1:]):
        raise PydanticCustomError("quantity_negative", "{value} must not be negative", {"value": quote(text)})
    if not _QUANTITY_RE.fullmatch(text):
        raise PydanticCustomError(
            "quantity",
            '{value} is not a valid Kubernetes quantity (e.g. "4", "500m", "16Gi", "512Mi")',
            {"value": quote(str(value))},
        )
    try:
        too_large = parse_quantity(text) > MAX_QUANTITY
    except ValueError:
        too_large = True
    if too_large:
        raise PydanticCustomError("quantity_too_large", "{value} is too large", {"value": quote(text)})
    return text


DURATION = r"^[1-9][0-9]{0,5}(s|m|h|d)$"
_DURATION_RE = re.compile(DURATION)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: object) -> str:
    text = _string(value)
    if not _DURATION_RE.fullmatch(text):
        raise PydanticCustomError(
            "duration", "{value} is not a duration: a whole number and a unit, e.g. \"8h\", \"30m\", \"2d\"",
            {"value": quote(text)},
        )
    return text


EXTENSION_ID = r"^[A-Za-z0-9][A-Za-z0-9-]*\.[A-Za-z0-9][A-Za-z0-9-]*$"
"""A VS Code extension ID: `publisher.name`."""
VSIX_PATH = r"^/[^\s\"'`$\\;&|<>(){}*?!#]*\.vsix$"
HTTPS_URL = r"^https://[^\s\"'`$\\<>{}|^]+$"
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
"""A Kubernetes label or annotation key: an optional DNS prefix and '/', then a name of at most 63."""
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_EXTENSION_ID_RE = re.compile(EXTENSION_ID)
_VSIX_PATH_RE = re.compile(VSIX_PATH)
_HTTPS_URL_RE = re.compile(HTTPS_URL)
_LABEL_KEY_RE = re.compile(LABEL_KEY)
_LABEL_VALUE_RE = re.compile(LABEL_VALUE)


def _extension(value: object) -> str:
    text = _string(value)
    if text.startswith("/"):
        if len(text) > 1024 or not _VSIX_PATH_RE.fullmatch(text) or "/../" in text:
            raise PydanticCustomError(
                "vsix_path",
                "{value} is not a plain absolute path to a .vsix file (no '..', spaces or shell characters)",
                {"value": quote(text)},
            )
        return text
    if len(text) > 256 or not _EXTENSION_ID_RE.fullmatch(text):
        raise PydanticCustomError(
            "extension_id",
            "{value} is not an extension ID: use publisher.name (e.g. ms-python.python), "
            "or the absolute path of a .vsix file on a data source",
            {"value": quote(text)},
        )
    return text


def duration_seconds(text: str) -> int:
    """The length of a (validated) duration: `"8h"` -> 28800."""
    return int(text[:-1]) * _DURATION_UNITS[text[-1]]


def _date(value: object) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    text = _string(value)
    try:
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
            raise ValueError(text)
        return dt.date.fromisoformat(text)
    except ValueError:
        raise PydanticCustomError(
            "date", "{value} is not a date: write it as YYYY-MM-DD, e.g. 2027-03-31", {"value": quote(text)}
        ) from None


def _https_url(value: object) -> str:
    text = _string(value)
    if len(text) > 2048 or not _HTTPS_URL_RE.fullmatch(text):
        raise PydanticCustomError(
            "https_url", "{value} is not an https:// URL (no spaces or quotes)", {"value": quote(text)}
        )
    return text


def _label_key(value: object) -> str:
    text = _string(value)
    prefix, _, name = text.rpartition("/")
    if not _LABEL_KEY_RE.fullmatch(text) or len(name) > 63 or len(prefix) > 253:
        raise PydanticCustomError(
            "label_key",
            "{value} is not a valid label key (an optional DNS prefix and '/', then at most 63 letters, "
            "digits, '-', '_' or '.')",
            {"value": quote(text)},
        )
    return text


def _label_value(value: object) -> str:
    text = _string(value)
    if len(text) > 63 or not _LABEL_VALUE_RE.fullmatch(text):
        raise PydanticCustomError(
            "label_value",
            "{value} is not a valid label value (at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit)",
            {"value": quote(text)},
        )
    return text


def _gpu(value: object) -> int | float:
    """Whole GPUs (0, 1, 2, ...) or a fraction of one GPU (0 < gpu < 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("gpu_type", "Input should be a number of GPUs such as 1, 2 or 0.5")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        if not 0 <= value <= MAX_GPUS:
            raise PydanticCustomError(
                "gpu_range", "{value} GPUs: use 0 to {limit}", {"value": value, "limit": MAX_GPUS}
            )
        return value
    if not (math.isfinite(value) and 0 < value < 1) or round(value, 2) != value:
        raise PydanticCustomError(
            "gpu_fraction",
            "{value} is neither a whole number of GPUs nor a fraction of one GPU between 0 and 1 "
            "(at most two decimals, e.g. 0.5 or 0.25)",
            {"value": quote(value)},
        )
    return value


def _schema(pattern: str, max_length: int | None = None, **extra: Any) -> WithJsonSchema:
    schema: dict[str, Any] = {"type": "string", "pattern": pattern, **extra}
    if max_length is not None:
        schema["maxLength"] = max_length
    return WithJsonSchema(schema)


Name = Annotated[str, PlainValidator(_dns1035_label), _schema(DNS1035_LABEL, 63)]
"""A DNS-1035 label: what a Service name must be."""
Label = Annotated[str, PlainValidator(_dns1123_label), _schema(DNS1123_LABEL, 63)]
Subdomain = Annotated[str, PlainValidator(_dns1123_subdomain), _schema(DNS1123_SUBDOMAIN, 253)]
Admin = Annotated[str, PlainValidator(_admin), _schema(ADMIN, 140)]
Owner = Annotated[str, PlainValidator(_owner), _schema(DNS1123_LABEL, 39)]
AbsolutePath = Annotated[str, PlainValidator(_absolute_path), _schema(ABSOLUTE_PATH, 1024)]
MountPath = Annotated[str, PlainValidator(_mount_path), _schema(ABSOLUTE_PATH, 1024)]
LogPattern = Annotated[str, PlainValidator(_log_pattern), _schema(LOG_PATTERN, 256)]
Image = Annotated[str, PlainValidator(_image), _schema(r"^[^\s]+$", 1024)]
EnvName = Annotated[str, PlainValidator(_env_name), _schema(ENV_NAME, 256)]
Quantity = Annotated[
    str,
    PlainValidator(_quantity),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": QUANTITY}, {"type": "number", "minimum": 0}]}),
]
"""A non-negative Kubernetes quantity ("4", "500m", "16Gi"), kept as the text written."""
Duration = Annotated[str, PlainValidator(_duration), _schema(DURATION, 8)]
"""A whole number of seconds, minutes, hours or days: "90s", "30m", "8h", "2d"."""
Date = Annotated[dt.date, PlainValidator(_date), WithJsonSchema({"type": "string", "format": "date"})]
"""A calendar date, YYYY-MM-DD."""
Price = Annotated[float, Field(ge=0, le=1_000_000, allow_inf_nan=False)]
Extension = Annotated[
    str,
    PlainValidator(_extension),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": EXTENSION_ID}, {"type": "string", "pattern": VSIX_PATH}]}),
]
"""A VS Code extension: `publisher.name`, or the absolute path of a .vsix file on a data source."""
HttpsUrl = Annotated[str, PlainValidator(_https_url), _schema(HTTPS_URL, 2048)]
LabelKey = Annotated[str, PlainValidator(_label_key), _schema(LABEL_KEY, 317)]
LabelValue = Annotated[str, PlainValidator(_label_value), _schema(LABEL_VALUE, 63)]
Gpu = Annotated[
    int | float,
    PlainValidator(_gpu),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_GPUS},
                              {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}]}),
]
"""Whole GPUs, or a fraction of one GPU (a fraction needs `scheduler: runai` in project.yaml)."""


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


CONTROL_PLANE_URL = r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$"
"""A control plane's base URL: https, a host, an optional port, no path."""
_CONTROL_PLANE_URL_RE = re.compile(CONTROL_PLANE_URL)


def _control_plane_url(value: object) -> str:
    text = _string(value)
    if len(text) > 2048 or not _CONTROL_PLANE_URL_RE.fullmatch(text):
        raise PydanticCustomError(
            "https_url",
            "{value} is not a control plane URL: use https://<host>[:port], without a path",
            {"value": quote(text)},
        )
    return text


ControlPlaneUrl = Annotated[str, PlainValidator(_control_plane_url), _schema(CONTROL_PLANE_URL, 2048)]


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


_SUFFIXES: dict[str, Decimal] = {
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("0.001"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}
_SPLIT_RE = re.compile(r"^\+?([0-9.]+)(.*)$")


def parse_quantity(quantity: str) -> Decimal:
    """The value of a (validated) Kubernetes quantity: `"500m"` -> 0.5, `"1Ki"` -> 1024."""
    match = _SPLIT_RE.match(quantity)
    if not match:
        raise ValueError(f"not a quantity: {quantity!r}")
    number, suffix = match.groups()
    try:
        if suffix[:1] in ("e", "E"):
            exponent = int(suffix[1:])
            if exponent > 100:  # far beyond int64; Decimal would overflow on absurd exponents
                raise ValueError(f"quantity out of range: {quantity!r}")
            return Decimal(number).scaleb(exponent)
        return Decimal(number) * _SUFFIXES[suffix]
    except (ArithmeticError, KeyError, ValueError):
        raise ValueError(f"not a quantity: {quantity!r}") from None


def format_quantity(value: Decimal, *, binary: bool) -> str:
    """A compact quantity for messages: `Decimal(68)` -> "68", 0.5 -> "500m", 2**34 -> "16Gi"."""
    if binary:
        for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
            unit = _SUFFIXES[suffix]
            if value >= unit and value % unit == 0:
                return f"{value / unit:f}".rstrip("0").rstrip(".") + suffix
    if value == value.to_integral_value():
        return f"{value:f}".split(".")[0]
    milli = value * 1000
    if milli == milli.to_integral_value():
        return f"{milli:f}".split(".")[0] + "m"
    return f"{value:f}"


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
