"""``workbench cred …``: manage credentials; secrets come from a prompt, stdin or a file."""
from __future__ import annotations

import sys

import click
from flask.cli import with_appcontext

from .. import credentials as svc, credtypes
from ..audit import unit
from ..errors import CredentialInUse
from . import cli_actor, vault, workspace_option
from .completion import credential_ids
from .output import emit, fields, json_option, note, ref_line, table
from .values import collect, type_help


@click.group("cred")
def cred():
    """Manage credentials."""


id_argument = click.argument("cred_id", shell_complete=credential_ids)
LIST_COLUMNS = [("ID", "id"), ("TYPE", "type"), ("VERSION", "version"), ("STATUS", "status"),
                ("NAME", "name")]


@cred.command("add", epilog=type_help())
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
    values = collect(ctype, sets, files, values_stdin, prompt_missing=not values_stdin)
    with unit(vault().factory) as s:
        c = svc.create_credential(s, vault().barrier, cli_actor(), workspace=workspace,
                                  cred_id=cred_id, type=type_name, values=values, name=name,
                                  description=description, inherit=not no_inherit)
        warn = f"\n{c.status}: {c.status_message}" if c.status in ("Issues found", "Warning") \
            else ""
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
                                           limit=limit, inherited=False)
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
        values = collect(ctype, sets, files, values_stdin,
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
