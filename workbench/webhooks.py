"""Outgoing notifications: webhooks with an HMAC-signed body, retried with back-off, and the
delivery log.  ``emit`` writes one delivery row per matching webhook in the caller's
transaction (so an event is never announced for work that rolled back); the job engine then
delivers it (``deliver``), and the periodic tick picks up whatever was not delivered."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import datetime, timedelta
from typing import Any

import requests
from sqlalchemy import JSON, ForeignKey, Integer, String, Text, event, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from . import audit, sealed
from .accounts import require
from .audit import Actor
from .db import Base, iso, utcnow
from .errors import NotFound, ValidationError
from .references import TS

log = logging.getLogger(__name__)
EVENTS = ("credential.expiring", "credential.expired", "check.failed",
          "credential.delete_forced", "run.refused")
ATTEMPTS = 8  # then the delivery is given up (status "failed")
BACKOFF = 2.0  # seconds before the second attempt; doubled each time (2, 4, 8 … 128 s)
LEASE = timedelta(seconds=60)  # a claimed delivery is retried by others after this
TIMEOUT = 10.0


class Webhook(Base):
    """Where events are posted; its signing secret is a sealed value (``webhook:<id>``)."""

    __tablename__ = "webhooks"
    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    workspace: Mapped[str | None] = mapped_column(String(63), nullable=True)  # None: all
    created_by: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class WebhookDelivery(Base):
    """One event for one webhook: the delivery log (pending → delivered | failed)."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[int] = mapped_column(primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"),
                                            index=True)
    event: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(12), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    last_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)


def _secret_name(hook_id: int) -> str:
    return f"webhook:{hook_id}"


def add_webhook(s: Session, barrier, actor: Actor, url: str, events: list[str] | None = None,
                workspace: str | None = None) -> tuple[Webhook, str]:
    """Register a webhook (admins); returns it and its signing secret, shown once."""
    require(actor, "admin", "webhook.add", target=str(url)[:100])
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 2000:
        raise ValidationError("url must be an http:// or https:// URL", field="url")
    events = list(events or EVENTS)
    unknown = sorted(set(events) - set(EVENTS))
    if unknown or not all(isinstance(e, str) for e in events):
        raise ValidationError(f"unknown event(s) {unknown}; events are {', '.join(EVENTS)}",
                              field="events")
    hook = Webhook(url=url, events=events, workspace=workspace, created_by=actor.label)
    s.add(hook)
    s.flush()
    secret = sealed.put(s, barrier, _secret_name(hook.id))
    audit.record(s, actor, "webhook.add", target=str(hook.id),
                 details={"url": url, "events": events, "workspace": workspace})
    return hook, secret


def remove_webhook(s: Session, actor: Actor, hook_id: int) -> None:
    require(actor, "admin", "webhook.remove", target=str(hook_id))
    hook = s.get(Webhook, hook_id)
    if hook is None:
        raise NotFound(f"no webhook {hook_id}")
    s.execute(WebhookDelivery.__table__.delete().where(WebhookDelivery.webhook_id == hook_id))
    s.delete(hook)
    sealed.drop(s, _secret_name(hook_id))
    audit.record(s, actor, "webhook.remove", target=str(hook_id), details={"url": hook.url})


def hook_dict(h: Webhook) -> dict:
    return {"id": h.id, "url": h.url, "events": h.events, "workspace": h.workspace,
            "created_by": h.created_by, "created_at": iso(h.created_at)}


def delivery_dict(d: WebhookDelivery) -> dict:
    return {"id": d.id, "webhook": d.webhook_id, "event": d.event, "status": d.status,
            "attempts": d.attempts, "last_code": d.last_code, "last_error": d.last_error or None,
            "created_at": iso(d.created_at), "delivered_at": iso(d.delivered_at),
            "payload": d.payload}


def emit(s: Session, event: str, *, workspace: str = "", target: str = "",
         details: dict[str, Any] | None = None) -> list[int]:
    """Queue ``event`` for every webhook that takes it (metadata only, never a value); the
    deliveries go out once the caller's transaction commits."""
    assert event in EVENTS, event
    ids = []
    for hook in s.scalars(select(Webhook)):
        if event in hook.events and hook.workspace in (None, workspace):
            d = WebhookDelivery(webhook_id=hook.id, event=event, payload={
                "event": event, "workspace": workspace, "target": target,
                "details": details or {}, "at": iso(utcnow())})
            s.add(d)
            s.flush()
            ids.append(d.id)
    if ids:
        s.info.setdefault("webhook_deliveries", []).extend(ids)
    return ids


def run_refused(s: Session, *, workspace: str, pipeline: str, step: str, reason: str) -> None:
    """A release rule refused a run's step a credential (``reason`` names the rule)."""
    emit(s, "run.refused", workspace=workspace, target=pipeline,
         details={"step": step, "reason": reason})


def _on_refusal(s: Session, ev: dict) -> None:
    """Refusals of a run-token resolve by a release rule become ``run.refused`` events."""
    d = ev.get("details") or {}
    if ev["action"] == "credential.resolve" and d.get("run") and d.get("rule") not in (
            None, "run-closed", "run-expired", "workspace"):
        run_refused(s, workspace=ev.get("workspace", ""), pipeline=d.get("pipeline", ""),
                    step=d.get("step", ""), reason=f"{d['rule']}: {ev.get('target', '')}")


audit.REFUSAL_LISTENERS.append(_on_refusal)


def signature(secret: str, body: bytes) -> str:
    """The ``X-Workbench-Signature-256`` header: HMAC-SHA256 of the exact body sent."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _claim(factory, delivery_id: int) -> WebhookDelivery | None:
    """Take the delivery for one attempt (others skip it until the lease runs out)."""
    now = utcnow()
    with factory.begin() as s:
        taken = s.execute(update(WebhookDelivery).where(
            WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending",
            WebhookDelivery.next_at <= now).values(next_at=now + LEASE))
        if taken.rowcount != 1:
            return None
        d = s.get(WebhookDelivery, delivery_id)
        s.expunge(d)
        return d


def deliver(vault, delivery_id: int) -> float | None:
    """One attempt; returns the seconds until the next one, or None when there is none."""
    d = _claim(vault.factory, delivery_id)
    if d is None:
        return None
    with vault.factory() as s:
        hook = s.get(Webhook, d.webhook_id)
        secret = sealed.read(s, vault.barrier, _secret_name(d.webhook_id)) if hook else None
    if hook is None or secret is None:
        return None  # removed meanwhile (its deliveries went with it)
    body = json.dumps({"id": d.id, **d.payload}, sort_keys=True).encode()
    code, error = None, ""
    try:
        resp = requests.post(hook.url, data=body, timeout=TIMEOUT, allow_redirects=False,
                             headers={"Content-Type": "application/json",
                                      "X-Workbench-Event": d.event,
                                      "X-Workbench-Delivery": str(d.id),
                                      "X-Workbench-Signature-256": signature(secret, body)})
        code = resp.status_code
        error = "" if 200 <= code < 300 else f"HTTP {code}"
    except requests.RequestException as e:
        error = type(e).__name__  # the class only: a message may quote the URL's query
    attempts = d.attempts + 1
    wait = BACKOFF * 2 ** (attempts - 1)
    with vault.factory.begin() as s:
        values: dict[str, Any] = {"attempts": attempts, "last_code": code, "last_error": error}
        if not error:
            values.update(status="delivered", delivered_at=utcnow())
        elif attempts >= ATTEMPTS:
            values.update(status="failed")
        else:
            values.update(next_at=utcnow() + timedelta(seconds=wait))
        s.execute(update(WebhookDelivery).where(WebhookDelivery.id == d.id).values(**values))
    return wait if error and attempts < ATTEMPTS else None


def due(s: Session, limit: int = 500) -> list[int]:
    """Deliveries whose next attempt is due (the tick's sweep)."""
    return list(s.scalars(select(WebhookDelivery.id).where(
        WebhookDelivery.status == "pending", WebhookDelivery.next_at <= utcnow())
        .order_by(WebhookDelivery.id).limit(limit)))


@event.listens_for(Session, "after_commit")
def _send(s: Session) -> None:
    """Deliveries emitted in a committed transaction go to the job queue at once (if this
    process has one; otherwise the next tick sends them)."""
    ids = s.info.pop("webhook_deliveries", None)
    if not ids:
        return
    from . import jobqueue
    q = jobqueue.started(s.info.get("vault"))
    for did in ids if q is not None else ():
        try:
            q.defer("deliver_webhook", queueing_lock=f"delivery:{did}", delivery_id=did)
        except Exception as e:  # noqa: BLE001 - the tick sends it; the commit stands
            log.error("queueing webhook delivery %s failed: %s", did, type(e).__name__)


@event.listens_for(Session, "after_rollback")
def _forget(s: Session) -> None:
    s.info.pop("webhook_deliveries", None)
