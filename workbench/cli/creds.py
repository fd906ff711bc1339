"""``workbench cred …``: manage credentials; secrets come from a prompt, stdin or a file."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from flask.cli import with_appcontext

from .. import credentials as svc, credtypes
from ..audit import unit
from ..errors import ValidationError
from . import cli_actor, emit, json_option, vault, workspace_option


def _collect(ctype: credtypes.CredentialType, sets: tuple[str, ...], files: tuple[str, ...],
             values_stdin: bool, prompt_missing: bool) -> dict:
    """Gather values: ``--set`` for non-secret fields only, secrets never from arguments."""
    values: dict = {}
    if values_stdin:
        data = json.loads(sys.stdin.read() or "{}")
        if not isinstance(data, dict):
            raise ValidationError("stdin must hold a JSON object of field → value")
        values.update(data)
    for item in sets:
        key, sep, val = item.partition("=")
        if not sep:
            raise ValidationError(f"--set takes FIELD=VALUE, got {key[:40]!r}", field=key)
        if ctype.field(key).secret:
            raise ValidationError(f"{key} is secret: give it at the prompt, on stdin "
                                  f"(--values-stdin) or from a file (--file {key}=PATH), never "
                                  "as a command-line argument", field=key)
        values[key] = val
    for item in files:
        key, sep, path = item.partition("=")
        f = ctype.field(key)
        data = Path(path).read_bytes()
        values[key] = data if f.kind == "bytes" else data.decode("utf-8")
    if prompt_missing:
        for f in ctype.fields:
            if f.name in values or f.kind in ("map", "bytes"):
                continue
            if f.required or f.secret:
                values[f.name] = click.prompt(f.label, hide_input=f.secret,
                                              default="" if not f.required else None,
                                              show_default=False)
    return values


@click.group("cred")
def cred():
    """Manage credentials."""


@cred.command("add")
@click.argument("cred_id")
@click.option("--type", "type_name", required=True, type=click.Choice(sorted(credtypes.TYPES)))
@click.option("--name", default="")
@click.option("--description", default="")
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE", help="non-secret fields")
@click.option("--file", "files", multiple=True, metavar="FIELD=PATH", help="a field from a file")
@click.option("--values-stdin", is_flag=True, help="read a JSON object of values from stdin")
@click.option("--no-inherit", is_flag=True, help="only runs of this workspace get it, not "
              "those of the workspaces below")
@workspace_option
@json_option
@with_appcontext
def add(cred_id, type_name, name, description, sets, files, values_stdin, no_inherit,
        workspace, as_json):
    """Create a credential (seen by this workspace and every one below it)."""
    ctype = credtypes.get(type_name)
    values = _collect(ctype, sets, files, values_stdin, prompt_missing=not values_stdin)
    with unit(vault().factory) as s:
        c = svc.create_credential(s, vault().barrier, cli_actor(), workspace=workspace,
                                  cred_id=cred_id, type=type_name, values=values, name=name,
                                  description=description, inherit=not no_inherit)
        warn = f"\n{c.status}: {c.status_message}" if c.status == "Issues found" else ""
        emit(svc.to_dict(c), as_json, f"created {cred_id} ({type_name}), version 1{warn}")


@cred.command("list")
@click.option("--type", "type_name", default=None)
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
    lines = [f"{'ID':<32} {'TYPE':<18} {'VER':>3}  {'STATUS':<16} NAME"] + [
        f"{i['id']:<32} {i['type']:<18} {i['version']:>3}  {i['status']:<16} {i['name']}"
        for i in items]
    emit({"items": items, "total": total}, as_json, "\n".join(lines))


@cred.command("show")
@click.argument("cred_id")
@workspace_option
@json_option
@with_appcontext
def show(cred_id, workspace, as_json):
    """Show one credential's metadata (never its secret values)."""
    with vault().factory() as s:
        d = svc.to_dict(svc.get_credential(s, workspace, cred_id))
        d["used_by"] = svc.references(s, workspace, cred_id)
    text = "\n".join(f"{k:>14}: {v}" for k, v in d.items() if k not in ("conditions",))
    emit(d, as_json, text)


@cred.command("rename")
@click.argument("cred_id")
@click.option("--name", default=None)
@click.option("--description", default=None)
@workspace_option
@with_appcontext
def rename(cred_id, name, description, workspace):
    """Change the display name and description (the ID never changes)."""
    changes = {k: v for k, v in (("name", name), ("description", description)) if v is not None}
    with unit(vault().factory) as s:
        svc.update_credential(s, vault().barrier, cli_actor(), workspace=workspace,
                              cred_id=cred_id, changes=changes)
    click.echo(f"renamed {cred_id}")


@cred.command("update")
@click.argument("cred_id")
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE")
@click.option("--file", "files", multiple=True, metavar="FIELD=PATH")
@click.option("--values-stdin", is_flag=True)
@workspace_option
@with_appcontext
def update(cred_id, sets, files, values_stdin, workspace):
    """Store new values as a new version (unlisted fields keep their values)."""
    with unit(vault().factory) as s:
        c = svc.get_credential(s, workspace, cred_id)
        ctype = credtypes.get(c.type)
        values = _collect(ctype, sets, files, values_stdin,
                          prompt_missing=not (values_stdin or sets or files))
        c = svc.update_credential(s, vault().barrier, cli_actor(), workspace=workspace,
                                  cred_id=cred_id, changes={"values": values})
        click.echo(f"{cred_id} is now at version {c.current_version}")


@cred.command("delete")
@click.argument("cred_id")
@click.option("--force", is_flag=True, help="delete even if pipelines reference it")
@click.option("--yes", is_flag=True, help="do not ask")
@workspace_option
@with_appcontext
def delete(cred_id, force, yes, workspace):
    """Delete a credential, showing which pipelines and steps would break."""
    with vault().factory() as s:
        svc.get_credential(s, workspace, cred_id)
        refs = svc.references(s, workspace, cred_id)
    if refs:
        click.echo(f"{cred_id} is used by {len(refs)} step(s):")
        for r in refs:
            pin = f"@{r['version']}" if r.get("version") else ""
            click.echo(f"  - pipeline {r.get('pipeline')} step {r.get('step')} {pin}")
        if not force:
            raise click.ClickException("refusing to delete a referenced credential; "
                                       "use --force to delete anyway")
    if not yes:
        click.confirm(f"Delete {cred_id}?", abort=True)
    with unit(vault().factory) as s:
        svc.delete_credential(s, cli_actor(), workspace=workspace, cred_id=cred_id, force=force)
    click.echo(f"deleted {cred_id}")


@cred.command("versions")
@click.argument("cred_id")
@workspace_option
@json_option
@with_appcontext
def versions(cred_id, workspace, as_json):
    """Version history (who, when; never values)."""
    with vault().factory() as s:
        items = [svc.version_to_dict(v) for v in svc.list_versions(s, workspace, cred_id)]
    emit({"items": items}, as_json, "\n".join(
        f"{i['version']:>4}  {i['created_at']}  {i['created_by']}" for i in items))


@cred.command("verify")
@click.argument("cred_id", required=False)
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
