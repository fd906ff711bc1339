"""How long run history is kept: finished run records (steps, logs, credential uses) and
server-opened runs (their hashed run tokens, grants and step releases) older than the
retention are deleted.  The audit log is never pruned here: it is the lasting record."""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from . import audit
from .accounts import require
from .audit import Actor
from .config import MAX_RETENTION_DAYS as MAX_DAYS
from .db import iso, utcnow
from .errors import ValidationError
from .pipeline.records import Run
from .serverruns import ServerRun

def _cutoff(days: int, now: datetime | None) -> datetime:
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_DAYS:
        raise ValidationError(f"older-than must be 1 to {MAX_DAYS} days", field="older_than")
    return (now or utcnow()) - timedelta(days=days)


def _old_runs(cutoff: datetime):
    # a run still going (no finish time) is old only by its start: a runner killed mid-run
    # never finishes it, and its record must not be kept for ever either
    return func.coalesce(Run.finished_at, Run.started_at) < cutoff  # as ix_runs_age


def _old_server_runs(cutoff: datetime):
    # closed, or past its expiry (its token stopped working then)
    return func.coalesce(ServerRun.closed_at, ServerRun.expires_at) < cutoff  # ix_server_runs_age


def count_old(s: Session, days: int, now: datetime | None = None) -> dict[str, int]:
    """What a prune with this retention would delete (for ``--dry-run``)."""
    cutoff = _cutoff(days, now)
    return {"runs": s.scalar(select(func.count()).select_from(Run).where(_old_runs(cutoff))),
            "server_runs": s.scalar(select(func.count()).select_from(ServerRun)
                                    .where(_old_server_runs(cutoff)))}


def prune(s: Session, actor: Actor, days: int, now: datetime | None = None) -> dict:
    """Delete run history older than ``days`` (instance admin); audited when it deletes any."""
    require(actor, "admin", "runs.prune")
    cutoff = _cutoff(days, now)
    # child rows go by ON DELETE CASCADE on PostgreSQL and by the same foreign keys on SQLite
    # (the engine turns foreign_keys on), so a bulk DELETE leaves nothing behind
    runs = s.execute(delete(Run).where(_old_runs(cutoff))).rowcount or 0
    server_runs = s.execute(delete(ServerRun).where(_old_server_runs(cutoff))).rowcount or 0
    out = {"runs": runs, "server_runs": server_runs, "older_than": iso(cutoff)}
    if runs or server_runs:
        audit.record(s, actor, "runs.prune", details=out)
    return out
