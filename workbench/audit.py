"""The append-only audit log: who did what to which credential, when, from where — never a value."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Iterator

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session, sessionmaker

from . import statements
from .errors import WorkbenchError
from .db import iso, utcnow
from .models import AuditEvent
from .statements import Prepared, Raw

if TYPE_CHECKING:
    from .vault import Vault


@dataclass(frozen=True)
class Actor:
    """Who is acting: a user, a token or the CLI, and from where."""

    name: str
    role: str = "viewer"  # admin | editor | viewer | auditor | none | runner
    source: str = ""  # remote address, or "cli"
    workspace: str | None = None  # runner tokens are scoped to one workspace
    kind: str = "user"  # user | token | runner | system | sso (an SSO provider)
    allow: tuple[str, ...] = ()  # runner tokens: credential IDs resolvable ad hoc ("*": any)
    # users: (scope, role) grants, loaded once per request; None: not loaded (access loads them)
    grants: tuple[tuple[str, str], ...] | None = None

    @property
    def label(self) -> str:
        return self.name if self.kind == "user" else f"{self.kind}:{self.name}"


SYSTEM = Actor("system", role="admin", source="cli", kind="system")


def record(s: Session, actor: Actor, action: str, *, outcome: str = "ok", workspace: str = "",
           target: str = "", details: dict[str, Any] | None = None) -> AuditEvent:
    """Append one event.  ``details`` must hold metadata only (IDs, versions, field names)."""
    ev = AuditEvent(actor=actor.label, action=action, outcome=outcome, workspace=workspace,
                    target=target, source=actor.source, details=details or {})
    s.add(ev)
    return ev


_APPEND = Prepared(insert(AuditEvent.__table__).values(
    {c.name: bindparam(c.name) for c in AuditEvent.__table__.c if c.name != "id"}))


def append(raw: Raw, actor: Actor, action: str, events: list[tuple[str, dict[str, Any]]], *,
           workspace: str = "", outcome: str = "ok") -> None:
    """``record`` for the hot path: one event per (target, details), in one statement."""
    raw.many(*appending(actor, action, events, workspace=workspace, outcome=outcome))


def appending(actor: Actor, action: str, events: list[tuple[str, dict[str, Any]]], *,
              workspace: str = "", outcome: str = "ok") -> tuple[Prepared, list[dict]]:
    """The statement and rows ``append`` writes (for ``Raw.together``)."""
    now = utcnow()
    return _APPEND, [{"at": now, "actor": actor.label, "action": action, "outcome": outcome,
                      "workspace": workspace, "target": target, "source": actor.source,
                      "details": details} for target, details in events]


def query(s: Session, *, workspace: str | None = None, target: str | None = None,
          actor: str | None = None, action: str | None = None, outcome: str | None = None,
          since: datetime | None = None, limit: int = 100, offset: int = 0,
          workspaces: set[str] | None = None) -> list[AuditEvent]:
    """Events, newest first; ``workspaces``: only those of these scopes (None: all)."""
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc())
    if workspaces is not None:
        stmt = stmt.where(AuditEvent.workspace.in_(sorted(workspaces)))
    for column, value in ((AuditEvent.workspace, workspace), (AuditEvent.target, target),
                          (AuditEvent.actor, actor), (AuditEvent.action, action),
                          (AuditEvent.outcome, outcome)):
        if value:
            stmt = stmt.where(column == value)
    if since:
        stmt = stmt.where(AuditEvent.at >= since)
    return list(s.scalars(stmt.limit(min(limit, 1000)).offset(offset)))


def actions(s: Session) -> list[str]:
    """Every action the log holds, for a filter to choose from."""
    return list(s.scalars(select(AuditEvent.action).distinct().order_by(AuditEvent.action)))


def to_dict(ev: AuditEvent) -> dict:
    return {"id": ev.id, "at": iso(ev.at), "actor": ev.actor, "action": ev.action,
            "outcome": ev.outcome, "workspace": ev.workspace, "target": ev.target,
            "source": ev.source, "details": ev.details}


def refused(err, actor: Actor, action: str, *, workspace: str = "", target: str = "",
            details: dict[str, Any] | None = None, outcome: str = "denied"):
    """Attach an audit event to an error; ``unit`` records it after the rollback."""
    err.audit_event = dict(actor=actor, action=action, outcome=outcome, workspace=workspace,
                           target=target[:200], details=details or {})
    return err


@contextmanager
def unit(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction.  If it fails with an error that carries an audit event (a refused
    attempt), the event is recorded in a transaction of its own, so refusals are never lost."""
    try:
        with factory.begin() as s:
            yield s
    except WorkbenchError as e:
        _record_refusal(factory, e)
        raise


@contextmanager
def hot_unit(vault: Vault) -> Iterator[Raw]:
    """``unit`` for the hot path: an autocommit driver connection (``statements``)."""
    try:
        with statements.connection(vault.hot_pool) as raw:
            yield raw
    except WorkbenchError as e:
        _record_refusal(vault.factory, e)
        raise


# Registry: called with (session, event) for every refused attempt, in the transaction that
# records it (webhooks subscribe to refusals by a release rule).
REFUSAL_LISTENERS: list[Callable[[Session, dict], None]] = []


def _record_refusal(factory: sessionmaker[Session], err: WorkbenchError) -> None:
    ev = getattr(err, "audit_event", None)
    if ev:
        with factory.begin() as s:
            actor, action = ev.pop("actor"), ev.pop("action")
            record(s, actor, action, **ev)
            for listener in REFUSAL_LISTENERS:
                listener(s, {"action": action, **ev})
