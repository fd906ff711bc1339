"""Who may read the audit log: one rule for the API, the web page and its link.

The log holds sign-in source addresses, token names and every refused attempt, so it is for
admins and for the ``auditor`` role (which otherwise sees what a viewer sees).  Per-workspace
auditors, when roles get scopes, extend ``may_read`` and nothing else."""
from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from . import audit
from .audit import Actor
from .errors import PermissionDenied

READERS = frozenset({"admin", "auditor"})


def may_read(actor: Actor) -> bool:
    """Whether ``actor`` may read the audit log (runner tokens never may)."""
    return actor.kind != "runner" and actor.role in READERS


def require_reader(factory: sessionmaker[Session], actor: Actor) -> None:
    """Refuse, and audit the refusal, unless ``actor`` may read the audit log."""
    if not may_read(actor):
        with audit.unit(factory):
            raise audit.refused(PermissionDenied("reading the audit log needs the admin or "
                                                 "auditor role"), actor, "audit.read")
