"""Registry of credential types: their fields, validation, and the forms a step can consume.

The base class and the registry live here; the built-in types are in ``builtin``."""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import ValidationError

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_VALUE_BYTES = 1024 * 1024  # one secret field; the request-size limit is enforced separately
MIN_MASKABLE = 4  # shorter values cannot be masked without masking innocent output


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    secret: bool = False
    kind: str = "text"  # text | multiline | bytes | map
    required: bool = True
    help: str = ""


@dataclass(frozen=True)
class Problem:
    """A finding about well-formed but questionable content, shown in the credential's status."""

    reason: str
    message: str
    severity: str = "warning"  # warning | error


@dataclass(frozen=True)
class FileForm:
    """What ``file: NAME`` writes: content, a suggested name, and whether NAME points at the dir."""

    content: bytes
    filename: str
    expose_dir: bool = False


class CredentialType:
    """One kind of credential.

    Subclasses declare ``name``, ``label`` and ``fields`` and may override:
    ``check`` (extra validation, raising ValidationError; returns Problems), ``single_value``
    (what ``env: NAME`` binds), ``file_form`` (what ``file: NAME`` writes),
    ``default_binding`` (used when a step names the credential without a binding) and
    ``mask_values`` (every raw string a step could print that must be masked; the masker adds the
    encoded forms).  ``values`` is always the dict of field name → value after ``validate``:
    text fields are ``str``, ``bytes`` fields are ``bytes``, ``map`` fields are ``dict[str, str]``.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    fields: ClassVar[tuple[Field, ...]]
    target_field: ClassVar[str | None] = None  # non-secret field naming what the secret opens

    @property
    def secret_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.secret)

    @property
    def public_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if not f.secret)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise ValidationError(f"{self.name} credentials have no field {name!r}", field=name)

    def validate(self, values: dict[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
        """Normalize ``values``; raise ValidationError naming the field (never echoing a value)."""
        if not isinstance(values, dict):
            raise ValidationError("values must be an object of field → value", field="values")
        known = {f.name for f in self.fields}
        for key in values:
            if key not in known:
                raise ValidationError(
                    f"{self.name} credentials have no field {key!r}; expected {sorted(known)}",
                    field=str(key))
        out: dict[str, Any] = {}
        for f in self.fields:
            raw = values.get(f.name)
            if raw is None or raw == "" or raw == {}:
                if f.required:
                    raise ValidationError(f"{f.label} is required", field=f.name)
                continue
            out[f.name] = _coerce(f, raw)
        return out, self.check(out)

    def check(self, values: dict[str, Any]) -> list[Problem]:
        return []

    def single_value(self, values: dict[str, Any]) -> str:
        raise ValidationError(f"a {self.name} credential cannot be bound to a single variable; "
                              f"bind its fields one by one", field="env")

    def bindable_fields(self, values: dict[str, Any] | None = None) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.kind != "map")

    def field_value(self, values: dict[str, Any], name: str) -> str:
        if name not in self.bindable_fields(values):
            raise ValidationError(f"{self.name} credentials have no bindable field {name!r}",
                                  field=name)
        v = values.get(name, "")
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)

    def file_form(self, values: dict[str, Any]) -> FileForm:
        raise ValidationError(f"a {self.name} credential has no file form", field="file")

    def default_binding(self, cred_id: str) -> dict:
        """Binding used when a step lists the credential without ``env``/``file``."""
        return {"env": {f: f"{env_prefix(cred_id)}_{f.upper()}" for f in self.bindable_fields()}}

    def mask_values(self, values: dict[str, Any]) -> list[bytes]:
        out = []
        for f in self.fields:
            if f.secret and f.name in values:
                v = values[f.name]
                if isinstance(v, dict):
                    out.extend(as_bytes(x) for x in v.values())
                else:
                    out.append(as_bytes(v))
        return out

    def short_values(self, values: dict[str, Any]) -> list[str]:
        """Names of secret fields whose values are too short to mask safely."""
        short = []
        for f in self.fields:
            v = values.get(f.name)
            if not f.secret or v is None:
                continue
            items = v.items() if isinstance(v, dict) else [(f.name, v)]
            for key, item in items:
                raw = as_bytes(item)
                if raw and len(masked_part(raw)) < MIN_MASKABLE:
                    short.append(key if isinstance(v, dict) else f.name)
        return short


def env_prefix(cred_id: str) -> str:
    """``prod-kubeconfig`` → ``PROD_KUBECONFIG``."""
    p = re.sub(r"[^A-Z0-9]", "_", cred_id.upper())
    return p if re.match(r"[A-Z_]", p) else "_" + p


def masked_part(value: bytes) -> bytes:
    """What the masker masks of a value: all but one trailing newline (``echo`` adds one)."""
    return value[:-2] if value.endswith(b"\r\n") else value.removesuffix(b"\n")


def as_bytes(v: Any) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode("utf-8")


def _coerce(f: Field, raw: Any) -> Any:
    if f.kind == "bytes":
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        if not isinstance(raw, (bytes, bytearray)):
            raise ValidationError(f"{f.label} must be file content", field=f.name)
        value: Any = bytes(raw)
        size = len(value)
    elif f.kind == "map":
        if not isinstance(raw, dict) or not raw:
            raise ValidationError(f"{f.label} must be a non-empty map of KEY → value", field=f.name)
        value = {}
        for k, v in raw.items():
            if not isinstance(k, str) or not ENV_NAME.match(k):
                raise ValidationError(
                    f"{f.label}: key {str(k)[:64]!r} must be a variable name "
                    "(letters, digits, underscore; not starting with a digit)", field=f.name)
            if not isinstance(v, str):
                raise ValidationError(f"{f.label}: the value of {k} must be text", field=f.name)
            value[k] = v
        size = sum(len(as_bytes(v)) for v in value.values())
    else:
        if not isinstance(raw, str):
            raise ValidationError(f"{f.label} must be text", field=f.name)
        if "\x00" in raw:
            raise ValidationError(f"{f.label} must not contain NUL characters", field=f.name)
        if f.kind == "text" and not f.secret and ("\n" in raw or "\r" in raw):
            raise ValidationError(f"{f.label} must be a single line", field=f.name)
        value = raw
        size = len(as_bytes(raw))
    if size > MAX_VALUE_BYTES:
        raise ValidationError(f"{f.label} is larger than {MAX_VALUE_BYTES // 1024} KiB",
                              field=f.name)
    return value


def check_filename(name: str) -> str:
    """Refuse names with path parts, traversal, hidden-file tricks or control characters."""
    if (not name or len(name) > 128 or "/" in name or "\\" in name or name in (".", "..")
            or name.startswith(".") or any(ord(c) < 32 for c in name)):
        raise ValidationError("File name must be a plain name without path parts "
                              "(no '/', '\\', leading '.', or control characters)",
                              field="filename")
    return name


TYPES: dict[str, CredentialType] = {}


def register(cls: type[CredentialType]) -> type[CredentialType]:
    TYPES[cls.name] = cls()
    return cls


def from_json(type_name: str, values: Any) -> dict[str, Any]:
    """JSON → values: ``bytes`` fields (secret file content) travel as base64 strings."""
    if not isinstance(values, dict):
        raise ValidationError("values must be an object of field → value", field="values")
    out = dict(values)
    for f in get(type_name).fields:
        if f.kind == "bytes" and isinstance(out.get(f.name), str):
            try:
                out[f.name] = base64.b64decode(out[f.name], validate=True)
            except (binascii.Error, ValueError):
                raise ValidationError(f"{f.label} must be base64 in JSON", field=f.name) \
                    from None
    return out


def to_json(values: dict[str, Any]) -> dict[str, Any]:
    """Values → JSON: ``bytes`` become base64 strings."""
    return {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v
            for k, v in values.items()}


def get(name: str) -> CredentialType:
    try:
        return TYPES[name]
    except (KeyError, TypeError):  # TypeError: not hashable (a JSON object or list)
        raise ValidationError(f"unknown credential type {str(name)[:64]!r}; "
                              f"expected one of {sorted(TYPES)}", field="type") from None


from . import builtin  # noqa: E402,F401  (registers the built-in types)
