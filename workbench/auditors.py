"""Who may read the audit log: one rule for the API, the web page and its link.

The log holds sign-in source addresses, token names and every refused attempt, so it is for
instance admins and auditors (an auditor otherwise sees what a viewer sees), and, for the rows
of one subtree of scopes, for the admins and auditors of that scope."""
from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from . import access, audit, scopes
from .audit import Actor
from .errors import PermissionDenied

READERS = frozenset({"admin", "auditor"})


def readable(s: Session, actor: Actor) -> set[str] | None:
    """The scopes whose audit rows ``actor`` may read: None for every row (instance admins
    and auditors), else the scopes at or below its admin and auditor grants (maybe none)."""
    if actor.kind == "runner" or actor.role == "runner":
        return set()
    if actor.role in READERS:
        return None
    out: set[str] = set()
    for scope, role in access.grants_of(s, actor):
        if role in READERS and scope not in out:
            out.update(scopes.descendants(s, scope))
    return out


def may_read(actor: Actor, s: Session | None = None) -> bool:
    """Whether ``actor`` may read the audit log, or (with a session) part of it."""
    if actor.kind == "runner":
        return False
    if actor.role in READERS:
        return True
    return s is not None and any(role in READERS for _, role in access.grants_of(s, actor))


def require_reader(factory: sessionmaker[Session], actor: Actor) -> set[str] | None:
    """The scopes ``actor`` may read the audit rows of (None: all); refused, and the refusal
    audited, if none."""
    with audit.unit(factory) as s:
        seen = readable(s, actor)
        if seen is not None and not seen:
            raise audit.refused(PermissionDenied("reading the audit log needs the admin or "
                                                 "auditor role (on the instance or a "
                                                 "workspace)"), actor, "audit.read")
    return seen
