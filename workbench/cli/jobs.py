"""Background work: the job worker and the webhooks it notifies."""
from __future__ import annotations

import os
import socket

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from .. import jobqueue, webhooks
from ..audit import unit
from ..errors import ConfigError
from . import cli_actor, emit, json_option, vault


@click.command("worker")
@click.option("--concurrency", default=4, show_default=True, help="jobs run at once")
@click.option("--name", default=None, help="shown in the job table (default: host and pid)")
@with_appcontext
def worker(concurrency: int, name: str | None):
    """Run background jobs (syncs, scheduled checks, webhooks) until stopped (PostgreSQL)."""
    q = jobqueue.for_vault(vault())
    if not isinstance(q, jobqueue.PgQueue):
        raise ConfigError("workbench worker needs PostgreSQL; on SQLite `workbench serve` "
                          "runs the jobs itself")
    name = name or f"{socket.gethostname()}-{os.getpid()}"
    click.echo(f"worker {name}: running jobs (Ctrl-C stops after the running ones)")
    q.run_worker(concurrency=concurrency, name=name)


@click.group("webhook")
def webhook():
    """Webhooks notified of expiring credentials, failed checks, forced deletes, refused runs."""


@webhook.command("add")
@click.argument("url")
@click.option("--event", "events", multiple=True, type=click.Choice(webhooks.EVENTS),
              help="repeat; default: every event")
@click.option("--workspace", default=None, help="only this workspace's events")
@json_option
@with_appcontext
def webhook_add(url: str, events: tuple[str, ...], workspace: str | None, as_json: bool):
    """Register a webhook; prints its signing secret once."""
    with unit(vault().factory) as s:
        hook, secret = webhooks.add_webhook(s, vault().barrier, cli_actor(), url,
                                            list(events) or None, workspace)
        out = {**webhooks.hook_dict(hook), "secret": secret}
    emit(out, as_json, f"added webhook {out['id']} → {url}\nsigning secret (shown once; "
         f"bodies carry X-Workbench-Signature-256: sha256=HMAC):\n\n    {secret}\n")


@webhook.command("list")
@json_option
@with_appcontext
def webhook_list(as_json: bool):
    """Registered webhooks."""
    with vault().factory() as s:
        items = [webhooks.hook_dict(h) for h in s.scalars(select(webhooks.Webhook))]
    emit({"items": items}, as_json, "\n".join(
        f"{h['id']}  {h['url']}  {','.join(h['events'])}" for h in items) or "no webhooks")


@webhook.command("remove")
@click.argument("hook_id", type=int)
@with_appcontext
def webhook_remove(hook_id: int):
    """Remove a webhook and its delivery log."""
    with unit(vault().factory) as s:
        webhooks.remove_webhook(s, cli_actor(), hook_id)
    click.echo(f"removed webhook {hook_id}")


@webhook.command("deliveries")
@click.option("--limit", default=50, show_default=True)
@json_option
@with_appcontext
def webhook_deliveries(limit: int, as_json: bool):
    """The delivery log, newest first."""
    D = webhooks.WebhookDelivery
    with vault().factory() as s:
        items = [webhooks.delivery_dict(d) for d in
                 s.scalars(select(D).order_by(D.id.desc()).limit(limit))]
    emit({"items": items}, as_json, "\n".join(
        f"{d['id']}  webhook {d['webhook']}  {d['event']}  {d['status']}  "
        f"attempts {d['attempts']}  {d['last_error'] or ''}" for d in items) or "no deliveries")


commands = [worker, webhook]
