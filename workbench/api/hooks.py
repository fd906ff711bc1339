"""Push hooks of pipeline sources, their schedule, and the webhooks notified of events."""
from __future__ import annotations

from flask import jsonify, request, url_for
from sqlalchemy import select

from .. import access, audit, pushhook, webhooks
from ..accounts import require
from ..audit import unit
from ..errors import ValidationError
from ..sources import get_source
from . import PUBLIC_ENDPOINTS, actor, api, body, vault, workspace

PUBLIC_ENDPOINTS.add("api.source_hook")  # it proves itself with the source's hook secret
MAX_INTERVAL = 7 * 86400


@api.post("/pipeline-sources/<int:source_id>/hook")
def source_hook(source_id: int):
    """A git push: start syncing the source (GitHub, GitLab or Gitea webhook signature)."""
    out = pushhook.receive(vault(), source_id, request.headers, request.get_data(),
                           request.remote_addr or "")
    return jsonify(out), 202


@api.post("/pipeline-sources/<int:source_id>/hook-secret")
def source_hook_secret(source_id: int):
    """Create or replace the source's push-hook secret; shown once, with the hook's URL."""
    with unit(vault().factory) as s:
        src = get_source(s, workspace(), source_id)
        secret = pushhook.new_secret(s, vault().barrier, actor(), src)
    return jsonify({"source": source_id, "secret": secret, "content_type": "application/json",
                    "url": url_for("api.source_hook", source_id=source_id, _external=True)})


@api.patch("/pipeline-sources/<int:source_id>")
def schedule_source(source_id: int):
    """Set how often the source is re-synced (``sync_interval`` seconds, null: on demand)."""
    data = body()
    if set(data) != {"sync_interval"}:
        raise ValidationError("only sync_interval can change", field="sync_interval")
    every = data["sync_interval"]
    if every is not None and (not isinstance(every, int) or isinstance(every, bool)
                              or not 60 <= every <= MAX_INTERVAL):
        raise ValidationError(f"sync_interval is null or 60 to {MAX_INTERVAL} seconds",
                              field="sync_interval")
    with unit(vault().factory) as s:
        src = get_source(s, workspace(), source_id)
        access.require_on(s, actor(), "editor", "source.schedule", workspace=src.workspace,
                          target=src.name)
        src.sync_interval = every
        audit.record(s, actor(), "source.schedule", workspace=src.workspace, target=src.name,
                     details={"sync_interval": every})
    return jsonify({"source": source_id, "sync_interval": every})


@api.get("/webhooks")
def list_webhooks():
    """Webhooks notified of events (admins)."""
    require(actor(), "admin")
    with vault().factory() as s:
        return jsonify({"items": [webhooks.hook_dict(h)
                                  for h in s.scalars(select(webhooks.Webhook))]})


@api.post("/webhooks")
def add_webhook():
    """Register a webhook (url, events, workspace); its signing secret is shown once."""
    data = body()
    with unit(vault().factory) as s:
        hook, secret = webhooks.add_webhook(s, vault().barrier, actor(), data.get("url"),
                                            data.get("events"), data.get("workspace"))
        return jsonify({**webhooks.hook_dict(hook), "secret": secret}), 201


@api.delete("/webhooks/<int:hook_id>")
def remove_webhook(hook_id: int):
    """Remove a webhook and its delivery log."""
    with unit(vault().factory) as s:
        webhooks.remove_webhook(s, actor(), hook_id)
    return jsonify({"removed": hook_id})


@api.get("/webhooks/deliveries")
def list_deliveries():
    """The delivery log, newest first (admins)."""
    require(actor(), "admin")
    D = webhooks.WebhookDelivery
    with vault().factory() as s:
        return jsonify({"items": [webhooks.delivery_dict(d) for d in s.scalars(
            select(D).order_by(D.id.desc()).limit(200))]})
