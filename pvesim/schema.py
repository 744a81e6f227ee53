"""PVE API schema: route lookup and parameter validation with PVE's own error texts.

The packaged schema (``data/pve-api-schema.json.gz``, PVE 8.4) is loaded once; validators are
compiled per (method, path) on first use and cached. Error messages follow pve-common
``PVE/JSONSchema.pm`` (``check_prop``/``check_type``/``parse_property_string``).
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_RESOURCE = "pve-api-schema.json.gz"

_INT_RE = re.compile(r"^[+-]?\d+$")
_NUM_RE = re.compile(r"^[+-]?(?:\d+\.\d*|\d*\.\d+|\d+)(?:[eE][+-]?\d+)?$")


class ParamError(Exception):
    """400 'Parameter verification failed.' with a per-parameter errors dict."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("Parameter verification failed.")
        self.errors = errors


@cache
def load_schema() -> list[dict[str, Any]]:
    """Return the raw schema tree (top-level list of nodes)."""
    raw = resources.files("pvesim.data").joinpath(SCHEMA_RESOURCE).read_bytes()
    return json.loads(gzip.decompress(raw))


@cache
def schema_index() -> dict[str, dict[str, Any]]:
    """Map schema path template -> ``info`` dict (method -> method schema)."""
    out: dict[str, dict[str, Any]] = {}

    def walk(nodes: list[dict[str, Any]]) -> None:
        for n in nodes:
            out[n["path"]] = n.get("info", {})
            walk(n.get("children", []))

    walk(load_schema())
    return out


def template_regex(template: str) -> re.Pattern[str]:
    """Compile ``/nodes/{node}/qemu`` into a regex with named groups."""
    parts = []
    segs = template.strip("/").split("/")
    for i, seg in enumerate(segs):
        m = re.fullmatch(r"\{([\w-]+)\}", seg)
        # a trailing {volume} takes the rest: volids hold '/' ('backup:backup/vzdump-…')
        value = "[^/]+"
        if m and m.group(1) == "volume" and i == len(segs) - 1:
            value = ".+"
        elif m and m.group(1) == "upid":  # an imgdel task's id is a volid, '/' included
            value = ".+?"
        parts.append(f"(?P<{m.group(1).replace('-', '_')}>{value})" if m else re.escape(seg))
    return re.compile("^/" + "/".join(parts) + "$")


# --- string formats ------------------------------------------------------------------------

_NODE_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$")
_DNS_RE = re.compile(r"^(([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)\.)*"
                     r"([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$")
_CONFIGID_RE = re.compile(r"^[a-z][a-z0-9_-]+$", re.I)
_ID_RE = re.compile(r"^[a-z][a-z0-9\-_.]*[a-z0-9]$", re.I)
_MAC_RE = re.compile(r"^[a-f0-9]{2}(?::[a-f0-9]{2}){5}$", re.I)
_VOLID_RE = re.compile(r"^([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)$", re.I)


def _fmt_vmid(v: str) -> None:
    if not re.fullmatch(r"[1-9][0-9]{2,8}", v):
        raise ValueError("value does not look like a valid VM ID")


def _fmt_node(v: str) -> None:
    if not _NODE_RE.match(v):
        raise ValueError("value does not look like a valid node name")


def _fmt_storage(v: str) -> None:
    if len(v) < 2:
        raise ValueError(f"storage ID '{v}' cannot be shorter than 2 characters")
    if not _ID_RE.match(v):
        raise ValueError(f"storage ID '{v}' contains illegal characters")


def _fmt_configid(v: str) -> None:
    if not _CONFIGID_RE.match(v):
        raise ValueError(f"invalid configuration ID '{v}'")


def _fmt_dns(v: str) -> None:
    if not _DNS_RE.match(v):
        raise ValueError("value does not look like a valid DNS name")


def _fmt_mac(v: str) -> None:
    if not _MAC_RE.match(v) or int(v[:2], 16) & 1:
        raise ValueError(f"value '{v}' does not look like a valid unicast MAC address")


def _fmt_volid(v: str) -> None:
    if not _VOLID_RE.match(v):
        raise ValueError(f"unable to parse volume ID '{v}'")


def _fmt_volid_or_path(v: str) -> None:
    if v in ("none", "cdrom") or v.startswith("/") or re.fullmatch(r"[a-z][\w.-]*:\d+(\.\d+)?", v):
        return
    _fmt_volid(v)


_URLENCODED_RE = re.compile(r"^[-%a-zA-Z0-9_.!~*'()]*$")


def _fmt_urlencoded(v: str) -> None:
    """pve-common's pve_verify_urlencoded (a raw space, '+', '/', '=' or newline is refused)."""
    if not _URLENCODED_RE.match(v):
        raise ValueError(f"invalid urlencoded string: {v}")


# qemu-server's built-in CPU models (PVE/QemuServer/CPUConfig.pm); the simulated cluster
# defines no custom ones (cpu-models.conf)
CPU_MODELS = frozenset({
    "486", "athlon", "phenom", "core2duo", "coreduo", "kvm32", "kvm64", "qemu32", "qemu64",
    "pentium", "pentium2", "pentium3", "Conroe", "Penryn", "Nehalem", "Nehalem-IBRS",
    "Westmere", "Westmere-IBRS", "SandyBridge", "SandyBridge-IBRS", "IvyBridge",
    "IvyBridge-IBRS", "Haswell", "Haswell-IBRS", "Haswell-noTSX", "Haswell-noTSX-IBRS",
    "Broadwell", "Broadwell-IBRS", "Broadwell-noTSX", "Broadwell-noTSX-IBRS", "Skylake-Client",
    "Skylake-Client-IBRS", "Skylake-Client-noTSX-IBRS", "Skylake-Server", "Skylake-Server-IBRS",
    "Skylake-Server-noTSX-IBRS", "Cascadelake-Server", "Cascadelake-Server-noTSX",
    "Cooperlake", "Icelake-Server", "Icelake-Server-noTSX", "SapphireRapids", "GraniteRapids",
    "KnightsMill", "Opteron_G1", "Opteron_G2", "Opteron_G3", "Opteron_G4", "Opteron_G5",
    "EPYC", "EPYC-IBPB", "EPYC-Rome", "EPYC-Milan", "EPYC-Genoa", "max", "host",
    "x86-64-v2", "x86-64-v2-AES", "x86-64-v3", "x86-64-v4"})


def _fmt_cpu_conf(v: str) -> None:
    """``pve-vm-cpu-conf``: ``[cputype=]<model>[,flags=…]``, the model built in or custom."""
    props: dict[str, str] = {}
    for part in (p for p in v.split(",") if p):
        key, sep, value = part.partition("=")
        props[key if sep else "cputype"] = value if sep else key
    unknown = set(props) - {"cputype", "flags", "hidden", "hv-vendor-id", "phys-bits",
                            "reported-model"}
    if unknown:
        raise ValueError(f"invalid key in comma-separated list property: {sorted(unknown)[0]}")
    model = props.get("cputype", "kvm64")
    if model.startswith("custom-"):
        raise ValueError(f"CPU model '{model[7:]}' not found")
    if model not in CPU_MODELS:
        raise ValueError(f"Built-in cputype '{model}' is not defined (missing 'custom-' "
                         "prefix?)")


STRING_FORMATS: dict[str, Callable[[str], None]] = {
    "pve-vm-cpu-conf": _fmt_cpu_conf,
    "urlencoded": _fmt_urlencoded,
    "pve-vmid": _fmt_vmid,
    "pve-node": _fmt_node,
    "pve-storage-id": _fmt_storage,
    "pve-configid": _fmt_configid,
    "dns-name": _fmt_dns,
    "mac-addr": _fmt_mac,
    "pve-volume-id": _fmt_volid,
    "pve-volume-id-or-qm-path": _fmt_volid_or_path,
}


def _split_list(v: str) -> list[str]:
    return [x for x in re.split(r"[;,\s\0]+", v) if x]


# --- property checks -----------------------------------------------------------------------

def _perl_regex(p: str) -> re.Pattern[str] | None:
    try:
        return re.compile("^(?:" + p.replace("(?^:", "(?:") + ")$")
    except re.error:
        return None


def _num_str(x: Any) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


def compile_prop(schema: dict[str, Any]) -> Callable[[str, Any, dict[str, str]], None]:
    """Build a checker ``(path, value, errors)`` for one property schema."""
    typ = schema.get("type")
    fmt = schema.get("format")
    pattern = _perl_regex(schema["pattern"]) if "pattern" in schema else None
    maxlen, minlen = schema.get("maxLength"), schema.get("minLength")
    mx, mn = schema.get("maximum"), schema.get("minimum")
    enum = schema.get("enum")
    fmt_check: Callable[[str], None] | None = None
    if isinstance(fmt, dict):
        pstr = compile_property_string(fmt)

        def fmt_check(v: str, _p: Any = pstr) -> None:
            _p(v)
    elif isinstance(fmt, str):
        name, _, kind = fmt.rpartition("-") if fmt.endswith(("-list", "-opt")) else (fmt, "", "")
        base = STRING_FORMATS.get(name)
        if base is not None:
            if kind == "list":
                def fmt_check(v: str, _b: Callable[[str], None] = base) -> None:
                    for x in _split_list(v):
                        _b(x)
            elif kind == "opt":
                def fmt_check(v: str, _b: Callable[[str], None] = base) -> None:
                    if v:
                        _b(v)
            else:
                fmt_check = base

    def check(path: str, value: Any, errors: dict[str, str]) -> None:
        if isinstance(value, bool):
            value = "1" if value else "0"
        elif isinstance(value, (int, float)):
            value = _num_str(value)
        elif isinstance(value, (list, dict)):
            if typ not in ("array", "object"):
                errors[path] = f"type check ('{typ}') failed - got {type(value).__name__.upper()}"
            return
        if typ == "boolean" and value not in ("0", "1"):
            errors[path] = f"type check ('boolean') failed - got '{value}'"
            return
        if typ == "integer" and not _INT_RE.match(value):
            errors[path] = f"type check ('integer') failed - got '{value}'"
            return
        if typ == "number" and not _NUM_RE.match(value):
            errors[path] = f"type check ('number') failed - got '{value}'"
            return
        if fmt_check is not None:
            try:
                fmt_check(value)
            except PropertyStringError as e:
                errors[path] = "invalid format - " + e.render(path)
                return
            except ValueError as e:
                errors[path] = f"invalid format - {e}\n"
                return
        if pattern is not None and not pattern.match(value):
            errors[path] = "value does not match the regex pattern"
            return
        if maxlen is not None and len(value) > maxlen:
            errors[path] = f"value may only be {maxlen} characters long"
            return
        if minlen is not None and len(value) < minlen:
            errors[path] = f"value must be at least {minlen} characters long"
            return
        if (mx is not None or mn is not None) and _NUM_RE.match(value):
            num = float(value)
            if mx is not None and num > mx:
                errors[path] = f"value must have a maximum value of {_num_str(mx)}"
                return
            if mn is not None and num < mn:
                errors[path] = f"value must have a minimum value of {_num_str(mn)}"
                return
        if enum is not None and value not in enum:
            errors[path] = (f"value '{value}' does not have a value in the enumeration "
                            f"'{', '.join(enum)}'")

    return check


class PropertyStringError(ValueError):
    """Error inside a property string; renders like PVE's ``invalid format - ...``."""

    def __init__(self, msg: str, errors: dict[str, str] | None = None):
        super().__init__(msg)
        self.msg, self.errors = msg, errors or {}

    def render(self, path: str) -> str:
        text = self.msg + "\n"
        for k, v in self.errors.items():
            text += f"{path}.{k}: {v}\n"
        return text


def parse_property_string(fmt: dict[str, Any], data: str) -> dict[str, str]:
    """Parse ``key=value,...`` like PVE (aliases, default key); raise PropertyStringError."""
    res: dict[str, str] = {}
    default_key = next((k for k, s in fmt.items() if s.get("default_key")), None)
    seen_default = False
    for part in data.split(","):
        if not part.strip():
            continue
        if "=" in part and not part.startswith("="):
            k, v = part.split("=", 1)
            if k in res:
                raise PropertyStringError(f"duplicate key in comma-separated list property: {k}")
            s = fmt.get(k)
            if s and s.get("alias"):
                if s.get("keyAlias"):
                    res[s["keyAlias"]] = k
                k = s["alias"]
                s = fmt.get(k)
                if k in res:
                    raise PropertyStringError(f"key '{k}' is already defined (via alias)")
            if not s:
                raise PropertyStringError(f"invalid key in comma-separated list property: {k}")
            res[k] = v
        elif "=" not in part:
            if default_key is None:
                raise PropertyStringError(
                    "value without key, but schema does not define a default key")
            if seen_default or default_key in res:
                raise PropertyStringError(
                    f"duplicate key in comma-separated list property: {default_key}")
            seen_default = True
            res[default_key] = part
        else:
            raise PropertyStringError("missing key in comma-separated list property")
    return res


def compile_property_string(fmt: dict[str, Any]) -> Callable[[str], dict[str, str]]:
    """Checker for a property-string format: unknown keys, required keys, sub-key types."""
    checks = {k: compile_prop(s) for k, s in fmt.items() if not s.get("alias")}
    required = [k for k, s in fmt.items()
                if not s.get("alias") and not s.get("optional") and "keyAlias" not in s]

    def check(value: str) -> dict[str, str]:
        res = parse_property_string(fmt, value)
        errors: dict[str, str] = {}
        for k in required:
            if k not in res:
                errors[k] = "property is missing and it is not optional"
        for k, v in res.items():
            if k in checks:
                checks[k](k, v, errors)
        if errors:
            raise PropertyStringError("format error", errors)
        return res

    return check


class EndpointValidator:
    """Validates the merged path/query/body parameters of one API method."""

    def __init__(self, method_schema: dict[str, Any]):
        params = method_schema.get("parameters", {}) or {}
        props: dict[str, Any] = params.get("properties", {}) or {}
        self.additional = bool(params.get("additionalProperties", 0))
        self.checks: dict[str, Callable[[str, Any, dict[str, str]], None]] = {}
        self.patterns: list[tuple[re.Pattern[str], Callable[..., None]]] = []
        self.required: list[str] = []
        for name, s in props.items():
            check = compile_prop(s)
            if name.endswith("[n]"):
                self.patterns.append((re.compile(re.escape(name[:-3]) + r"\d+$"), check))
            else:
                self.checks[name] = check
                if not s.get("optional"):
                    self.required.append(name)

    def validate(self, params: dict[str, Any]) -> None:
        errors: dict[str, str] = {}
        for name in self.required:
            if params.get(name) is None:
                errors[name] = "property is missing and it is not optional"
        for name, value in params.items():
            check = self.checks.get(name)
            if check is None:
                for rx, c in self.patterns:
                    if rx.match(name):
                        check = c
                        break
            if check is None:
                if not self.additional:
                    errors[name] = ("property is not defined in schema and the schema does "
                                    "not allow additional properties")
                continue
            if value is not None:
                check(name, value, errors)
        if errors:
            raise ParamError(errors)


@cache
def validator(method: str, template: str) -> EndpointValidator:
    """Cached validator for a served (method, path template)."""
    info = schema_index()[template][method]
    return EndpointValidator(info)


def method_info(method: str, template: str) -> dict[str, Any] | None:
    return schema_index().get(template, {}).get(method)


def property_format(method: str, template: str, prop: str) -> dict[str, Any] | None:
    """Return the property-string format dict of a parameter (e.g. ``net[n]``)."""
    info = method_info(method, template) or {}
    props = info.get("parameters", {}).get("properties", {})
    fmt = (props.get(prop) or {}).get("format")
    return fmt if isinstance(fmt, dict) else None
