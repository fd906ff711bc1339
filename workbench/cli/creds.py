"""``workbench cred …``: manage credentials; secrets come from a prompt, stdin or a file."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from flask.cli import with_appcontext

from .. import credentials as svc, credtypes
from ..audit import unit
from ..errors import CredentialInUse, ValidationError
from . import cli_actor, vault, workspace_option
from .completion import credential_ids
from .output import emit, fields, json_option, note, ref_line, table


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


def _collect(ctype: credtypes.CredentialType, sets: tuple[str, ...], files: tuple[str, ...],
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


def _type_help() -> str:
    """Each type's fields, for ``cred add --help``."""
    lines = ["\b", "Types and their fields (* secret: prompt, --values-stdin or --file only;",
             "? optional):"]
    for name in sorted(credtypes.TYPES):
        t = credtypes.get(name)
        lines.append(f"  {name:<18} " + ", ".join(
            f.name + ("*" if f.secret else "") + ("" if f.required else "?") for f in t.fields))
    return "\n".join(lines)


@click.group("cred")
def cred():
    """Manage credentials."""


id_argument = click.argument("cred_id", shell_complete=credential_ids)
LIST_COLUMNS = [("ID", "id"), ("TYPE", "type"), ("VERSION", "version"), ("STATUS", "status"),
                ("NAME", "name")]


@cred.command("add", epilog=_type_help())
@click.argument("cred_id")
@click.option("--type", "type_name", required=True, type=click.Choice(sorted(credtypes.TYPES)))
@click.option("--name", default="")
@click.option("--description", default="")
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE", help="non-secret fields")
@click.option("--file", "files", multiple=True, metavar="FIELD=PATH", help="a field from a file")
@click.option("--values-stdin", is_flag=True, help="read a JSON object of values from stdin")
@workspace_option
@json_option
@with_appcontext
def add(cred_id, type_name, name, description, sets, files, values_stdin, workspace, as_json):
    """Create a credential; missing fields are prompted for (secrets hidden)."""
    ctype = credtypes.get(type_name)
    values = _collect(ctype, sets, files, values_stdin, prompt_missing=not values_stdin)
    with unit(vault().factory) as s:
        c = svc.create_credential(s, vault().barrier, cli_actor(), workspace=workspace,
                                  cred_id=cred_id, type=type_name, values=values, name=name,
                                  description=description)
        warn = f"\n{c.status}: {c.status_message}" if c.status == "Issues found" else ""
        emit(svc.to_dict(c), as_json, f"created {cred_id} ({type_name}), version 1{warn}")


@cred.command("list")
@click.option("--type", "type_name", default=None, type=click.Choice(sorted(credtypes.TYPES)))
@click.option("-q", "query", default=None, help="search ID, name, description")
@click.option("--limit", default=100, show_default=True)
@workspace_option
@json_option
@with_appcontext
def list_(type_name, query, limit, workspace, as_json):
    """List credentials (metadata only)."""
    with vault().factory() as s:
        rows, total = svc.list_credentials(s, workspace=workspace, q=query, type=type_name,
                                           limit=limit)
        items = [svc.to_dict(c) for c in rows]
    more = f"\n({len(items)} of {total}; --limit to see more)" if total > len(items) else ""
    emit({"items": items, "total": total}, as_json,
         table(items, LIST_COLUMNS, empty="no credentials") + more)


@cred.command("show")
@id_argument
@workspace_option
@json_option
@with_appcontext
def show(cred_id, workspace, as_json):
    """Show one credential's metadata (never its secret values)."""
    with vault().factory() as s:
        d = svc.to_dict(svc.get_credential(s, workspace, cred_id))
        d["used_by"] = svc.references(s, workspace, cred_id)
    used = table(d["used_by"], [("PIPELINE", "pipeline"), ("STEP", "step"),
                                ("VERSION", "version")], empty="used by no indexed pipeline")
    emit(d, as_json, fields(d, skip=("conditions", "used_by")) + "\n\n" + used)


@cred.command("rename")
@id_argument
@click.option("--name", default=None)
@click.option("--description", default=None)
@workspace_option
@json_option
@with_appcontext
def rename(cred_id, name, description, workspace, as_json):
    """Change the display name and description (the ID never changes)."""
    changes = {k: v for k, v in (("name", name), ("description", description)) if v is not None}
    if not changes:
        raise click.UsageError("nothing to change: give --name and/or --description")
    with unit(vault().factory) as s:
        c = svc.update_credential(s, vault().barrier, cli_actor(), workspace=workspace,
                                  cred_id=cred_id, changes=changes)
        d = svc.to_dict(c)
    emit(d, as_json, f"{cred_id}: " + ", ".join(f"{k} set" for k in changes))


@cred.command("update")
@id_argument
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE")
@click.option("--file", "files", multiple=True, metavar="FIELD=PATH")
@click.option("--values-stdin", is_flag=True)
@workspace_option
@json_option
@with_appcontext
def update(cred_id, sets, files, values_stdin, workspace, as_json):
    """Store new values as a new version (unlisted fields keep their values)."""
    with unit(vault().factory) as s:
        c = svc.get_credential(s, workspace, cred_id)
        ctype = credtypes.get(c.type)
        values = _collect(ctype, sets, files, values_stdin,
                          prompt_missing=not (values_stdin or sets or files))
        c = svc.update_credential(s, vault().barrier, cli_actor(), workspace=workspace,
                                  cred_id=cred_id, changes={"values": values})
        d = svc.to_dict(c)
    emit(d, as_json, f"{cred_id} is now at version {d['version']}")


@cred.command("delete")
@id_argument
@click.option("--force", is_flag=True, help="delete even if pipelines reference it")
@click.option("--yes", is_flag=True, help="do not ask")
@workspace_option
@json_option
@with_appcontext
def delete(cred_id, force, yes, workspace, as_json):
    """Delete a credential, showing which pipelines and steps would break."""
    with vault().factory() as s:
        svc.get_credential(s, workspace, cred_id)
        refs = svc.references(s, workspace, cred_id)
    if refs and not force:
        raise CredentialInUse(f"{cred_id} is used by {len(refs)} step(s); refusing to delete "
                              "a referenced credential (--force deletes anyway)", references=refs)
    if refs:
        note(f"{cred_id} is used by " + "; ".join(ref_line(r) for r in refs))
    if not yes:
        click.confirm(f"Delete {cred_id}?", abort=True)
    with unit(vault().factory) as s:
        svc.delete_credential(s, cli_actor(), workspace=workspace, cred_id=cred_id, force=force)
    emit({"deleted": cred_id, "workspace": workspace, "references": refs}, as_json,
         f"deleted {cred_id}")


@cred.command("versions")
@id_argument
@workspace_option
@json_option
@with_appcontext
def versions(cred_id, workspace, as_json):
    """Version history (who, when; never values)."""
    with vault().factory() as s:
        items = [svc.version_to_dict(v) for v in svc.list_versions(s, workspace, cred_id)]
    emit({"items": items}, as_json, table(items, [
        ("VERSION", "version"), ("CREATED", "created_at"), ("BY", "created_by"),
        ("FIELDS", "fields")]))


@cred.command("verify")
@click.argument("cred_id", required=False, shell_complete=credential_ids)
@click.option("--all", "all_", is_flag=True, help="re-check every credential (for cron)")
@click.option("--timeout", default=10.0, show_default=True)
@click.option("--workspace", default=None, help="default: 'default' (with --all: every one)")
@json_option
@with_appcontext
def verify(cred_id, all_, timeout, workspace, as_json):
    """Test a credential against its target and record the result in its status."""
    from .. import status
    if all_ == bool(cred_id):
        raise click.UsageError("give a credential ID or --all")
    if all_:
        counts = status.verify_all(vault().factory, vault().barrier, cli_actor(), workspace,
                                   timeout)
        emit(counts, as_json, ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
             or "no credentials")
        sys.exit(1 if counts.get("Issues found") else 0)
    with unit(vault().factory) as s:
        c = status.verify_credential(s, vault().barrier, cli_actor(), workspace or "default",
                                     cred_id, timeout)
        d = svc.to_dict(c)
    emit(d, as_json, f"{cred_id}: {d['status']}" + (f" — {d['status_message']}"
                                                     if d["status_message"] else ""))
    sys.exit(1 if d["status"] == "Issues found" else 0)


commands = [cred]
