"""The validated scalar field types of the file kinds: names, paths, quantities, durations, URLs, label keys
and values, extension IDs, GPUs. Each holds its pattern, its message (a `PydanticCustomError` that names the value
and what to write instead) and its JSON Schema; `parse_quantity` / `format_quantity` read and write quantities."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any

from pydantic import Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from reconciler.errors import quote

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


def _matching(
    code: str, regex: re.Pattern[str], max_length: int, message: str, also: Callable[[str], bool] | None = None
) -> Callable[[object], str]:
    """A validator of strings that fully match ``regex``, are at most ``max_length`` long and pass
    ``also``; otherwise the error ``code`` with ``message``, whose ``{value}`` is the value quoted."""

    def check(value: object) -> str:
        text = _string(value)
        if len(text) > max_length or not regex.fullmatch(text) or (also is not None and not also(text)):
            raise PydanticCustomError(code, message, {"value": quote(text)})
        return text

    return check


_dns1035_label = _matching(
    "dns1035_label", _DNS1035_RE, 63,
    "{value} is not a valid name: use a DNS-1035 label (lower-case letters, digits and '-', "
    "starting with a letter, not ending with '-', at most 63 characters)",
)


_dns1123_label = _matching(
    "dns1123_label", _DNS1123_RE, 63,
    "{value} is not a valid DNS-1123 label (lower-case letters, digits and '-', "
    "starting and ending with a letter or digit, at most 63 characters)",
)


_dns1123_subdomain = _matching(
    "dns1123_subdomain", _SUBDOMAIN_RE, 253,
    "{value} is not a valid DNS-1123 name (lower-case letters, digits, '-' and '.', "
    "labels of at most 63 characters, at most 253 in all)",
    also=lambda text: all(len(part) <= 63 for part in text.split(".")),
)


_admin = _matching(
    "admin", _ADMIN_RE, 140,
    "{value} is not a GitHub login or team: use a login, or org/team-slug (lower-case slug)",
    also=lambda text: len(text.split("/")[0]) <= 39,
)


_owner = _matching(
    "owner", _DNS1123_RE, 39,
    "{value} is not a valid owner: use the lower-case login (letters, digits and '-', at most 39)",
)


_absolute_path = _matching(
    "absolute_path", _ABSOLUTE_PATH_RE, 1024,
    "{value} is not a plain absolute path (starts with '/', no '..', spaces or shell characters)",
    also=lambda text: "/../" not in f"{text}/",
)


def _mount_path(value: object) -> str:
    text = _absolute_path(value)
    if text.rstrip("/") == "":
        raise PydanticCustomError("mount_path", "cannot mount over '/'")
    return text


_log_pattern = _matching(
    "log_pattern", _LOG_PATTERN_RE, 256,
    "{value} is not a usable log pattern (non-empty, no quotes, backslashes, '$' or backticks)",
)


_env_name = _matching(
    "env_name", _ENV_NAME_RE, 256,
    "{value} is not a valid environment variable name (letters, digits and '_', not starting with a digit)",
)


_image = _matching("image", _IMAGE_RE, 1024, "{value} is not a valid image reference")


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


_https_url = _matching("https_url", _HTTPS_URL_RE, 2048, "{value} is not an https:// URL (no spaces or quotes)")


_label_key = _matching(
    "label_key", _LABEL_KEY_RE, 317,  # a prefix of at most 253, '/', a name of at most 63
    "{value} is not a valid label key (an optional DNS prefix and '/', then at most 63 letters, "
    "digits, '-', '_' or '.')",
    also=lambda text: len(text.rpartition("/")[2]) <= 63 and len(text.rpartition("/")[0]) <= 253,
)


_label_value = _matching(
    "label_value", _LABEL_VALUE_RE, 63,
    "{value} is not a valid label value (at most 63 letters, digits, '-', '_' or '.', "
    "starting and ending with a letter or digit)",
)


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


CONTROL_PLANE_URL = r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$"
"""A control plane's base URL: https, a host, an optional port, no path."""
_CONTROL_PLANE_URL_RE = re.compile(CONTROL_PLANE_URL)


_control_plane_url = _matching(
    "https_url", _CONTROL_PLANE_URL_RE, 2048,
    "{value} is not a control plane URL: use https://<host>[:port], without a path",
)


ControlPlaneUrl = Annotated[str, PlainValidator(_control_plane_url), _schema(CONTROL_PLANE_URL, 2048)]



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

