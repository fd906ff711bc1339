"""``workbench scope``: list, create, rename and delete workspaces (scopes), and give people
roles on them (members, grant, revoke)."""
from __future__ import annotations

import click
from flask.cli import with_appcontext

from .. import access, accounts, scopes
from ..audit import unit
from . import cli_actor, emit, json_option, vault
from .output import columns, table


@click.group("scope")
def scope():
    """Workspaces (scopes): created explicitly, never by a typo."""


@scope.command("list")
@json_option
@with_appcontext
def scope_list(as_json: bool):
    """List workspaces and what they hold."""
    with vault().factory() as s:
        by_id = scopes.names(s)
        rows = [scopes.to_dict(ws, scopes.contents(s, ws), by_id)
                for ws in scopes.list_scopes(s)]
    flat = [{**r, **r["contents"]} for r in rows]
    emit(rows, as_json, table(flat, columns("id", "parent", "title", "scopes", "credentials",
                                            "sources", "runner_tokens", "created_at")))


@scope.command("create")
@click.argument("scope_id")
@click.option("--title", default="", help="a display name (can be changed later)")
@click.option("--parent", default=None, help="the scope above it (its credentials are seen "
              "here); fixed for good")
@with_appcontext
def scope_create(scope_id: str, title: str, parent: str | None):
    """Create a workspace; its ID and parent never change."""
    with unit(vault().factory) as s:
        scopes.create_scope(s, cli_actor(), scope_id, title, parent)
    click.echo(f"workspace {scope_id} created")


@scope.command("rename")
@click.argument("scope_id")
@click.argument("title")
@with_appcontext
def scope_rename(scope_id: str, title: str):
    """Change a workspace's title (its ID stays)."""
    with unit(vault().factory) as s:
        scopes.update_scope(s, cli_actor(), scope_id, {"title": title})
    click.echo(f"workspace {scope_id} is now titled {title!r}")


@scope.command("delete")
@click.argument("scope_id")
@with_appcontext
def scope_delete(scope_id: str):
    """Delete an empty workspace."""
    with unit(vault().factory) as s:
        scopes.delete_scope(s, cli_actor(), scope_id)
    click.echo(f"workspace {scope_id} deleted")


@scope.command("members")
@click.argument("scope_id")
@json_option
@with_appcontext
def scope_members(scope_id: str, as_json: bool):
    """Who has a role on a workspace: on it, and inherited from the ones above."""
    with vault().factory() as s:
        rows = [{"inherited": inherited, **access.member_to_dict(m)}
                for inherited, grants in ((False, access.members(s, scope_id)),
                                          (True, access.inherited_members(s, scope_id)))
                for m in grants]
    emit(rows, as_json, table(rows, columns("username", "role", "workspace", "inherited",
                                             "source", "created_by", "created_at")))


@scope.command("grant")
@click.argument("scope_id")
@click.argument("username")
@click.argument("role", type=click.Choice(accounts.ROLES))
@with_appcontext
def scope_grant(scope_id: str, username: str, role: str):
    """Give a user a role on a workspace and every workspace below it."""
    with unit(vault().factory) as s:
        access.grant(s, cli_actor(), scope_id, username, role)
    click.echo(f"{username} is now {role} of workspace {scope_id} (and the workspaces below)")


@scope.command("revoke")
@click.argument("scope_id")
@click.argument("username")
@with_appcontext
def scope_revoke(scope_id: str, username: str):
    """Take a user's role on a workspace away (roles given above it stay)."""
    with unit(vault().factory) as s:
        access.revoke(s, cli_actor(), scope_id, username)
    click.echo(f"{username} no longer has a role on workspace {scope_id}")


commands = [scope]
