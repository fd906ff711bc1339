"""Operator commands: init, serve, users, tokens, keys, doctor."""
from __future__ import annotations

import os
import sys

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from .. import accounts, audit, crypto, idtokens, keyring, passwords, scopes
from ..audit import unit
from ..config import Settings
from ..errors import ConfigError, CryptoError
from ..models import Credential, CredentialVersion, User, Workspace
from ..vault import Vault, require_existing
from . import cli_actor, emit, json_option, vault


@click.command("init")
@click.option("--admin", "admin_name", default="admin", show_default=True)
@click.option("--pipelines", "pipelines_dir", default=None,
              type=click.Path(exists=True, file_okay=False),
              help="index DIR/pipelines/*.yaml as the local pipeline source 'local'")
@json_option
def init(admin_name: str, pipelines_dir: str | None, as_json: bool):
    """Create the instance folder, database, master key and a first admin (idempotent)."""
    settings = Settings.from_env()
    v = Vault(settings).open()
    out, lines = {"admin": None}, []
    with unit(v.factory) as s:
        scopes.ensure_default(s)
        if s.scalar(select(User.id).limit(1)) is None:
            password = passwords.generate()
            accounts.create_user(s, cli_actor(), admin_name, password, "admin")
            out["admin"] = {"username": admin_name, "one_time_password": password}
            lines.append(f"Created admin user {admin_name!r}. One-time password (shown once; "
                         f"the first sign-in asks for a new one):\n\n    {password}\n")
    out.update(instance=str(settings.instance),
               database=v.engine.url.render_as_string(hide_password=True),
               master_key="WORKBENCH_MASTER_KEY" if settings.master_key else str(settings.key_path))
    lines += [f"Instance: {out['instance']}", f"Database: {out['database']}",
              f"Master key: {out['master_key']}"]
    if pipelines_dir:
        from .pipelines import index_folder
        out["pipelines"] = index_folder(v, pipelines_dir)["pipelines"]
        lines.append(f"Pipelines: {out['pipelines']} indexed from {pipelines_dir}/pipelines "
                     "(source 'local')")
    emit(out, as_json, "\n".join(lines))


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
            # no control socket: every gunicorn on a host would share ~/.gunicorn/gunicorn.ctl
            for k, val in {"bind": f"{host}:{port}", "workers": workers, "threads": threads,
                           "accesslog": "-", "worker_class": "gthread",
                           "control_socket_disable": True}.items():
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
    require_existing(settings)  # `workbench init` (./scripts/serve runs it) creates the vault
    # fail here, before forking, on a bad key or database
    app = create_app(settings, vault=Vault(settings).open(create=False))
    # The start-up checks left pooled connections behind; forked workers must not share them
    # (two processes on one PostgreSQL socket or SQLite handle answer 500s at random).
    app.extensions["workbench"].close()
    click.echo(f"Workbench on http://{host}:{port}/")
    run_gunicorn(lambda: _with_jobs(app), host=host, port=port, workers=workers,
                 threads=threads)


def _with_jobs(app):
    """In each server worker: on SQLite the periodic jobs tick in one of them (PostgreSQL
    has ``workbench worker`` processes for that)."""
    from .. import jobqueue
    q = jobqueue.for_vault(app.extensions["workbench"])
    if isinstance(q, jobqueue.InlineQueue):
        q.start()
    return app


@click.group("user")
def user():
    """Manage users."""


@user.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(accounts.INSTANCE_ROLES), default="viewer",
              show_default=True, help="on the instance; none: only what workspace roles give")
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
@click.option("--allow", "allow", multiple=True, metavar="ID",
              help="A credential ID this token may resolve ad hoc (exec, unindexed pipelines); "
                   "repeatable.  Without it the token resolves only in runs of indexed "
                   "pipelines.")
@json_option
@with_appcontext
def runner_token_create(name: str, workspace: str, allow: tuple[str, ...], as_json: bool):
    """Create a runner token (printed once)."""
    _issue("runner", name, as_json, workspace=workspace, allow=list(allow) or None)


@click.group("keys")
def keys():
    """Master key management."""


@keys.command("rotate")
@click.option("--batch", default=5000, show_default=True)
@click.option("--prepare", is_flag=True,
              help="only write the new key (master.key.next), to copy to other hosts first")
@json_option
def keys_rotate(batch: int, prepare: bool, as_json: bool):
    """Re-wrap every data key under a new master key while servers run; safe to interrupt
    and re-run."""
    settings = Settings.from_env()
    require_existing(settings)
    v = Vault(settings)
    v.migrate()
    if prepare:
        path = keyring.prepare(settings, v.factory)
        emit({"prepared": str(path)}, as_json,
             f"New key written to {path}. Copy it next to the key file of every host "
             "that serves this vault, then run `workbench keys rotate`.")
        return
    from .progress import rotation, watching
    with watching(rotation(v.engine)):  # a progress line every 2 s on stderr
        report = keyring.rotate(settings, v.factory, batch=batch)
    with unit(v.factory) as s:
        audit.record(s, cli_actor(), "keys.rotate",
                     details={"term": report.term, "rewrapped": report.rewrapped})
        # the step identity tokens' signing key rotates with the master key (idtokens)
        idtokens.rotate(s, keyring.load_barrier(settings, v.factory, create=False),
                        cli_actor())
    lines = [f"{'resumed; ' if report.resumed else ''}re-wrapped {report.rewrapped} data keys "
             f"under key term {report.term}; key file {settings.key_path} replaced",
             f"Back up the new key now ({settings.key_path}): without it the vault cannot be "
             "opened."]
    lines += [f"The old key (term {term}) is kept in {path}. No row uses term {term} any "
              "more: it is safe to delete once no backup of the database from before this "
              "rotation needs it (`workbench keys status` confirms)."
              for term, path in sorted(report.kept.items())]
    emit({"term": report.term, "rewrapped": report.rewrapped, "resumed": report.resumed,
          "key_file": str(settings.key_path),
          "kept": {str(t): str(p) for t, p in report.kept.items()}}, as_json, "\n".join(lines))


@keys.command("status")
@json_option
def keys_status(as_json: bool):
    """Each key file, its key term and how many credential versions need it."""
    settings = Settings.from_env()
    require_existing(settings)
    v = Vault(settings)
    v.migrate()
    files = keyring.usage(settings, v.factory)
    emit(files, as_json, "\n".join(_key_line(f) for f in files) or "no key file")


def _key_line(f: dict) -> str:
    if f["term"] is None:
        return f"{f['file']}: no key term of this vault; no row needs it (safe to delete)"
    return f"{f['file']}: key term {f['term']}, {f['versions']} credential versions need it"


@click.command("doctor")
@json_option
def doctor(as_json: bool):
    """Check the master key and that every stored credential version decrypts."""
    settings = Settings.from_env()
    require_existing(settings)
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
    files = [] if settings.master_key else keyring.usage(settings, v.factory)
    text = "\n".join([f"checked {total} credential versions: {len(bad)} do not decrypt"]
                     + [f"  {b['workspace']}/{b['id']}@{b['version']}" for b in bad]
                     + [f"key file {_key_line(f)}" for f in files])
    emit({"ok": not bad, "checked": total, "bad": bad, "key_files": files}, as_json, text)
    sys.exit(1 if bad else 0)


commands = [init, serve, user, token, runner_token, keys, doctor]
