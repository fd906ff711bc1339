"""Where a credential's values come from on the command line: a prompt, stdin or a file;
secrets never from arguments, and a script is never left waiting at a prompt."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .. import credtypes
from ..errors import ValidationError


def _read(option: str, key: str, path: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as e:  # missing, a directory, no permission: say which, never a traceback
        raise ValidationError(f"{option} {key}=: cannot read {path}: "
                              f"{e.strerror or type(e).__name__}", field=key) from None


def _pairs(text: str, key: str) -> dict[str, str]:
    """``KEY=value`` lines (optionally quoted, ``#`` comments): a generic credential's file."""
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, eq, value = line.removeprefix("export ").partition("=")
        if not eq:
            raise ValidationError(f"--file {key}=: line {n} is not KEY=value", field=key)
        value = value.strip()
        if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[name.strip()] = value
    return out


def _advice(f: credtypes.Field) -> str:
    if f.kind == "map":
        return (f"give it on stdin (--values-stdin with {{\"{f.name}\": {{\"KEY\": \"value\"}}}}), "
                f"from a file of KEY=value lines (--file {f.name}=PATH), or at the prompt")
    return (f"give it at the prompt, on stdin (--values-stdin) or from a file "
            f"(--file {f.name}=PATH)")


def _ask(f: credtypes.Field, interactive: bool):
    """Prompt for one field; from a script (no terminal) a missing required field is an error,
    and optional ones are not asked for (an SSH key's passphrase must not stop a script)."""
    if not interactive and not f.required:
        return None
    if not interactive:  # a script's line on stdin (getpass would warn); maps need a format
        line = sys.stdin.readline() if f.kind != "map" else ""
        if line:
            return line.rstrip("\r\n")
        raise ValidationError(f"{f.label} is required: stdin ended before it was given; "
                              f"{_advice(f)}", field=f.name)
    try:
        if f.kind == "map":
            pairs = {}
            while True:
                name = click.prompt(f"{f.label}: key (empty to finish)", default="",
                                    show_default=False)
                if not name:
                    return pairs
                pairs[name] = click.prompt(f"{f.label}: value of {name}", hide_input=True)
        return click.prompt(f.label, hide_input=f.secret,
                            default="" if not f.required else None, show_default=False)
    except click.Abort:
        if interactive:
            raise
        raise ValidationError(f"{f.label} is required: stdin ended before it was given; "
                              f"{_advice(f)}", field=f.name) from None


def collect(ctype: credtypes.CredentialType, sets: tuple[str, ...], files: tuple[str, ...],
             values_stdin: bool, prompt_missing: bool) -> dict:
    """Gather values: ``--set`` for non-secret fields only, secrets never from arguments."""
    values: dict = {}
    if values_stdin:
        try:
            data = json.loads(sys.stdin.read() or "{}")
        except json.JSONDecodeError as e:  # the position only: the text may be a secret
            raise ValidationError(f"--values-stdin: stdin is not valid JSON (line {e.lineno}, "
                                  f"column {e.colno}: {e.msg})", field="values") from None
        if not isinstance(data, dict):
            raise ValidationError("stdin must hold a JSON object of field → value")
        values.update(data)
    for item in sets:
        key, sep, val = item.partition("=")
        if not sep:
            raise ValidationError(f"--set takes FIELD=VALUE, got {key[:40]!r}", field=key)
        f = ctype.field(key)
        if f.secret:
            raise ValidationError(f"{key} is secret: {_advice(f)}, never as a command-line "
                                  "argument", field=key)
        values[key] = val
    for item in files:
        key, sep, path = item.partition("=")
        if not sep or not key:
            raise ValidationError(f"--file takes FIELD=PATH, e.g. --file {ctype.fields[0].name}=PATH "
                                  f"({ctype.name} fields: {', '.join(f.name for f in ctype.fields)})",
                                  field="file")
        f = ctype.field(key)
        data = _read("--file", key, path)
        if f.kind == "bytes":
            values[key] = data
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError(f"--file {key}=: {path} is not UTF-8 text", field=key) from None
        values[key] = _pairs(text, key) if f.kind == "map" else text
    if prompt_missing:
        interactive = sys.stdin.isatty()
        for f in ctype.fields:
            if f.name in values or f.kind == "bytes" or not (f.required or f.secret):
                continue
            value = _ask(f, interactive)
            if value is not None:
                values[f.name] = value
    return values


def type_help() -> str:
    """Each type's fields, for ``cred add --help``."""
    lines = ["\b", "Types and their fields (* secret: prompt, --values-stdin or --file only;",
             "? optional):"]
    for name in sorted(credtypes.TYPES):
        t = credtypes.get(name)
        lines.append(f"  {name:<18} " + ", ".join(
            f.name + ("*" if f.secret else "") + ("" if f.required else "?") for f in t.fields))
    return "\n".join(lines)
