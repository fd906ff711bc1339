"""The job functions: pipeline-source syncs, the periodic tick, scheduled connectivity and
expiry checks, and webhook deliveries.  Each runs as ``fn(vault, **arguments)`` on a worker
(PostgreSQL) or in a thread (SQLite); see ``jobqueue``."""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ForeignKey, String, select
from sqlalchemy.orm import Mapped, mapped_column

from . import audit, checking, checks, retention, sources, status, webhooks
from .audit import SYSTEM, Actor
from .db import Base, aware, utcnow
from .errors import WorkbenchError
from .jobqueue import SOURCE_LOCK, SYNC, for_vault, task
from .models import Credential, Workspace
from .references import TS, PipelineSource

CHECK_EVERY = 6 * 3600  # seconds between scheduled checks of a credential, unless its type says
CHECK_EVERY_TYPE: dict[str, int] = {}  # credential type → seconds


class CheckSchedule(Base):
    """When a credential was last checked by the scheduler, and what was last notified (so a
    failure or an expiry is announced once, not at every check)."""

    __tablename__ = "check_schedule"
    credential_pk: Mapped[int] = mapped_column(
        ForeignKey("credentials.pk", ondelete="CASCADE"), primary_key=True)
    checked_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    failed: Mapped[bool] = mapped_column(default=False)  # check.failed sent, not yet passing
    expiry: Mapped[str] = mapped_column(String(20), default="")  # ExpiresSoon | Expired sent


# ---- pipeline sources -----------------------------------------------------------------------

@task
def sync_source(vault, source_id: int, actor: dict | None = None) -> None:
    """Sync one source (its result is kept on the source and in the audit log)."""
    try:
        sources.sync_source(vault.factory, vault, Actor(**actor) if actor else SYSTEM,
                            source_id)
    except WorkbenchError:
        pass  # already kept on the source (its error) and in the audit log


# ---- the periodic tick ----------------------------------------------------------------------

def _due_sources(s, now: datetime) -> list[int]:
    rows = s.execute(select(PipelineSource.id, PipelineSource.sync_interval,
                            PipelineSource.synced_at)
                     .where(PipelineSource.sync_interval.is_not(None)))
    return [sid for sid, every, at in rows
            if at is None or aware(at) + timedelta(seconds=every) <= now]


def _due_checks(s, now: datetime) -> list[int]:
    last = dict(s.execute(select(CheckSchedule.credential_pk, CheckSchedule.checked_at)).all())
    return [pk for pk, ctype in s.execute(select(Credential.pk, Credential.type))
            if pk not in last or aware(last[pk]) + timedelta(
                seconds=CHECK_EVERY_TYPE.get(ctype, CHECK_EVERY)) <= now]


@task
def tick(vault) -> dict:
    """Queue what is due: source re-syncs (per source interval), credential checks (per
    type interval) and webhook deliveries waiting for a retry; prune old run history."""
    now, q = utcnow(), for_vault(vault)
    with vault.factory() as s:
        syncs, creds, deliveries = _due_sources(s, now), _due_checks(s, now), webhooks.due(s)
    pruned = {}
    if vault.settings.run_retention_days:
        with vault.factory.begin() as s:
            pruned = retention.prune(s, SYSTEM, vault.settings.run_retention_days, now)
    for sid in syncs:
        key = f"{SOURCE_LOCK}{sid}"
        q.defer(SYNC, lock=key, queueing_lock=key, source_id=sid)
    for pk in creds:
        q.defer("check_credential", queueing_lock=f"check:{pk}", credential_pk=pk)
    for did in deliveries:
        q.defer("deliver_webhook", queueing_lock=f"delivery:{did}", delivery_id=did)
    return {"syncs": len(syncs), "checks": len(creds), "deliveries": len(deliveries),
            "pruned_runs": pruned.get("runs", 0) + pruned.get("server_runs", 0)}


# ---- scheduled checks -----------------------------------------------------------------------

def _conds(c: Credential) -> dict[str, dict]:
    return {d["type"]: d for d in c.conditions or []}


def _events(row: CheckSchedule, conds: dict[str, dict]) -> list[tuple[str, dict]]:
    """What became worse since the last notice: a failed connectivity test, a credential
    expiring or expired; ``row`` keeps what was announced."""
    out = []
    reach, exp = conds.get("Reachable"), conds.get("Expiring")
    if reach and reach["status"] in ("True", "False"):
        if reach["status"] == "False" and not row.failed:
            out.append(("check.failed", {"reason": reach["reason"],
                                         "message": reach["message"]}))
        row.failed = reach["status"] == "False"
    reason = exp["reason"] if exp and exp["status"] == "True" else ""
    if reason and reason != row.expiry:
        name = "credential.expired" if reason == "Expired" else "credential.expiring"
        out.append((name, {"reason": reason, "message": exp["message"]}))
    row.expiry = reason
    return out


@task
def check_credential(vault, credential_pk: int) -> list[str]:
    """Re-check one credential: its connectivity test if its type has one, its expiry
    always; notify what became worse.  Returns the events sent."""
    with vault.factory() as s:
        c = s.get(Credential, credential_pk)
        if c is None:
            return []
        ws = s.scalar(select(Workspace.name).where(Workspace.id == c.workspace_id))
        cred_id, type_name, version = c.cred_id, c.type, c.current_version
    if type_name in checks.CHECKS:
        # outside any transaction: a slow target never holds the database's write lock
        try:
            checking.run(vault, SYSTEM, ws, cred_id, version)
        except WorkbenchError:
            return []  # deleted, or does not decrypt: the next tick tries again
    with audit.unit(vault.factory) as s:
        c = s.get(Credential, credential_pk)
        if c is None:
            return []
        if type_name not in checks.CHECKS:
            status.recheck(s, vault.barrier, SYSTEM, ws, c)
        row = s.get(CheckSchedule, c.pk) or CheckSchedule(credential_pk=c.pk, failed=False,
                                                          expiry="")
        sent = []
        for event, details in _events(row, _conds(c)):
            webhooks.emit(s, event, workspace=ws, target=c.cred_id, details=details)
            sent.append(event)
        row.checked_at = utcnow()
        s.add(row)
        return sent


# ---- webhooks -------------------------------------------------------------------------------

@task
def deliver_webhook(vault, delivery_id: int) -> None:
    """One delivery attempt; a failed one is queued again after its back-off."""
    wait = webhooks.deliver(vault, delivery_id)
    if wait is not None:
        for_vault(vault).defer("deliver_webhook", delay=wait, delivery_id=delivery_id)
