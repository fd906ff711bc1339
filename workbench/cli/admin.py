"""Operator commands: init, serve, users, tokens, keys, doctor."""
from __future__ import annotations

import os
import sys

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from .. import accounts, audit, crypto, keyring, passwords, scopes
from ..audit import unit
from ..config import Settings
from ..errors import ConfigError, CryptoError
from ..models import Credential, CredentialVersion, User, Workspace
from ..vault import Vault
from . import cli_actor, emit, json_option, vault


@click.command("init")
@click.option("--admin", "admin_name", default="admin", show_default=True)
def init(admin_name: str):
    """Create the instance folder, database, master key and a first admin (idempotent)."""
    settings = Settings.from_env()
    v = Vault(settings).open()
    with unit(v.factory) as s:
        scopes.ensure_default(s)
        if s.scalar(select(User.id).limit(1)) is None:
            password = passwords.generate()
            accounts.create_user(s, cli_actor(), admin_name, password, "admin")
            click.echo(f"Created admin user {admin_name!r}. One-time password (shown once; "
                       f"the first sign-in asks for a new one):\n\n    {password}\n")
    click.echo(f"Instance: {settings.instance}")
    click.echo(f"Database: {v.engine.url.render_as_string(hide_password=True)}")
    click.echo(f"Master key: {'WORKBENCH_MASTER_KEY' if settings.master_key else settings.key_path}")


# Processes, not threads (docs/benchmarks.md): on 2 CPUs, 4 workers × 1 thread answered 32 %
# more resolves than 2 × 4, and 10 % more hellos; threads of one process take turns on the
# GIL, and every database call hands it over.  A long request (a sync that waits) holds one
# worker; the others go on.
SERVE_THREADS = 1


def default_workers() -> int:
    """Two per CPU this process may use, at most 8 (each holds database connections)."""
    return max(2, min(8, 2 * len(os.sched_getaffinity(0))))


def run_gunicorn(load, *, host: str, port: int, workers: int, threads: int) -> None:
    """Serve ``load()``'s WSGI app with the gunicorn settings of ``workbench serve``.  ``load``
    runs in each worker after the fork (the benchmarks' servers use the same settings)."""
    from gunicorn.app.base import BaseApplication

    class _App(BaseApplication):
        def load_config(self):
            for k, val in {"bind": f"{host}:{port}", "workers": workers, "threads": threads,
                           "accesslog": "-", "worker_class": "gthread"}.items():
                self.cfg.set(k, val)

        def load(self):
            return load()

    _App().run()


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=default_workers, type=int,
              show_default="2 per CPU, at most 8")
@click.option("--threads", default=SERVE_THREADS, show_default=True, type=int)
def serve(host: str, port: int, workers: int, threads: int):
    """Serve the web workbench and API with gunicorn."""
    from .. import create_app

    settings = Settings.from_env(insecure_cookies=host in ("127.0.0.1", "localhost"))
    app = create_app(settings)  # fail here, before forking, on a bad key or database
    # The start-up checks left pooled connections behind; forked workers must not share them
    # (two processes on one PostgreSQL socket or SQLite handle answer 500s at random).
    app.extensions["workbench"].close()
    click.echo(f"Workbench on http://{host}:{port}/")
    run_gunicorn(lambda: app, host=host, port=port, workers=workers, threads=threads)


@click.group("user")
def user():
    """Manage users."""


@user.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(accounts.ROLES), default="viewer", show_default=True)
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
@with_appcontext
def user_add(username: str, role: str, password_stdin: bool):
    """Add a user (the password is prompted for, or read from stdin)."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else click.prompt(
        "Password", hide_input=True, confirmation_prompt=True)
    with unit(vault().factory) as s:
        accounts.create_user(s, cli_actor(), username, password, role)
    click.echo(f"user {username} ({role}) created")


def _issue(kind: str, name: str, as_json: bool, **kw):
    with unit(vault().factory) as s:
        issued = accounts.create_token(s, cli_actor(), name, kind=kind, **kw)
        out = accounts.token_to_dict(issued.token) | {"token": issued.secret}
    emit(out, as_json, f"{issued.secret}\n(shown once; store it now)")


@click.group("token")
def token():
    """Personal API tokens."""


@token.command("create")
@click.argument("name")
@click.option("--user", "username", required=True, help="the user the token acts as")
@json_option
@with_appcontext
def token_create(name: str, username: str, as_json: bool):
    """Create a personal API token (printed once)."""
    _issue("personal", name, as_json, username=username)


@click.group("runner-token")
def runner_token():
    """Runner tokens: the only tokens that can resolve values, scoped to one workspace."""


@runner_token.command("create")
@click.argument("name")
@click.option("--workspace", default="default", show_default=True)
@json_option
@with_appcontext
def runner_token_create(name: str, workspace: str, as_json: bool):
    """Create a runner token (printed once)."""
    _issue("runner", name, as_json, workspace=workspace)


@click.group("keys")
def keys():
    """Master key management."""


@keys.command("rotate")
@click.option("--batch", default=5000, show_default=True)
def keys_rotate(batch: int):
    """Re-wrap every data key under a new master key; safe to interrupt and re-run."""
    settings = Settings.from_env()
    v = Vault(settings)
    v.migrate()
    report = keyring.rotate(settings, v.factory, batch=batch)
    with unit(v.factory) as s:
        audit.record(s, cli_actor(), "keys.rotate",
                     details={"term": report.term, "rewrapped": report.rewrapped})
    click.echo(f"{'resumed; ' if report.resumed else ''}re-wrapped {report.rewrapped} data keys "
               f"under key term {report.term}; key file {settings.key_path} replaced")


@click.command("doctor")
@json_option
def doctor(as_json: bool):
    """Check the master key and that every stored credential version decrypts."""
    settings = Settings.from_env()
    v = Vault(settings)
    v.migrate()
    try:
        barrier = keyring.load_barrier(settings, v.factory, create=False)
    except ConfigError as e:
        emit({"ok": False, "key": e.message, "bad": []}, as_json, f"master key: {e.message}")
        sys.exit(1)
    bad, total = [], 0
    with v.factory() as s:
        rows = s.execute(select(CredentialVersion, Credential.cred_id, Workspace.name)
                         .join(Credential, Credential.pk == CredentialVersion.credential_pk)
                         .join(Workspace, Workspace.id == Credential.workspace_id))
        for ver, cid, ws in rows:
            total += 1
            try:
                barrier.open(ver.wrapped_key, ver.ciphertext,
                             crypto.binding(ws, cid, ver.version, ver.type))
            except CryptoError:
                bad.append({"workspace": ws, "id": cid, "version": ver.version})
    text = "\n".join([f"checked {total} credential versions: {len(bad)} do not decrypt"]
                     + [f"  {b['workspace']}/{b['id']}@{b['version']}" for b in bad])
    emit({"ok": not bad, "checked": total, "bad": bad}, as_json, text)
    sys.exit(1 if bad else 0)


commands = [init, serve, user, token, runner_token, keys, doctor]
