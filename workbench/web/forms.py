"""Typed credential forms: read a type's fields from a request, and what may be shown again."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from werkzeug.datastructures import FileStorage, ImmutableMultiDict

from ..credtypes import CredentialType, Field
from ..errors import ValidationError

PREFIX = "v_"
UPLOADABLE = ("multiline", "bytes")


@dataclass
class Widget:
    """How one field is rendered: its input kind and the value to show again (never a secret)."""

    field: Field
    input: str  # text | password | textarea | file | map
    value: Any = ""
    upload: bool = False

    @property
    def name(self) -> str:
        return PREFIX + self.field.name


def widgets(ctype: CredentialType, shown: dict[str, Any] | None = None) -> list[Widget]:
    """One widget per field; ``shown`` holds non-secret values to pre-fill."""
    shown = shown or {}
    out = []
    for f in ctype.fields:
        if f.kind == "map":
            keys = list(shown.get(f.name) or []) or ["", ""]
            out.append(Widget(f, "map", keys))
        elif f.kind == "bytes":
            out.append(Widget(f, "file", "", upload=True))
        elif f.kind == "multiline":
            # a secret here is only ever what the user just typed (see shown_on_error)
            out.append(Widget(f, "textarea", shown.get(f.name, ""), upload=True))
        else:
            out.append(Widget(f, "password" if f.secret else "text",
                              "" if f.secret else shown.get(f.name, "")))
    return out


def _upload(files: ImmutableMultiDict, name: str) -> bytes | None:
    fs: FileStorage | None = files.get(name + "_file")
    if fs is None or not fs.filename:
        return None
    return fs.read()


def read_values(ctype: CredentialType, form: ImmutableMultiDict, files: ImmutableMultiDict,
                *, keep_blank_secrets: bool = False) -> dict[str, Any]:
    """The submitted values; with ``keep_blank_secrets`` (an update), empty secret fields are
    left out so the current value is kept."""
    values: dict[str, Any] = {}
    for f in ctype.fields:
        key = PREFIX + f.name
        if f.kind == "map":
            names = form.getlist(key + "_key")
            items = form.getlist(key + "_value")
            pairs = {}
            for k, v in zip(names, items):
                k = k.strip()
                if not k and not v:
                    continue
                if not k:
                    raise ValidationError(f"{f.label}: every value needs a key", field=f.name)
                pairs[k] = v
            if pairs or not keep_blank_secrets:
                values[f.name] = pairs
            continue
        raw: Any = form.get(key, "")
        uploaded = _upload(files, key) if f.kind in UPLOADABLE else None
        if uploaded is not None:
            if f.kind == "bytes":
                raw = uploaded
            else:
                try:
                    raw = uploaded.decode("utf-8")
                except UnicodeDecodeError:
                    raise ValidationError(f"{f.label}: the file must be UTF-8 text",
                                          field=f.name) from None
        if f.secret:
            if raw in ("", b"") and keep_blank_secrets:
                continue
        else:
            raw = raw.strip() if isinstance(raw, str) and f.kind == "text" else raw
        values[f.name] = raw
    return values


def shown_on_error(ctype: CredentialType, form: ImmutableMultiDict,
                   files: ImmutableMultiDict | None = None) -> dict[str, Any]:
    """What a rejected form shows again: the values just typed or uploaded, so an error that
    points at line 12 of a pasted kubeconfig can be fixed there.  Never a stored value (the
    caller passes only the request), never single-line secrets (they are quick to retype and
    would sit in a value attribute), never map values or binary files."""
    shown: dict[str, Any] = {}
    for f in ctype.fields:
        key = PREFIX + f.name
        if f.kind == "map":
            shown[f.name] = [k for k in form.getlist(key + "_key") if k.strip()]
        elif f.kind == "multiline":
            fs = files.get(key + "_file") if files else None
            text = form.get(key, "")
            if fs is not None and fs.filename:
                fs.stream.seek(0)
                text = fs.stream.read().decode("utf-8", "replace")
            shown[f.name] = text
        elif not f.secret:
            shown[f.name] = form.get(key, "")
    return shown


def labels(ctype: CredentialType) -> dict[str, tuple[str, str]]:
    """field name → (label, the element ID an error summary links to)."""
    return {f.name: (f.label, PREFIX + f.name) for f in ctype.fields}
