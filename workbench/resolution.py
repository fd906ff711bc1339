"""Resolving references to values: the one read path that decrypts, for runners only."""
from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from . import audit, crypto
from .accounts import is_stale
from .audit import Actor
from .credentials import decode_values
from .crypto import Barrier
from .db import utcnow
from .errors import NotFound, PermissionDenied, ValidationError
from .models import AuditEvent, Credential, CredentialVersion, Workspace
from .pipeline import names
from .pipeline.resolve import Ref, ResolvedCredential, Resolver

def parse_ref(text: str) -> Ref:
    """``id`` or ``id@N`` by the pipelines' own rules; a clear 422 when malformed."""
    ref = names.parse_ref(text)
    if ref is None:
        raise ValidationError(f"bad credential reference {str(text)[:80]!r} (ID or ID@N)",
                              field="refs")
    return ref


def resolve(s: Session, barrier: Barrier, actor: Actor, *, workspace: str,
            refs: Sequence[Ref], context: dict | None = None) -> dict[Ref, ResolvedCredential]:
    """Decrypt the referenced versions: only runner tokens (of this workspace) and the embedded
    runner may do this.  Every resolve, and every refusal, is audited."""
    ctx = {k: str(v)[:200] for k, v in (context or {}).items() if k in ("pipeline", "step", "run")}
    target = ",".join(map(str, refs))[:200]
    if actor.role != "runner" and actor.kind != "system":
        raise audit.refused(PermissionDenied("only runner tokens can resolve credential values"),
                            actor, "credential.resolve", workspace=workspace, target=target,
                            details=ctx)
    if actor.workspace is not None and actor.workspace != workspace:
        raise audit.refused(PermissionDenied(
            f"this runner token is scoped to workspace {actor.workspace!r}"),
            actor, "credential.resolve", workspace=workspace, target=target, details=ctx)
    out: dict[Ref, ResolvedCredential] = {}
    missing: list[str] = []
    used: dict[int, Any] = {}  # credential pk -> its last_used_at
    conn = s.connection()
    for ref in refs:
        row = conn.execute(_VERSION_ROW[bool(ref.version)],
                           {"workspace": workspace, "cred_id": ref.id,
                            "version": ref.version}).first()
        if row is None:
            missing.append(str(ref))
            continue
        aad = crypto.binding(workspace, row.cred_id, row.version, row.type)
        values = decode_values(barrier.open(row.wrapped_key, row.ciphertext, aad))
        out[ref] = ResolvedCredential(row.cred_id, row.version, row.type, values)
        used[row.pk] = row.last_used_at
    if missing:
        raise audit.refused(
            NotFound(f"unknown credential reference(s): {', '.join(missing)}", missing=missing),
            actor, "credential.resolve", workspace=workspace, target=",".join(missing),
            details={**ctx, "missing": missing}, outcome="failed")
    now = utcnow()
    stale = [pk for pk, last in used.items() if is_stale(last, now)]
    if stale:
        conn.execute(_TOUCH, {"pks": stale, "now": now})
    # One audit row per resolved credential, inserted in one statement (no ORM unit of work:
    # this is the hot path of every pipeline step).
    conn.execute(_AUDIT, [
        {"at": now, "actor": actor.label, "action": "credential.resolve", "outcome": "ok",
         "workspace": workspace, "target": rc.id, "source": actor.source,
         "details": {**ctx, "version": rc.version}} for rc in out.values()])
    return out


def _version_query(pinned: bool):
    """The pinned (or current) version of one credential, with what resolve needs of it."""
    c, v, w = Credential.__table__.c, CredentialVersion.__table__.c, Workspace.__table__.c
    want = bindparam("version") if pinned else c.current_version
    return (select(c.pk, c.cred_id, c.last_used_at, v.version, v.type, v.wrapped_key,
                   v.ciphertext)
            .select_from(Credential.__table__
                         .join(Workspace.__table__, w.id == c.workspace_id)
                         .join(CredentialVersion.__table__,
                               (v.credential_pk == c.pk) & (v.version == want)))
            .where(w.name == bindparam("workspace"), c.cred_id == bindparam("cred_id")))


# Built once: resolve runs for every pipeline step, and building a statement costs more than
# running it.  Keyed by "is the version pinned".
_VERSION_ROW = {False: _version_query(False), True: _version_query(True)}
_TOUCH = (update(Credential.__table__).where(Credential.__table__.c.pk.in_(bindparam("pks",
                                                                                   expanding=True)))
          .values(last_used_at=bindparam("now")))
_AUDIT = insert(AuditEvent.__table__)


class VaultResolver(Resolver):
    """The embedded runner's resolver: reads the local vault directly."""

    def __init__(self, factory: sessionmaker[Session], barrier: Barrier, workspace: str,
                 actor: Actor = audit.SYSTEM):
        self.factory, self.barrier, self.workspace, self.actor = factory, barrier, workspace, actor

    def resolve(self, refs, *, context=None):
        with audit.unit(self.factory) as s:
            return resolve(s, self.barrier, self.actor, workspace=self.workspace, refs=refs,
                           context=context)
