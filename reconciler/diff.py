"""The field-level diff of the fields we own: normalisation, the owned view, masking. Pure.

Live objects are plain Kubernetes API JSON dicts (camelCase keys, as a LIST returns them).
Per object, the desired dict is compared with the *owned view* of the live one: every field the
desired object sets, plus every field that our field manager owns according to the live
object's ``managedFields`` (``fieldsV1``). So a field we set last time and no longer want shows
as removed, drift by another manager shows as changed, and server-filled defaults that nobody
asked for are ignored. Quantities compare as numbers (``"1000m" == "1"``).

Diff paths are dotted, with list items named by their merge key:
``spec.template.spec.containers[name=workspace].env[name=TOKEN].value``,
``...ports[containerPort=8080]``, ``...volumeMounts[mountPath=/data]``; lists without a key
(``args``, ``command``, Ingress ``rules``) are compared whole or by index (``rules[0].host``).

Masking lives here because a diff is masked as it is made (a secret never sits in a
``FieldDiff``): an ``env`` (or any name/value) item whose name contains TOKEN, PASSWORD, SECRET
or KEY has its ``value`` shown as ``"***"``; so has ``--flag=value`` in ``args``/``command`` when
the flag's name contains one of those words, and the argument after such a bare ``--flag``. A
masked change is still reported: its ``FieldDiff.masked`` is true (JSON: ``"masked": true``),
and when only such a value changed both sides read ``"***"``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

from reconciler.fields import parse_quantity
from reconciler.render import ANNOTATION_COMMIT, MANAGED_BY

MASK = "***"
_SENSITIVE = re.compile("TOKEN|PASSWORD|SECRET|KEY", re.IGNORECASE)
_SENSITIVE_ARG = re.compile(
    r"^(-{1,2}[^=]*(?:token|password|secret|key)[^=]*=).+$", re.IGNORECASE | re.DOTALL
)
# A bare flag (`--token`) whose value is the next argument.
_SENSITIVE_FLAG = re.compile(r"^-{1,2}[^=]*(?:token|password|secret|key)[^=]*$", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class FieldDiff:
    """One differing field: ``live`` is None when added, ``desired`` is None when removed."""

    path: str
    live: Any
    desired: Any
    masked: bool = False  # a secret-looking value was replaced by "***" on either side


# --------------------------------------------------------------------------------------------
# Normalisation


@lru_cache(maxsize=8192)
def comparable_quantity(value: str | int | float) -> Fraction | None:
    """A quantity as an exact number to compare (``"1000m"`` -> 1, ``"16Gi"`` -> 2**34); None if invalid.

    The parsing is `fields.parse_quantity`'s; this only accepts the ints and floats a live object holds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(str(value))
    try:
        return Fraction(parse_quantity(value.strip()))
    except ValueError:
        return None


def _scalar_equal(desired: Any, live: Any, quantity: bool) -> bool:
    if desired == live:
        return True
    if isinstance(desired, bool) or isinstance(live, bool):
        return False
    if quantity and isinstance(desired, str | int | float) and isinstance(live, str | int | float):
        d, lv = comparable_quantity(desired), comparable_quantity(live)
        return d is not None and d == lv
    # intOrString (targetPort, probe port): the server returns what it was given.
    if isinstance(desired, int) and isinstance(live, str):
        return live == str(desired)
    if isinstance(desired, str) and isinstance(live, int):
        return desired == str(live)
    return False


def _is_empty(value: Any) -> bool:
    # The API server omits empty strings, lists, maps and false booleans (omitempty).
    return value is None or value is False or (isinstance(value, str | list | dict) and not value)


# --------------------------------------------------------------------------------------------
# Masking


def _sensitive_item(item: Mapping[str, Any]) -> bool:
    name = item.get("name")
    return isinstance(name, str) and "value" in item and _SENSITIVE.search(name) is not None


def _mask_arg(arg: Any) -> Any:
    if isinstance(arg, str):
        m = _SENSITIVE_ARG.match(arg)
        if m is not None:
            return m.group(1) + MASK
    return arg


def mask(value: Any, key: str = "") -> Any:
    """``value`` with secret-looking env values and ``--token=x`` / ``--token x`` args replaced by ``"***"``.

    Returns the very same object when there is nothing to mask (no copy).
    """
    if isinstance(value, dict):
        sensitive = _sensitive_item(value)
        new: dict[str, Any] | None = None
        for k, v in value.items():
            if k == "managedFields":
                continue
            m = (MASK if v is not None else v) if sensitive and k == "value" else mask(v, k)
            if m is not v:
                if new is None:
                    new = dict(value)
                new[k] = m
        return value if new is None else new
    if isinstance(value, list):
        args = key in ("args", "command")
        out: list[Any] | None = None
        for i, v in enumerate(value):
            if args:
                after_flag = i > 0 and isinstance(value[i - 1], str) and _SENSITIVE_FLAG.match(value[i - 1])
                m = (MASK if v is not None else v) if after_flag else _mask_arg(v)
            else:
                m = mask(v)
            if m is not v:
                if out is None:
                    out = list(value)
                out[i] = m
        return value if out is None else out
    if key in ("args", "command"):
        return _mask_arg(value)
    return value


# --------------------------------------------------------------------------------------------
# The owned view (managedFields fieldsV1)


@lru_cache(maxsize=8192)
def _parse_key(text: str) -> dict[str, Any]:
    parsed = json.loads(text)
    return parsed if isinstance(parsed, dict) else {}


def _subset(key: Mapping[str, Any], item: Mapping[str, Any]) -> bool:
    return all(k in item and _scalar_equal(v, item[k], False) for k, v in key.items())


def _merge_fields(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge_fields(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def owned_fields(live: Mapping[str, Any], manager: str = MANAGED_BY) -> dict[str, Any] | None:
    """The ``fieldsV1`` set that ``manager`` owns by Apply on ``live``; None when it owns nothing."""
    owned: dict[str, Any] | None = None
    for entry in (live.get("metadata") or {}).get("managedFields") or ():
        if entry.get("manager") != manager or entry.get("operation") != "Apply" or entry.get("subresource"):
            continue
        fields = entry.get("fieldsV1")
        if isinstance(fields, dict):
            owned = fields if owned is None else _merge_fields(owned, fields)
    return owned


def _project(value: Any, owned: Any) -> Any:
    """The part of a live value that the fieldsV1 subtree ``owned`` covers ({} = all of it)."""
    if not isinstance(owned, dict) or not owned:
        return value
    if isinstance(value, dict):
        keys = [k[2:] for k in owned if k.startswith("f:")]
        if not keys:
            return value
        return {k: _project(value[k], owned["f:" + k]) for k in keys if k in value}
    if isinstance(value, list):
        items: list[Any] = []
        for k, sub in owned.items():
            if k.startswith("k:"):
                key = _parse_key(k[2:])
                items.extend(_project(i, sub) for i in value if isinstance(i, dict) and _subset(key, i))
            elif k.startswith("i:") and k[2:].isdigit() and int(k[2:]) < len(value):
                items.append(_project(value[int(k[2:])], sub))
            elif k.startswith("v:"):
                v = json.loads(k[2:])
                items.extend(i for i in value if i == v)
        return items if items else value
    return value


# --------------------------------------------------------------------------------------------
# The comparison


_KEYED_LISTS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
}
_SKIP_TOP = frozenset({"apiVersion", "kind", "status"})


def _list_key(key: str, desired: Sequence[Any], live: Sequence[Any]) -> str | None:
    if key == "ports":
        sample = next((i for i in (*desired, *live) if isinstance(i, dict)), None)
        if sample is None:
            return None
        kf = "containerPort" if "containerPort" in sample else "port" if "port" in sample else None
    else:
        kf = _KEYED_LISTS.get(key)
    if kf is None or not all(isinstance(i, dict) and kf in i for i in desired):
        return None
    return kf


def _added(out: list[FieldDiff], path: str, key: str, desired: Any, secret: bool) -> None:
    if secret:
        out.append(FieldDiff(path, None, MASK, True))
        return
    m = mask(desired, key)
    out.append(FieldDiff(path, None, m, m is not desired))


def _removed(out: list[FieldDiff], path: str, key: str, live: Any, secret: bool) -> None:
    if secret:
        out.append(FieldDiff(path, MASK, None, True))
        return
    m = mask(live, key)
    out.append(FieldDiff(path, m, None, m is not live))


def _changed(out: list[FieldDiff], path: str, key: str, live: Any, desired: Any, secret: bool) -> None:
    if secret:
        out.append(FieldDiff(path, MASK, MASK, True))
        return
    ml, md = mask(live, key), mask(desired, key)
    out.append(FieldDiff(path, ml, md, ml is not live or md is not desired))


def _diff_map(
    desired: Mapping[str, Any],
    live: Mapping[str, Any],
    owned: Mapping[str, Any] | None,
    path: str,
    out: list[FieldDiff],
    quantity: bool,
    secret_item: bool,
) -> None:
    prefix = path + "." if path else ""
    for key, dv in desired.items():
        if dv is None or key == ANNOTATION_COMMIT or (not path and key in _SKIP_TOP):
            continue
        sub = owned.get("f:" + key) if owned else None
        child_quantity = quantity or (
            key in ("limits", "requests") and (path == "resources" or path.endswith(".resources"))
        )
        _diff_value(
            key, dv, live.get(key), sub, prefix + key, out, child_quantity, secret_item and key == "value"
        )
    if owned:
        for okey, sub in owned.items():
            if not okey.startswith("f:"):
                continue
            key = okey[2:]
            if desired.get(key) is not None or key == ANNOTATION_COMMIT or (not path and key in _SKIP_TOP):
                continue
            lv = live.get(key)
            if lv is not None:
                _removed(out, prefix + key, key, _project(lv, sub), secret_item and key == "value")


def _diff_value(
    key: str,
    dv: Any,
    lv: Any,
    owned: Any,
    path: str,
    out: list[FieldDiff],
    quantity: bool,
    secret: bool,
) -> None:
    if dv == lv:
        # Exactly equal (compared in C): nothing differs and nothing owned can be missing below.
        return
    if isinstance(dv, dict):
        if isinstance(lv, dict):
            _diff_map(
                dv, lv, owned if isinstance(owned, dict) else None, path, out, quantity, _sensitive_item(dv)
            )
        elif not (lv is None and not dv):
            _changed(out, path, key, lv, dv, secret) if lv is not None else _added(out, path, key, dv, secret)
    elif isinstance(dv, list):
        if isinstance(lv, list):
            _diff_list(key, dv, lv, owned if isinstance(owned, dict) else None, path, out, quantity)
        elif not (lv is None and not dv):
            _changed(out, path, key, lv, dv, secret) if lv is not None else _added(out, path, key, dv, secret)
    elif lv is None:
        if not _is_empty(dv):
            _added(out, path, key, dv, secret)
    elif not _scalar_equal(dv, lv, quantity):
        _changed(out, path, key, lv, dv, secret)


def _diff_list(
    key: str,
    desired: list[Any],
    live: list[Any],
    owned: Mapping[str, Any] | None,
    path: str,
    out: list[FieldDiff],
    quantity: bool,
) -> None:
    kf = _list_key(key, desired, live)
    if kf is None:
        # Atomic list: by index when it holds objects of the same length, else whole.
        if len(desired) == len(live) and all(
            isinstance(d, dict) and isinstance(v, dict) for d, v in zip(desired, live, strict=True)
        ):
            for i, (d, v) in enumerate(zip(desired, live, strict=True)):
                _diff_map(d, v, None, f"{path}[{i}]", out, quantity, _sensitive_item(d))
        elif len(desired) != len(live) or not all(
            _scalar_equal(d, v, quantity) for d, v in zip(desired, live, strict=True)
        ):
            _changed(out, path, key, live, desired, False)
        return

    live_by_key: dict[Any, dict[str, Any]] = {}
    for item in live:
        if isinstance(item, dict) and kf in item:
            live_by_key.setdefault(item[kf], item)
    owned_items = (
        [(_parse_key(k[2:]), sub) for k, sub in owned.items() if k.startswith("k:")] if owned else []
    )
    used: set[int] = set()
    desired_keys: list[Any] = []
    for item in desired:
        k = item[kf]
        desired_keys.append(k)
        li = live_by_key.get(k)
        if li is None and isinstance(k, int):
            li = live_by_key.get(str(k))
        item_path = f"{path}[{kf}={k}]"
        secret = _sensitive_item(item)
        if li is None:
            _added(out, item_path, key, item, False)
            continue
        sub: Any = None
        for idx, (okey, osub) in enumerate(owned_items):
            if idx not in used and _subset(okey, li):
                sub = osub
                used.add(idx)
                break
        _diff_map(item, li, sub if isinstance(sub, dict) else None, item_path, out, quantity, secret)
    if len(used) == len(owned_items):
        return
    for idx, (okey, osub) in enumerate(owned_items):
        if idx in used:
            continue
        for li in live:
            if (
                isinstance(li, dict)
                and _subset(okey, li)
                and not any(_scalar_equal(dk, li.get(kf), False) for dk in desired_keys)
            ):
                _removed(out, f"{path}[{kf}={li.get(kf)}]", key, _project(li, osub), False)
                break


def diff_object(
    desired: Mapping[str, Any], live: Mapping[str, Any], owned: Mapping[str, Any] | None
) -> list[FieldDiff]:
    """Where ``live`` differs from ``desired`` on the desired fields plus the ``owned`` fieldsV1 set."""
    out: list[FieldDiff] = []
    _diff_map(desired, live, owned, "", out, False, False)
    return out
