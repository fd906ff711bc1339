"""Account commands added to the ``user`` and ``token`` groups: list, disable, enable,
delete, passwords; list and revoke tokens."""
from __future__ import annotations

import sys

import click
from flask.cli import with_appcontext

from .. import accounts, passwords
from ..audit import unit
from ..db import iso
from ..errors import ValidationError
from . import cli_actor, emit, json_option, vault
from .output import columns, table
from .admin import token, user


def _user_row(u) -> dict:
    return {"username": u.username, "role": u.role, "disabled": u.disabled,
            "must_change_password": u.must_change_password, "created_at": iso(u.created_at)}


def _read_passwords(count: int, from_stdin: bool, prompts: list[str]) -> list[str]:
    """``count`` passwords, one a line from stdin, or prompted for (never from arguments)."""
    if from_stdin:
        lines = [sys.stdin.readline().rstrip("\n") for _ in range(count)]
        if any(not line for line in lines):
            raise ValidationError(f"expected {count} line(s) on standard input",
                                  field="password")
        return lines
    return [click.prompt(p, hide_input=True, confirmation_prompt=p.startswith("New"))
            for p in prompts]


@user.command("list")
@json_option
@with_appcontext
def user_list(as_json: bool):
    """List users, their roles and state."""
    with vault().factory() as s:
        rows = [_user_row(u) for u in accounts.list_users(s)]
    emit(rows, as_json, table(rows, columns("username", "role", "disabled",
                                             "must_change_password", "created_at")))


@user.command("disable")
@click.argument("username")
@with_appcontext
def user_disable(username: str):
    """Disable a user: their sessions and personal tokens stop working at once."""
    with unit(vault().factory) as s:
        accounts.set_disabled(s, cli_actor(), username, True)
    click.echo(f"user {username} disabled")


@user.command("enable")
@click.argument("username")
@with_appcontext
def user_enable(username: str):
    """Re-enable a disabled user (they sign in again)."""
    with unit(vault().factory) as s:
        accounts.set_disabled(s, cli_actor(), username, False)
    click.echo(f"user {username} enabled")


@user.command("delete")
@click.argument("username")
@click.confirmation_option(prompt="Delete this user and their personal tokens?")
@with_appcontext
def user_delete(username: str):
    """Delete a user and their personal tokens (never the last active admin)."""
    with unit(vault().factory) as s:
        accounts.delete_user(s, cli_actor(), username)
    click.echo(f"user {username} deleted")


@user.command("set-role")
@click.argument("username")
@click.argument("role", type=click.Choice(accounts.INSTANCE_ROLES))
@with_appcontext
def user_set_role(username: str, role: str):
    """Change a user's role (never demoting the last active admin)."""
    with unit(vault().factory) as s:
        accounts.set_role(s, cli_actor(), username, role)
    click.echo(f"user {username} is now {role}")


@user.command("reset-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="read the new password from stdin "
              "instead of generating one")
@with_appcontext
def user_reset_password(username: str, password_stdin: bool):
    """Set a user's password (generated and printed once unless given on stdin); they must
    change it at their next sign-in."""
    password = _read_passwords(1, True, [])[0] if password_stdin else passwords.generate()
    with unit(vault().factory) as s:
        accounts.reset_password(s, cli_actor(), username, password)
    if password_stdin:
        click.echo(f"password of {username} set; they must change it at their next sign-in")
    else:
        click.echo(f"One-time password of {username} (shown once; the next sign-in asks for "
                   f"a new one):\n\n    {password}\n")


@user.command("password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True,
              help="read the current and the new password from stdin, one a line")
@with_appcontext
def user_password(username: str, password_stdin: bool):
    """Change your own password (the current one is asked for)."""
    current, new = _read_passwords(2, password_stdin, ["Current password", "New password"])
    with unit(vault().factory) as s:
        me = cli_actor()
        passwords.change_own(s, me, accounts.find_user(s, username), current, new)
    click.echo(f"password of {username} changed; their other sessions are signed out")


@token.command("list")
@click.option("--user", "username", help="only this user's tokens")
@json_option
@with_appcontext
def token_list(username: str | None, as_json: bool):
    """List personal and runner tokens (never their secrets)."""
    with vault().factory() as s:
        rows = [accounts.token_to_dict(t) for t in accounts.list_tokens(s)
                if username is None or (t.user and t.user.username == username)]
    emit(rows, as_json, table(rows, columns("id", "kind", "name", "prefix", "user", "workspace",
                                             "last_used_at", "revoked")))


@token.command("revoke")
@click.argument("token_id", type=int)
@with_appcontext
def token_revoke(token_id: int):
    """Revoke a token by its ID (see ``token list``); it stops working at once."""
    with unit(vault().factory) as s:
        tok = accounts.revoke_token(s, cli_actor(), token_id)
        name = tok.name
    click.echo(f"token {token_id} ({name}) revoked")


commands: list = []  # these commands join the groups of cli.admin
